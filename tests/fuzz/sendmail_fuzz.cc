// sendmail's flags and message preparation (mta/sendmail.h) on any bytes:
// the first line is split into arguments, the rest is the message. Never
// crashes; a prepared message has CRLF line ends only, ends with CRLF, has
// a From, Date and Message-ID, and keeps no Bcc header under -t.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_split.h"
#include "mta/sendmail.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string in(reinterpret_cast<const char*>(data), size);
  size_t eol = in.find('\n');
  std::string first = in.substr(0, eol);
  std::string message = eol == std::string::npos ? "" : in.substr(eol + 1);
  std::vector<std::string> args = absl::StrSplit(first, ' ', absl::SkipEmpty());
  auto parsed = peregrine::ParseSendmailArgs(args);
  if (!parsed.ok()) return 0;
  auto mail = peregrine::PrepareMail(message, *parsed, "me@host.test",
                                     "host.test", absl::FromUnixSeconds(0));
  if (!mail.ok()) return 0;
  const std::string& m = mail->message;
  if (mail->recipients.empty()) abort();
  for (size_t i = 0; i < m.size(); ++i) {
    if (m[i] == '\n' && (i == 0 || m[i - 1] != '\r')) abort();
    if (m[i] == '\r' && (i + 1 >= m.size() || m[i + 1] != '\n')) abort();
  }
  if (!absl::EndsWith(m, "\r\n")) abort();
  // The header's field names, lowercase; blanks before the colon are the
  // obsolete syntax (RFC 5322 4.5.3) and name the same field.
  std::set<std::string> names;
  std::string head = m.substr(0, m.find("\r\n\r\n"));
  for (absl::string_view line : absl::StrSplit(head, "\r\n")) {
    size_t colon = line.find(':');
    if (line.empty() || line[0] == ' ' || line[0] == '\t' ||
        colon == absl::string_view::npos) {
      continue;
    }
    names.insert(absl::AsciiStrToLower(
        absl::StripTrailingAsciiWhitespace(line.substr(0, colon))));
  }
  for (const char* field : {"from", "date", "message-id"}) {
    if (names.count(field) == 0) abort();
  }
  if (parsed->extract && names.count("bcc") != 0) abort();
  return 0;
}
