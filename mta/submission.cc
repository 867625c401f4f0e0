#include "mta/submission.h"

#include "absl/random/distributions.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace peregrine {

bool HasHeaderField(absl::string_view message, absl::string_view name) {
  size_t pos = 0;
  while (pos < message.size()) {
    size_t eol = message.find('\n', pos);
    absl::string_view line = message.substr(pos, eol == absl::string_view::npos
                                                     ? absl::string_view::npos
                                                     : eol - pos);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.empty()) return false;  // The end of the header section.
    if (line[0] != ' ' && line[0] != '\t') {
      size_t colon = line.find(':');
      if (colon != absl::string_view::npos) {
        // Obsolete syntax allows spaces before the colon (RFC 5322 §4.5).
        absl::string_view field =
            absl::StripTrailingAsciiWhitespace(line.substr(0, colon));
        if (absl::EqualsIgnoreCase(field, name)) return true;
      }
    }
    if (eol == absl::string_view::npos) break;
    pos = eol + 1;
  }
  return false;
}

std::string MissingSubmissionFields(absl::string_view message,
                                    absl::string_view hostname, absl::Time now,
                                    absl::BitGenRef random) {
  std::string out;
  if (!HasHeaderField(message, "Message-ID")) {
    // Unique without coordination: the time, 64 random bits, our name.
    absl::StrAppend(&out, "Message-ID: <",
                    absl::FormatTime("%Y%m%d%H%M%S", now, absl::UTCTimeZone()),
                    ".",
                    absl::StrFormat("%016x", absl::Uniform<uint64_t>(random)),
                    "@", hostname, ">\r\n");
  }
  if (!HasHeaderField(message, "Date")) {
    absl::StrAppend(&out, "Date: ",
                    absl::FormatTime("%a, %d %b %Y %H:%M:%S +0000", now,
                                     absl::UTCTimeZone()),
                    "\r\n");
  }
  return out;
}

}  // namespace peregrine
