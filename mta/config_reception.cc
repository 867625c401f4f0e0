// The settings of reception: [server] [listen] [relay] [auth] [tls] [smtp].
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "mta/config_schema.h"
#include "mta/outcome/outcome.h"
#include "mta/shard/address.h"

namespace peregrine::config_schema {
namespace {

absl::Status SetListener(const toml::node& node, Config& config,
                         ListenerKind kind, const char* key) {
  // One address may stand alone: "127.0.0.1:2525" is short for
  // ["127.0.0.1:2525"].
  absl::StatusOr<std::vector<std::string>> texts =
      node.is_string()
          ? std::vector<std::string>{std::string(
                *node.value<std::string_view>())}
          : GetStringList(node, "addresses like \"127.0.0.1:2525\"");
  if (!texts.ok()) return texts.status();
  ListenerConfig* listener = nullptr;
  for (ListenerConfig& l : config.listeners) {
    if (l.kind == kind) listener = &l;
  }
  if (listener == nullptr) {
    config.listeners.push_back({kind, key, {}});
    listener = &config.listeners.back();
  }
  listener->addresses.clear();
  for (const std::string& text : *texts) {
    auto address = shard::SocketAddress::Parse(text);
    if (!address.ok()) return address.status();
    listener->addresses.push_back(*address);
  }
  return absl::OkStatus();
}

absl::Status SetWebhooks(const toml::node& node, Config& c) {
  using W = Config::Webhook;
  auto text = [](const char* what, std::string W::*field) {
    return [what, field](const toml::node& n, W& w) {
      auto v = GetString(n, what);
      if (v.ok()) w.*field = *v;
      return v.status();
    };
  };
  static const auto name = text("a name", &W::name);
  static const auto url = text("an http:// or https:// URL", &W::url);
  static const auto secret = text("a file path", &W::secret_file);
  const std::vector<std::pair<const char*, EntryKey<W>>> keys = {
      {"name", [](const toml::node& n, W& w) { return name(n, w); }},
      {"url",
       [](const toml::node& n, W& w) {
         absl::Status s = url(n, w);
         if (s.ok() && !absl::StartsWith(w.url, "http://") &&
             !absl::StartsWith(w.url, "https://")) {
           return Expected("an http:// or https:// URL", n);
         }
         return s;
       }},
      {"secret_file", [](const toml::node& n, W& w) { return secret(n, w); }},
      {"events",
       [](const toml::node& n, W& w) {
         auto l = GetStringList(n, "event types");
         if (!l.ok()) return l.status();
         for (const std::string& e : *l) {
           if (!outcome::ParseKind(e)) {
             return absl::InvalidArgumentError(absl::StrCat(
                 "unknown event type \"", e,
                 "\" (types: received, rejected, delivered, deferred, "
                 "failed, expired, bounce, dsn_sent, async_bounce, "
                 "complaint, suppressed, suppression_hit, admin)"));
           }
         }
         w.events = *l;
         return absl::OkStatus();
       }},
      {"batch",
       [](const toml::node& n, W& w) { return GetInt(n, 1, 10000, &w.batch); }},
      {"max_held", [](const toml::node& n,
                      W& w) { return GetInt(n, 100, 10000000, &w.max_held); }},
      {"timeout",
       [](const toml::node& n, W& w) {
         return GetDuration(n, absl::Seconds(1), absl::Minutes(5), &w.timeout);
       }},
  };
  std::vector<W> hooks;
  absl::Status s = ParseEntries<W>(
      node,
      "a list of [[admin.webhooks]] tables with url, secret_file, events, "
      "name, batch, max_held and timeout",
      keys, hooks);
  if (!s.ok()) return s;
  for (size_t i = 0; i < hooks.size(); ++i) {
    W& w = hooks[i];
    std::string where = absl::StrCat("entry ", i + 1, " (line ", w.line, ")");
    if (w.url.empty() || w.secret_file.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(
          where,
          ": a webhook needs url and secret_file (a file with the key its "
          "batches are signed with; make one with `openssl rand -hex 32`)"));
    }
    if (w.name.empty()) w.name = absl::StrCat("webhook-", i + 1);
  }
  c.admin_webhooks = std::move(hooks);
  return absl::OkStatus();
}

}  // namespace

std::vector<Setting> ReceptionSettings() {
  return {
      {"server", "hostname", "\"\"",
       "Name this MTA gives in its SMTP greeting, EHLO and Received headers.\n"
       "Empty: the machine's host name. Use the name the IP's PTR record "
       "gives.",
       [](const toml::node& n, Config& c) {
         auto s = GetString(n, "a host name");
         if (!s.ok()) return s.status();
         c.hostname = *s;
         return absl::OkStatus();
       }},
      {"server", "user", "\"\"",
       "The user to run as once the listeners are bound, when started as\n"
       "root (the data directory is made or checked to be that user's).\n"
       "Started as root, it must be set: \"root\" stays root on purpose.\n"
       "Empty and not root: no change (systemd's User= did it).",
       [](const toml::node& n, Config& c) {
         auto s = GetString(n, "a user name");
         if (s.ok()) c.user = *s;
         return s.status();
       }},
      {"server", "group", "\"\"",
       "The group to run as with server.user. Empty: that user's own group.",
       [](const toml::node& n, Config& c) {
         auto s = GetString(n, "a group name");
         if (s.ok()) c.group = *s;
         return s.status();
       }},
      {"server", "data_dir", "\"./peregrine-data\"",
       "Directory of the queue and generated files (created if missing).\n"
       "Relative paths start from the working directory. "
       "`--data-dir` overrides it.",
       [](const toml::node& n, Config& c) {
         auto s = GetString(n, "a directory path");
         if (!s.ok()) return s.status();
         if (s->empty()) return Expected("a non-empty directory path", n);
         c.data_dir = *s;
         return absl::OkStatus();
       }},
      {"server", "shards", "0",
       "Worker shards: threads pinned one per core, each with its own I/O "
       "ring.\n0: one per usable core.",
       [](const toml::node& n, Config& c) {
         return GetInt(n, 0, 1024, &c.shards);
       }},
      {"server", "io_backend", "\"auto\"",
       "\"auto\" (io_uring, or epoll where io_uring is refused, e.g. under\n"
       "Docker's default seccomp profile), \"io_uring\" or \"epoll\".",
       [](const toml::node& n, Config& c) {
         auto s = GetString(n, "\"auto\", \"io_uring\" or \"epoll\"");
         if (!s.ok()) return s.status();
         if (!shard::ParseBackendKind(*s, &c.io_backend)) {
           return Expected("\"auto\", \"io_uring\" or \"epoll\"", n);
         }
         return absl::OkStatus();
       }},
      {"server", "log_level", "\"info\"",
       "\"debug\", \"info\", \"warning\" or \"error\". SIGHUP applies a "
       "change.",
       [](const toml::node& n, Config& c) {
         auto s = GetString(n, "\"debug\", \"info\", \"warning\" or \"error\"");
         if (!s.ok()) return s.status();
         if (!log::ParseLevel(*s, &c.log_level)) {
           return Expected("\"debug\", \"info\", \"warning\" or \"error\"", n);
         }
         return absl::OkStatus();
       }},
      {"server", "drain_timeout", "\"30s\"",
       "On SIGTERM, how long open connections may take to finish before\n"
       "the daemon exits anyway.",
       [](const toml::node& n, Config& c) {
         return GetDuration(n, absl::ZeroDuration(), absl::Hours(1),
                            &c.drain_timeout);
       }},
      {"server", "idle_spin", "\"auto\"",
       "How long an idle shard keeps polling before it sleeps: lower\n"
       "latency between shards for CPU. \"0s\" never spins. \"auto\": 50us\n"
       "when there are more usable cores than shards, else 0 (a spinning\n"
       "shard would take its core from the queue and the kernel).",
       [](const toml::node& n, Config& c) -> absl::Status {
         if (n.is_string() && n.value<std::string>() == "auto") {
           c.idle_spin.reset();
           return absl::OkStatus();
         }
         absl::Duration d;
         if (absl::Status s = GetDuration(n, absl::ZeroDuration(),
                                          absl::Milliseconds(10), &d);
             !s.ok()) {
           return Expected("\"auto\" or a duration up to \"10ms\"", n);
         }
         c.idle_spin = d;
         return absl::OkStatus();
       }},
      {"listen", "relay", "[\"127.0.0.1:2525\"]",
       "SMTP for other MTAs and trusted applications (port 25 in "
       "production).\n[] disables a listener. IPv6: \"[::1]:2525\".",
       [](const toml::node& n, Config& c) {
         return SetListener(n, c, ListenerKind::kRelay, "listen.relay");
       }},
      {"listen", "submission", "[\"127.0.0.1:2587\"]",
       "Message submission with STARTTLS and AUTH (port 587 in production).",
       [](const toml::node& n, Config& c) {
         return SetListener(n, c, ListenerKind::kSubmission,
                            "listen.submission");
       }},
      {"listen", "submissions", "[\"127.0.0.1:2465\"]",
       "Submission over implicit TLS (port 465 in production).",
       [](const toml::node& n, Config& c) {
         return SetListener(n, c, ListenerKind::kSubmissions,
                            "listen.submissions");
       }},
      {"listen", "admin", "[\"127.0.0.1:8025\"]",
       "Admin HTTP API: injection, queue control, metrics. Keep it private.",
       [](const toml::node& n, Config& c) {
         return SetListener(n, c, ListenerKind::kAdmin, "listen.admin");
       }},
      {"admin", "tokens_file", "\"\"",
       "Bearer tokens for the admin port, one per line (# comments), at\n"
       "least 16 characters each (`openssl rand -hex 32`). Required when\n"
       "listen.admin is not on loopback; on loopback no token is asked.",
       [](const toml::node& n, Config& c) {
         auto s = GetString(n, "a file path");
         if (!s.ok()) return s.status();
         c.admin_tokens_file = *s;
         return absl::OkStatus();
       }},
      {"admin", "inject_memory", "\"256MiB\"",
       "HTTP injection: the most rendered mail that may wait for the disk\n"
       "at once, all requests together. Past it a recipient fails alone,\n"
       "\"send it again shortly\" (a batch is never held in memory whole).",
       [](const toml::node& n, Config& c) {
         return GetSize(n, 1 << 20, uint64_t{1} << 40, &c.admin_inject_memory);
       }},
      {"admin", "tls", "false",
       "The admin port speaks HTTPS (TLS from the first byte) with the\n"
       "[tls] certificate (a self-signed one when tls.cert_file is empty).\n"
       "Use it whenever listen.admin is reachable from another host.",
       [](const toml::node& n, Config& c) { return GetBool(n, &c.admin_tls); }},
      {"admin", "webhooks", "[]",
       "Events (as the event log writes them) POSTed in batches to these\n"
       "URLs, signed: X-Peregrine-Signature: sha256=HMAC-SHA256(key,\n"
       "TIMESTAMP \".\" BODY), X-Peregrine-Timestamp: TIMESTAMP. Sent at\n"
       "least once, in order; a receiver down is retried with back-off and\n"
       "never slows delivery (past max_held the newest are dropped).\n"
       "  [[admin.webhooks]]\n"
       "  url = \"https://crm.example.com/mail-events\"\n"
       "  secret_file = \"webhook.key\"   # under data_dir when relative\n"
       "  events = [\"delivered\", \"failed\", \"bounce\"]  # default: all\n"
       "  batch = 100\n"
       "  max_held = 100000\n"
       "  timeout = \"10s\"",
       SetWebhooks},
      {"relay", "trusted_networks", "[\"127.0.0.0/8\", \"::1\"]",
       "Clients allowed to relay to any domain without AUTH. Everyone else\n"
       "must authenticate. Never list networks you do not control: that "
       "makes\nan open relay.",
       [](const toml::node& n, Config& c) {
         auto texts = GetStringList(n, "networks like \"10.0.0.0/8\"");
         if (!texts.ok()) return texts.status();
         c.trusted_networks.clear();
         for (const std::string& text : *texts) {
           auto cidr = shard::Cidr::Parse(text);
           if (!cidr.ok()) return cidr.status();
           c.trusted_networks.push_back(*cidr);
         }
         return absl::OkStatus();
       }},
      {"relay", "allow_open_relay", "false",
       "Accept relay.trusted_networks broader than a /8 (such as\n"
       "\"0.0.0.0/0\"). They let anyone on the internet send mail through\n"
       "this server: spammers find such relays within hours and the\n"
       "server's address lands on every blocklist. Leave it off.",
       [](const toml::node& n, Config& c) {
         return GetBool(n, &c.allow_open_relay);
       }},
      {"auth", "users_file", "\"\"",
       "Accounts that may AUTH on submission (scrypt hashes). Empty:\n"
       "data_dir/users. Manage it with `peregrine user add|del|list`;\n"
       "SIGHUP reloads it.",
       [](const toml::node& n, Config& c) {
         auto s = GetString(n, "a file path");
         if (!s.ok()) return s.status();
         c.users_file = *s;
         return absl::OkStatus();
       }},
      {"auth", "allow_without_tls", "false",
       "Offer AUTH on connections without TLS. Leave it off: passwords\n"
       "would cross the network in the clear (538 is answered instead).",
       [](const toml::node& n, Config& c) {
         return GetBool(n, &c.auth_without_tls);
       }},
      {"tls", "cert_file", "\"\"",
       "PEM certificate chain for STARTTLS and port 465 (e.g. Let's\n"
       "Encrypt's fullchain.pem). Empty: a self-signed certificate is made in\n"
       "data_dir/tls at first start (fine for MX traffic; submission clients\n"
       "that verify want a real one). SIGHUP reloads it.",
       [](const toml::node& n, Config& c) {
         auto s = GetString(n, "a file path");
         if (!s.ok()) return s.status();
         c.tls_cert_file = *s;
         return absl::OkStatus();
       }},
      {"tls", "key_file", "\"\"", "PEM private key of cert_file.",
       [](const toml::node& n, Config& c) {
         auto s = GetString(n, "a file path");
         if (!s.ok()) return s.status();
         c.tls_key_file = *s;
         return absl::OkStatus();
       }},
      {"smtp", "max_message_size", "\"25MiB\"",
       "Largest message accepted (announced as SIZE; bigger ones get 552).",
       [](const toml::node& n, Config& c) {
         return GetSize(n, 1024, uint64_t{1} << 31, &c.smtp_max_message_bytes);
       }},
      {"smtp", "max_recipients", "1000",
       "Recipients per message; more get 452 and the client sends them in\n"
       "another transaction.",
       [](const toml::node& n, Config& c) {
         return GetInt(n, 1, 100000, &c.smtp_max_recipients);
       }},
      {"smtp", "command_timeout", "\"5m\"",
       "A client silent this long is told 421 and disconnected\n"
       "(RFC 5321 §4.5.3.2 asks for at least 5 minutes).",
       [](const toml::node& n, Config& c) {
         return GetDuration(n, absl::Seconds(1), absl::Hours(1),
                            &c.smtp_command_timeout);
       }},
      {"smtp", "received_shows_auth_user", "false",
       "Name the authenticated user in the Received field (off: who sent\n"
       "through which account stays in the log only).",
       [](const toml::node& n, Config& c) {
         return GetBool(n, &c.smtp_received_shows_auth_user);
       }},
      {"smtp", "submission_adds_missing_fields", "true",
       "On the submission listeners, add a Message-ID and a Date to mail\n"
       "that has none (RFC 6409 §8.3). Large receivers refuse or junk mail\n"
       "without a Message-ID, and many applications do not write one.",
       [](const toml::node& n, Config& c) {
         return GetBool(n, &c.smtp_submission_adds_missing_fields);
       }},
      {"smtp", "relay_adds_missing_fields", "false",
       "The same on the relay listener. Off: mail relayed from other\n"
       "servers is passed on as it came; turn it on when applications on\n"
       "trusted networks send through the relay port.",
       [](const toml::node& n, Config& c) {
         return GetBool(n, &c.smtp_relay_adds_missing_fields);
       }},
      {"smtp", "max_connections", "1000",
       "SMTP connections at once, all listeners; more get 421.",
       [](const toml::node& n, Config& c) {
         return GetInt(n, 1, 1000000, &c.smtp_max_connections);
       }},
      {"smtp", "max_connections_per_client", "50",
       "Connections at once from one client address; trusted networks are\n"
       "exempt (applications may open many).",
       [](const toml::node& n, Config& c) {
         return GetInt(n, 1, 1000000, &c.smtp_max_connections_per_client);
       }},
  };
}

}  // namespace peregrine::config_schema
