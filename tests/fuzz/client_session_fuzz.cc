// libFuzzer target: arbitrary server replies into smtp::ClientSession, with
// a message sent whenever it is ready. Beyond "no crash": a result always
// has one reply per recipient.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "mta/smtp/client_session.h"

using peregrine::smtp::ClientSession;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  peregrine::smtp::ClientConfig config;
  config.tls = static_cast<peregrine::smtp::TlsPolicy>(data[0] % 3);
  if (data[0] & 4) {
    config.auth_user = "u";
    config.auth_password = "p";
  }
  ClientSession s(config);
  std::string body = "Subject: f\r\n\r\n.dot\r\nend";
  peregrine::smtp::OutMessage m;
  m.sender = "a@b.test";
  m.recipients = {{"c@d.test", 0, ""}, {"e@f.test", 4, "rfc822;e@f.test"}};
  m.body = &body;
  std::string input(reinterpret_cast<const char*>(data) + 1, size - 1);
  size_t step = 1 + data[0] % 7;
  for (size_t i = 0; i < input.size(); i += step) {
    s.Feed(input.substr(i, step));
    s.TakeOutput();
    if (s.phase() == ClientSession::Phase::kTlsHandshake) s.TlsStarted();
    if (s.phase() == ClientSession::Phase::kReady) s.SendMessage(m);
    if (auto r = s.TakeResult()) {
      if (r->recipients.size() != m.recipients.size()) abort();
    }
  }
  return 0;
}
