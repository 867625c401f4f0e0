// Reply: an SMTP reply as a value, its three parts kept apart.
//
// The SMTP codecs (mta/smtp) produce it, the queue keeps a recipient's last
// one, and every delivery outcome carries one. It lives here, below them
// all, so that the queue needs no SMTP to hold it. Replies Peregrine makes
// up itself (a DNS failure, a connect timeout) are Replies too, with a
// proper enhanced status code (RFC 3463).
#pragma once

#include <string>

#include "absl/strings/string_view.h"

namespace peregrine {

struct Reply {
  int code = 0;          // 250, 451, ...; 0: none known.
  std::string enhanced;  // "2.1.5" when there is one (RFC 3463), else "".
  std::string text;      // Lines joined with a space.

  bool transient() const { return code < 500; }
  bool positive() const { return code >= 200 && code < 300; }
  // "451 4.7.1 greylisted": one line, as logs and the queue keep it.
  std::string ToString() const;
  // The reverse of ToString(): "451 4.7.1 text" -> {451, "4.7.1", "text"};
  // text that does not start with a three-digit code is all `text`.
  static Reply Parse(absl::string_view line);

  friend bool operator==(const Reply&, const Reply&) = default;
};

// True for "X.Y.Z" with X in 2/4/5, Y up to 3 digits, Z up to 3 digits.
bool IsEnhancedStatus(absl::string_view text);

}  // namespace peregrine
