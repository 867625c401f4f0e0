// MIME helpers shared by the mail Peregrine writes itself (HTTP injection's
// parts, TLS reports' attachments). Header-only; any thread.
#pragma once

#include <string>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace peregrine {

// `data` as a base64 body (RFC 2045 6.8): lines of 76 characters, each
// ending CRLF.
inline std::string Base64Lines(absl::string_view data) {
  std::string b64 = absl::Base64Escape(data);
  std::string out;
  out.reserve(b64.size() + b64.size() / 76 * 2 + 2);
  for (size_t i = 0; i < b64.size(); i += 76) {
    absl::StrAppend(&out, absl::string_view(b64).substr(i, 76), "\r\n");
  }
  return out;
}

}  // namespace peregrine
