// libFuzzer target: arbitrary bytes from a client into smtp::ServerSession.
// The first byte picks where the input is split in two Feed() calls, so
// packet boundaries are fuzzed too. Invariants beyond "no crash, no ASan
// report": every reply line starts with a three-digit code, and there are
// never more messages than DATA/BDAT commands could have started.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "mta/smtp/server_session.h"

using peregrine::smtp::ServerSession;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  peregrine::smtp::SessionConfig config;
  config.hostname = "fuzz.test";
  config.relay_allowed = data[0] & 1;
  config.tls_available = data[0] & 2;
  config.auth_available = data[0] & 4;
  config.auth_without_tls = true;
  config.max_message_bytes = 2048;
  config.max_recipients = 5;
  ServerSession s(config);
  s.Start();
  std::string input(reinterpret_cast<const char*>(data) + 1, size - 1);
  size_t cut = input.empty() ? 0 : data[0] % (input.size() + 1);
  std::string output;
  int messages = 0;
  auto pump = [&] {
    for (int i = 0; i < 64; ++i) {
      output += s.TakeOutput();
      if (auto m = s.TakeMessage()) {
        ++messages;
        s.MessageQueued(absl::OkStatus(), "F");
        continue;
      }
      if (auto a = s.TakeAuthRequest()) {
        s.AuthResult(a->password == "ok");
        continue;
      }
      if (s.wants_tls()) {
        s.TlsStarted();
        continue;
      }
      break;
    }
  };
  s.Feed(input.substr(0, cut));
  pump();
  s.Feed(input.substr(cut));
  pump();
  size_t pos = 0;
  while (pos < output.size()) {
    size_t end = output.find("\r\n", pos);
    if (end == std::string::npos) abort();  // Every reply ends in CRLF.
    if (end - pos < 3 || !absl::ascii_isdigit(output[pos]) ||
        !absl::ascii_isdigit(output[pos + 1]) ||
        !absl::ascii_isdigit(output[pos + 2])) {
      abort();
    }
    pos = end + 2;
  }
  std::string upper = absl::AsciiStrToUpper(input);
  size_t starts = 0;
  for (const char* verb : {"DATA", "BDAT"}) {
    for (size_t p = upper.find(verb); p != std::string::npos;
         p = upper.find(verb, p + 1)) {
      ++starts;
    }
  }
  if (static_cast<size_t>(messages) > starts) abort();
  return 0;
}
