#include <cstdlib>
#include <cstring>
#include <iostream>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "mta/advice.h"
#include "mta/blocking_smtp.h"
#include "mta/cli_commands.h"
#include "mta/config.h"

namespace peregrine {

int SendTest(const SendTestArgs& a, std::istream& in, std::ostream& out,
             std::ostream& err) {
  const char* name = "peregrine send-test";
  absl::StatusOr<Config> config =
      a.config_path.empty() ? DefaultConfig() : LoadConfigFile(a.config_path);
  if (!config.ok()) {
    err << name << ": " << config.status().message() << "\n";
    return 2;
  }
  if (a.to.find('@') == std::string::npos) {
    err << name << ": --to: \"" << a.to << "\" is not an address\n";
    return 2;
  }
  const bool local = a.server.empty();
  // Locally: submission as the user, or the relay listener (loopback is
  // trusted) without one.
  std::string server = a.server;
  if (local) {
    auto address =
        ListenerAddress(*config, a.user.empty() ? ListenerKind::kRelay
                                                : ListenerKind::kSubmission);
    if (!address.ok()) {
      err << name << ": " << address.status().message()
          << ": give --server HOST:PORT\n";
      return 2;
    }
    server = address->ToString();
  }
  size_t colon = server.rfind(':');
  std::string host = server.substr(0, colon), port = server.substr(colon + 1);
  if (absl::StartsWith(host, "[")) host = host.substr(1, host.size() - 2);
  std::string tls = a.tls;
  if (tls.empty()) {
    tls = port == "465" ? "implicit" : (a.user.empty() ? "none" : "starttls");
  }
  if (tls != "starttls" && tls != "implicit" && tls != "none") {
    err << name << ": --tls is starttls, implicit or none\n";
    return 2;
  }
  std::string password;
  if (!a.user.empty()) {
    const char* env = getenv("PEREGRINE_PASSWORD");
    if (env != nullptr) {
      password = env;
    } else if (!std::getline(in, password)) {
      err << name
          << ": --user needs a password: PEREGRINE_PASSWORD, or a "
             "line on standard input\n";
      return 2;
    }
    if (!password.empty() && password.back() == '\r') password.pop_back();
  }
  const std::string hostname = config->EffectiveHostname();
  std::string from = a.from.empty()
                         ? (a.user.find('@') != std::string::npos
                                ? a.user
                                : absl::StrCat("postmaster@", hostname))
                         : a.from;

  auto fail = [&](absl::string_view what, const std::string& reply) {
    out << "✗ " << what << ": " << reply << "\n";
    std::string advice = Advice(reply);
    if (!advice.empty()) out << "  → " << advice << "\n";
    return 1;
  };
  BlockingSmtp c;
  if (absl::Status s = c.Connect(host, port); !s.ok()) {
    return fail("connect", std::string(s.message()));
  }
  out << "✓ connected to " << server << "\n";
  std::string reply;
  if (tls == "implicit") {
    auto t = c.StartTls();
    if (!t.ok()) return fail("TLS", std::string(t.status().message()));
    out << "✓ TLS " << *t << " (implicit)\n";
  }
  int code = c.Reply(&reply);
  if (code != 220) {
    return fail("greeting", code == 0 ? "the server sent no greeting "
                                        "(plain SMTP first? see --tls)"
                                      : reply);
  }
  auto command = [&](const std::string& line) {
    if (!c.Send(line + "\r\n")) return 0;
    return c.Reply(&reply);
  };
  if (command(absl::StrCat("EHLO ", hostname)) != 250) {
    return fail("EHLO", reply);
  }
  if (tls == "starttls") {
    if (command("STARTTLS") != 220) return fail("STARTTLS", reply);
    auto t = c.StartTls();
    if (!t.ok()) return fail("TLS", std::string(t.status().message()));
    out << "✓ TLS " << *t << " (STARTTLS)\n";
    if (command(absl::StrCat("EHLO ", hostname)) != 250) {
      return fail("EHLO", reply);
    }
  }
  if (!a.user.empty()) {
    std::string plain = absl::StrCat(std::string(1, '\0'), a.user,
                                     std::string(1, '\0'), password);
    if (command(absl::StrCat("AUTH PLAIN ", absl::Base64Escape(plain))) !=
        235) {
      return fail("authentication", reply);
    }
    out << "✓ authenticated as " << a.user << "\n";
  }
  if (command(absl::StrCat("MAIL FROM:<", from, ">")) != 250) {
    return fail(absl::StrCat("sender <", from, ">"), reply);
  }
  if (command(absl::StrCat("RCPT TO:<", a.to, ">")) != 250) {
    return fail(absl::StrCat("recipient <", a.to, ">"), reply);
  }
  if (command("DATA") != 354) return fail("DATA", reply);
  absl::Time now = absl::Now();
  std::string message = absl::StrCat(
      "From: <", from, ">\r\nTo: <", a.to,
      ">\r\nSubject: Peregrine test message\r\nDate: ",
      absl::FormatTime("%a, %d %b %Y %H:%M:%S %z", now, absl::UTCTimeZone()),
      "\r\nMessage-ID: <send-test.", absl::ToUnixNanos(now), "@", hostname,
      ">\r\n\r\nThis is a test message sent by `peregrine send-test` from ",
      hostname, ".\r\n.");
  if (command(message) != 250) return fail("the message", reply);
  std::string id;
  if (size_t q = reply.find("queued as "); q != std::string::npos) {
    id = reply.substr(q + 10, 16);
  }
  out << "✓ accepted: " << reply << "\n";
  (void)command("QUIT");
  if (!local || id.size() != 16) {
    out << "  (not followed further: the server is not the local daemon)\n";
    return 0;
  }
  // Followed through the daemon's admin API until it has an outcome.
  std::string data_dir = a.data_dir.empty() ? config->data_dir : a.data_dir;
  absl::Time deadline = absl::Now() + absl::Seconds(a.timeout_s);
  std::string said;
  while (absl::Now() < deadline) {
    int status = 0;
    auto m = AdminGet(*config, data_dir,
                      absl::StrCat("/api/v1/queue/messages/", id), &status);
    if (!m.ok()) {
      out << "  cannot follow it: " << m.status().message() << "\n";
      return 1;
    }
    if (status == 200 && (*m)["recipients"].is_array() &&
        !(*m)["recipients"].empty()) {
      const nlohmann::json& r = (*m)["recipients"][0];
      std::string state = r.value("state", std::string());
      std::string last =
          r["last_reply"].is_string() ? r["last_reply"].get<std::string>() : "";
      std::string site = r.value("site", std::string());
      if (state == "delivered") {
        out << "✓ delivered" << (site.empty() ? "" : " to site " + site) << ": "
            << last << "\n";
        return 0;
      }
      if (state == "failed" || state == "expired") {
        return fail(absl::StrCat(state, " (site ", site, ")"), last);
      }
      if (state == "deferred" && r.value("attempts", 0) > 0) {
        fail(absl::StrCat("deferred (site ", site, "), tried again at ",
                          r.value("next_attempt", std::string("?"))),
             last);
        return 1;
      }
      std::string now_said = "waiting for its first attempt";
      if (now_said != said) out << "… " << now_said << "\n";
      said = now_said;
    }
    absl::SleepFor(absl::Milliseconds(300));
  }
  out << "✗ no outcome within " << a.timeout_s
      << " s: see `peregrine queue show " << id << "`\n";
  return 1;
}

}  // namespace peregrine
