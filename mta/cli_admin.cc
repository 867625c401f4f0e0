// `peregrine queue suspend|resume|suspensions|summary|retry|bounce|delete`:
// queue control through the running daemon's admin API (mta/admin.h). The
// daemon must run: these change what its delivery shards do. A blocking
// HTTP/1.1 request on the admin listener of the configuration (loopback for a
// wildcard address), with the first token of admin.tokens_file when there is
// one.

#include <netinet/in.h>
#include <openssl/ssl.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <iostream>
#include <memory>
#include <tuple>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "mta/blocking_smtp.h"
#include "mta/cli_commands.h"
#include "mta/config.h"
#include "nlohmann/json.hpp"

namespace peregrine {
namespace {

using json = nlohmann::json;

struct Answer {
  int status = 0;
  json body;
};

// The admin port's address to connect to: a wildcard listener is reached
// on loopback.
absl::StatusOr<shard::SocketAddress> AdminAddress(const Config& c) {
  auto a = ListenerAddress(c, ListenerKind::kAdmin);
  if (!a.ok()) {
    return absl::FailedPreconditionError(absl::StrCat(
        a.status().message(), ": queue control goes through the admin port"));
  }
  return a;
}

absl::StatusOr<std::string> FirstToken(const Config& c,
                                       const std::string& data_dir) {
  if (c.admin_tokens_file.empty()) return std::string();
  std::string path = c.admin_tokens_file[0] == '/'
                         ? c.admin_tokens_file
                         : absl::StrCat(data_dir, "/", c.admin_tokens_file);
  std::ifstream in(path);
  if (!in) {
    return absl::FailedPreconditionError(absl::StrCat(
        "cannot read ", path, " (admin.tokens_file): ", strerror(errno)));
  }
  std::string line;
  while (std::getline(in, line)) {
    absl::string_view t = absl::StripAsciiWhitespace(line);
    if (!t.empty() && t[0] != '#') return std::string(t);
  }
  return absl::FailedPreconditionError(
      absl::StrCat(path, " (admin.tokens_file) has no token"));
}

absl::StatusOr<Answer> Call(const shard::SocketAddress& address, bool tls,
                            const std::string& token, const std::string& method,
                            const std::string& path, const std::string& body) {
  int fd = ::socket(address.family(), SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return absl::InternalError(strerror(errno));
  timeval tv{30, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
  if (::connect(fd, address.sockaddr_ptr(), address.length()) != 0) {
    int err = errno;
    ::close(fd);
    if (err == ECONNREFUSED) {
      return absl::UnavailableError(absl::StrCat(
          "the daemon is not running: nothing answers on ", address.ToString(),
          " (listen.admin); start it, then try again"));
    }
    return absl::UnavailableError(absl::StrCat("cannot reach the admin port ",
                                               address.ToString(), ": ",
                                               strerror(err)));
  }
  std::string request = absl::StrCat(
      method, " ", path, " HTTP/1.1\r\nHost: ", address.ToString(),
      "\r\nConnection: close\r\n",
      token.empty() ? ""
                    : absl::StrCat("Authorization: Bearer ", token, "\r\n"),
      body.empty() ? ""
                   : absl::StrCat("Content-Type: application/json\r\n"
                                  "Content-Length: ",
                                  body.size(), "\r\n"),
      "\r\n", body);
  // admin.tls: HTTPS to our own daemon, whose certificate may be the
  // self-signed default; it is not verified (the address is this
  // configuration's own listener).
  std::unique_ptr<SSL_CTX, decltype(&SSL_CTX_free)> ctx(nullptr, SSL_CTX_free);
  std::unique_ptr<SSL, decltype(&SSL_free)> ssl(nullptr, SSL_free);
  if (tls) {
    ctx.reset(SSL_CTX_new(TLS_client_method()));
    ssl.reset(ctx != nullptr ? SSL_new(ctx.get()) : nullptr);
    if (ssl == nullptr || SSL_set_fd(ssl.get(), fd) != 1 ||
        SSL_connect(ssl.get()) != 1) {
      ::close(fd);
      return absl::UnavailableError(absl::StrCat(
          "no TLS handshake with the admin port ", address.ToString(),
          " (admin.tls is on in this configuration: is it on in the "
          "daemon's?)"));
    }
  }
  auto write = [&](const char* data, size_t size) -> ssize_t {
    return tls ? SSL_write(ssl.get(), data, static_cast<int>(size))
               : ::send(fd, data, size, MSG_NOSIGNAL);
  };
  auto read = [&](char* data, size_t size) -> ssize_t {
    return tls ? SSL_read(ssl.get(), data, static_cast<int>(size))
               : ::recv(fd, data, size, 0);
  };
  size_t sent = 0;
  while (sent < request.size()) {
    ssize_t n = write(request.data() + sent, request.size() - sent);
    if (n <= 0) {
      ::close(fd);
      return absl::UnavailableError("the admin port closed the connection");
    }
    sent += static_cast<size_t>(n);
  }
  std::string response;
  char buf[16384];
  while (response.size() < (16 << 20)) {
    ssize_t n = read(buf, sizeof(buf));
    if (n < 0 && errno == EINTR && !tls) continue;
    if (n <= 0) break;
    response.append(buf, static_cast<size_t>(n));
  }
  ssl.reset();
  ::close(fd);
  Answer a;
  size_t end = response.find("\r\n\r\n");
  if (response.rfind("HTTP/1.", 0) != 0 || end == std::string::npos ||
      !absl::SimpleAtoi(response.substr(9, 3), &a.status)) {
    return absl::DataLossError("the admin port's answer is not HTTP");
  }
  a.body = json::parse(response.substr(end + 4), nullptr, false);
  if (a.body.is_discarded()) {
    return absl::DataLossError("the admin port's answer is not JSON");
  }
  return a;
}

std::string Target(const json& s) {
  if (s.contains("domain")) return s["domain"].get<std::string>();
  if (s.contains("mx_suffix")) return s["mx_suffix"].get<std::string>();
  if (s.contains("campaign")) {
    return "campaign " + s["campaign"].get<std::string>();
  }
  if (s.contains("id")) return "message " + s["id"].get<std::string>();
  return "tenant " + s.value("tenant", std::string("?"));
}

std::string Until(const json& s) {
  return s.contains("until") && s["until"].is_string()
             ? s["until"].get<std::string>()
             : "resumed";
}

}  // namespace

absl::StatusOr<nlohmann::json> AdminGet(const Config& config,
                                        const std::string& data_dir,
                                        const std::string& path, int* status) {
  auto address = AdminAddress(config);
  if (!address.ok()) return address.status();
  auto token = FirstToken(config, data_dir);
  if (!token.ok()) return token.status();
  auto answer = Call(*address, config.admin_tls, *token, "GET", path, "");
  if (!answer.ok()) return answer.status();
  *status = answer->status;
  return answer->body;
}

void AddQueueControl(CLI::App& queue, QueueControlArgs& args) {
  for (CLI::App* sub :
       {queue.add_subcommand(
            "suspend", "Hold a domain's or MX suffix's mail (running daemon)"),
        queue.add_subcommand("resume", "Let held mail go (running daemon)"),
        queue.add_subcommand("suspensions",
                             "What is held through the admin API"),
        queue.add_subcommand(
            "summary",
            "Counts by state, site, domain, campaign, tenant and age "
            "(running daemon)"),
        queue.add_subcommand("retry", "Try the mail named again now"),
        queue.add_subcommand("bounce",
                             "Fail the mail named now, with DSNs as policy "
                             "says"),
        queue.add_subcommand("delete", "Drop the mail named (no DSN)"),
        queue.add_subcommand(
            "transfer",
            "Relay the mail named to another node (its relay listener, "
            "from a trusted network) and drop it here once that node has "
            "it on disk")}) {
    sub->add_option("-c,--config", args.config_path, "TOML configuration file");
    sub->add_option("--data-dir", args.data_dir, "Data directory");
    const std::string name = sub->get_name();
    if (name == "suspensions" || name == "summary") continue;
    if (name == "suspend" || name == "resume") {
      sub->add_option("--domain", args.domain,
                      "A recipient domain, or *.example.com");
      sub->add_option("--mx-suffix", args.mx_suffix,
                      "Every domain whose MX hosts end so: .outlook.com");
      sub->add_option("--campaign", args.campaign, "A campaign's mail");
      sub->add_option("--tenant", args.tenant, "A tenant's mail");
      sub->add_option("--id", args.id, "One message: its queue id");
    }
    if (name == "suspend") {
      sub->add_option("--duration", args.duration,
                      "For how long (2h, 90m); default: until resumed");
      sub->add_option("--reason", args.reason, "Why, for the log and list");
      continue;
    }
    if (name == "resume") continue;
    sub->add_option("--site", args.site, "A site (as queue summary names it)");
    sub->add_option("--domain", args.domain, "A recipient domain");
    sub->add_option("--campaign", args.campaign, "A campaign tag");
    sub->add_option("--tenant", args.tenant, "A tenant tag");
    sub->add_option("--id", args.id, "One message: its queue id");
    sub->add_flag("--all", args.all, "The whole queue");
    if (name == "transfer") {
      sub->add_option("--to", args.to,
                      "HOST:PORT of the other node's relay listener")
          ->required();
    }
  }
}

namespace {

void PrintGroups(const json& list, const char* key, std::ostream& out) {
  for (const json& g : list) {
    std::string name = g.value(key, std::string());
    out << "  " << (name.empty() ? "(none)" : name) << " "
        << g.value("recipients", 0);
    for (const auto& [bucket, n] : g["ages"].items()) {
      out << " " << n.get<uint64_t>();
    }
    out << "\n";
  }
}

void PrintSummary(const json& s, std::ostream& out) {
  out << "messages " << s.value("messages", 0) << ", recipients "
      << s.value("recipients", 0) << "\n";
  for (const auto& [state, n] : s["by_state"].items()) {
    out << "  " << state << " " << n.get<uint64_t>() << "\n";
  }
  // Like Postfix's qshape: recipients not yet final by age in minutes.
  out << "recipients waiting, by age in minutes:\n  total";
  for (const auto& [bucket, n] : s["age_minutes"].items()) {
    out << " " << bucket;
  }
  out << "\n  all "
      << s["by_state"].value("queued", 0) + s["by_state"].value("deferred", 0);
  for (const auto& [bucket, n] : s["age_minutes"].items()) {
    out << " " << n.get<uint64_t>();
  }
  out << "\n";
  for (const auto& [title, list, key] :
       {std::tuple{"by site:", "by_site", "site"},
        std::tuple{"by domain:", "by_domain", "domain"},
        std::tuple{"by campaign:", "by_campaign", "campaign"},
        std::tuple{"by tenant:", "by_tenant", "tenant"}}) {
    if (!s.contains(list) || s[list].empty()) continue;
    out << title << "\n";
    PrintGroups(s[list], key, out);
  }
}

}  // namespace

int QueueControl(const std::string& what, const QueueControlArgs& a,
                 std::ostream& out, std::ostream& err) {
  const std::string name = absl::StrCat("peregrine queue ", what);
  absl::StatusOr<Config> config =
      a.config_path.empty() ? DefaultConfig() : LoadConfigFile(a.config_path);
  if (!config.ok()) {
    err << name << ": " << config.status().message() << "\n";
    return 2;
  }
  const bool action = what == "retry" || what == "bounce" || what == "delete" ||
                      what == "transfer";
  json body = json::object();
  if (action) {
    for (const auto& [key, value] :
         {std::pair{"site", &a.site}, std::pair{"domain", &a.domain},
          std::pair{"campaign", &a.campaign}, std::pair{"tenant", &a.tenant},
          std::pair{"id", &a.id}}) {
      if (!value->empty()) body[key] = *value;
    }
    if (a.all) body["all"] = true;
    if (body.empty()) {
      err << name
          << ": name the mail: --site, --domain, --campaign, --tenant, --id, "
             "or --all for the whole queue\n";
      return 2;
    }
    if (what == "transfer") body["to"] = a.to;
  } else if ((what == "suspend" || what == "resume") &&
             !a.domain.empty() + !a.mx_suffix.empty() + !a.campaign.empty() +
                     !a.tenant.empty() + !a.id.empty() !=
                 1) {
    err << name
        << ": give one of --domain (a recipient domain), --mx-suffix (like "
           ".outlook.com: every domain whose MX hosts end so), --campaign, "
           "--tenant or --id\n";
    return 2;
  }
  auto address = AdminAddress(*config);
  if (!address.ok()) {
    err << name << ": " << address.status().message() << "\n";
    return 1;
  }
  std::string data_dir = a.data_dir.empty() ? config->data_dir : a.data_dir;
  auto token = FirstToken(*config, data_dir);
  if (!token.ok()) {
    err << name << ": " << token.status().message() << "\n";
    return 1;
  }
  if (!action) {
    if (!a.domain.empty()) body["domain"] = a.domain;
    if (!a.mx_suffix.empty()) body["mx_suffix"] = a.mx_suffix;
    if (!a.campaign.empty()) body["campaign"] = a.campaign;
    if (!a.tenant.empty()) body["tenant"] = a.tenant;
    if (!a.id.empty()) body["id"] = a.id;
    if (!a.duration.empty()) body["duration"] = a.duration;
    if (!a.reason.empty()) body["reason"] = a.reason;
  }
  absl::StatusOr<Answer> answer =
      what == "suspensions" || what == "summary"
          ? Call(*address, config->admin_tls, *token, "GET",
                 "/api/v1/queue/" + what, "")
          : Call(*address, config->admin_tls, *token, "POST",
                 "/api/v1/queue/" + what, body.dump());
  if (!answer.ok()) {
    err << name << ": " << answer.status().message() << "\n";
    return 1;
  }
  if (answer->status != 200) {
    std::string message =
        answer->body.contains("error")
            ? answer->body["error"].value("message", std::string("?"))
            : answer->body.dump();
    err << name << ": " << message << " (HTTP " << answer->status << ")\n";
    return 1;
  }
  if (action) {
    const json& b = answer->body;
    out << what << " " << b.value("selection", std::string()) << ": "
        << b.value("done", 0) << " recipients";
    if (b.value("in_flight", 0) > 0) {
      out << ", " << b.value("in_flight", 0)
          << " being tried now (left to that attempt)";
    }
    if (b.value("kept", 0) > 0) {
      out << ", " << b.value("kept", 0) << " kept here";
    }
    out << "\n";
    std::string error = b.value("error", std::string());
    if (!error.empty()) {
      err << name << ": stopped: " << error << "\n";
      return 1;
    }
  } else if (what == "summary") {
    PrintSummary(answer->body, out);
  } else if (what == "suspend") {
    const json& s = answer->body["suspended"];
    out << "suspended " << Target(s) << " until "
        << (s["until"].is_string() ? s["until"].get<std::string>()
                                   : std::string("resumed"))
        << "\n";
  } else if (what == "resume") {
    out << "resumed " << Target(body) << "\n";
  } else {
    const json& list = answer->body["suspensions"];
    if (list.empty()) out << "no site is suspended through the API\n";
    for (const json& s : list) {
      out << Target(s) << "  since " << s.value("since", std::string("?"))
          << "  until " << Until(s);
      std::string reason = s.value("reason", std::string());
      if (!reason.empty()) out << "  " << reason;
      out << "\n";
    }
  }
  return 0;
}

}  // namespace peregrine
