// Delivery status notifications (RFC 3464) as Peregrine writes them.
//
// Pure: a value in, the notice's bytes out (CRLF line ends), no clock and
// no I/O, so golden files pin the format. The notice is a
// multipart/report; report-type=delivery-status (RFC 6522) with three
// parts: what happened in plain words, the machine-readable
// message/delivery-status, and the returned message (its headers, or the
// whole of it with RET=FULL under a size limit).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "base/reply.h"
#include "mta/bounce/category.h"
#include "queue/types.h"

namespace peregrine::bounce {

enum class DsnAction : uint8_t { kFailed, kDelayed };

struct DsnRecipient {
  std::string address;  // Final-Recipient.
  std::string orcpt;    // ORCPT as received ("rfc822;a+2Bb@example.com").
  DsnAction action = DsnAction::kFailed;
  Reply reply;             // The remote's reply, or Peregrine's own.
  bool remote = false;     // `reply` came from `remote_mta`.
  std::string remote_mta;  // Host name of the MX tried last.
  Category category = Category::kUnknown;
  absl::Time last_attempt = absl::InfinitePast();
  absl::Time retry_until = absl::InfinitePast();  // kDelayed.
  // Plain words about how it ended ("expired after 9 attempts over 5d").
  std::string reason;
};

struct DsnInput {
  std::string reporting_mta;  // This host's name.
  std::string sender;         // The original envelope sender: To: of it.
  std::string envid;          // ENVID as received (xtext).
  queue::DsnRet ret = queue::DsnRet::kUnspecified;
  absl::Time arrival = absl::InfinitePast();
  absl::Time now;
  std::string message_id;  // "<...@host>" for the notice itself.
  std::string boundary;    // Unique per notice.
  std::string original;    // The message as queued (CRLF).
  // RET=FULL (or no RET, for failures) returns the whole message up to
  // this many bytes; longer ones, and every delay notice, return headers.
  size_t full_limit = 50000;
  std::vector<DsnRecipient> recipients;  // At least one.
};

// The notice, ready to queue from the null sender to `sender`.
std::string BuildDsn(const DsnInput& in);

// RFC 3461 §4: xtext ("a+2Bb" is "a+b"). Malformed escapes stay as they
// are.
std::string DecodeXtext(absl::string_view xtext);

// The status code a DSN gives for a reply: its enhanced code when it has
// one, else one made from the category and the reply's class.
std::string DsnStatus(const Reply& reply, Category category, DsnAction action);

// The message's header section (up to the first empty line), CRLF.
absl::string_view HeaderSection(absl::string_view message);

}  // namespace peregrine::bounce
