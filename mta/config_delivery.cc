// The settings of delivery: [delivery], its [[delivery.sites]] and
// [[delivery.sources]] tables, and [smarthost].
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "mta/config_schema.h"
#include "mta/delivery/shaping.h"

namespace peregrine::config_schema {
namespace {

absl::Status GetRate(const toml::node& n, std::string* out) {
  const char* what =
      "a rate such as \"20/s\", \"600/m\", \"10000/h\" or "
      "\"unlimited\"";
  auto text = GetString(n, what);
  if (!text.ok()) return text.status();
  if (!delivery::TokenBucket::Parse(*text).ok()) return Expected(what, n);
  *out = *text;
  return absl::OkStatus();
}

absl::Status GetTlsMode(const toml::node& n, delivery::TlsMode* out) {
  const char* what = "\"none\", \"opportunistic\", \"required\" or \"verify\"";
  auto text = GetString(n, what);
  if (!text.ok()) return text.status();
  if (!delivery::ParseTlsMode(*text, out)) return Expected(what, n);
  return absl::OkStatus();
}

template <typename T>
absl::Status SetOptionalInt(const toml::node& n, int64_t min, int64_t max,
                            std::optional<int>* out) {
  int v = 0;
  absl::Status s = GetInt(n, min, max, &v);
  if (s.ok()) *out = v;
  return s;
}

absl::Status SetOptionalBool(const toml::node& n, std::optional<bool>* out) {
  bool b = false;
  absl::Status s = GetBool(n, &b);
  if (s.ok()) *out = b;
  return s;
}

struct SourceEntry : delivery::Source {
  int line = 0;
};

absl::Status SetSites(const toml::node& node, Config& c) {
  using R = delivery::SiteRule;
  static const std::vector<std::pair<const char*, EntryKey<R>>> keys = {
      {"domains",
       [](const toml::node& n, R& r) {
         auto l = GetStringList(n,
                                "domains like \"example.com\" or "
                                "\"*.example.com\"");
         if (l.ok()) r.domains = *l;
         return l.status();
       }},
      {"mx_suffixes",
       [](const toml::node& n, R& r) {
         auto l = GetStringList(n, "MX host suffixes like \".google.com\"");
         if (l.ok()) r.mx_suffixes = *l;
         return l.status();
       }},
      {"max_connections",
       [](const toml::node& n, R& r) {
         return SetOptionalInt<int>(n, 1, 10000, &r.max_connections);
       }},
      {"messages_per_connection",
       [](const toml::node& n, R& r) {
         return SetOptionalInt<int>(n, 1, 1000000, &r.messages_per_connection);
       }},
      {"recipients_per_transaction",
       [](const toml::node& n, R& r) {
         return SetOptionalInt<int>(n, 1, 100000,
                                    &r.recipients_per_transaction);
       }},
      {"message_rate",
       [](const toml::node& n, R& r) {
         std::string v;
         absl::Status s = GetRate(n, &v);
         if (s.ok()) r.message_rate = v;
         return s;
       }},
      {"connection_rate",
       [](const toml::node& n, R& r) {
         std::string v;
         absl::Status s = GetRate(n, &v);
         if (s.ok()) r.connection_rate = v;
         return s;
       }},
      {"tls",
       [](const toml::node& n, R& r) {
         // tls = "mta-sts" or "dane" says which policy, not which mode:
         // the same as tls_policy = "mta-sts" or "dane".
         delivery::TlsPolicyUse use;
         if (n.is_string() && *n.value<std::string>() != "auto" &&
             *n.value<std::string>() != "off" &&
             delivery::ParseTlsPolicyUse(*n.value<std::string>(), &use)) {
           r.tls_policy = use;
           return absl::OkStatus();
         }
         const char* what =
             "\"none\", \"opportunistic\", \"required\", \"verify\", "
             "\"mta-sts\" or \"dane\"";
         auto text = GetString(n, what);
         if (!text.ok()) return text.status();
         delivery::TlsMode m;
         if (!delivery::ParseTlsMode(*text, &m)) return Expected(what, n);
         r.tls = m;
         return absl::OkStatus();
       }},
      {"tls_policy",
       [](const toml::node& n, R& r) {
         const char* what = "\"auto\", \"dane\", \"mta-sts\" or \"off\"";
         auto text = GetString(n, what);
         if (!text.ok()) return text.status();
         delivery::TlsPolicyUse u;
         if (!delivery::ParseTlsPolicyUse(*text, &u)) {
           return Expected(what, n);
         }
         r.tls_policy = u;
         return absl::OkStatus();
       }},
      {"suspended", [](const toml::node& n,
                       R& r) { return SetOptionalBool(n, &r.suspended); }},
      {"pool",
       [](const toml::node& n, R& r) {
         auto v = GetString(n, "a pool name");
         if (v.ok()) r.pool = *v;
         return v.status();
       }},
      {"shared",
       [](const toml::node& n, R& r) { return SetOptionalBool(n, &r.shared); }},
  };
  return ParseEntries<R>(node,
                         "a list of [[delivery.sites]] tables with domains "
                         "or mx_suffixes and the limits to apply",
                         keys, c.delivery.rules);
}

absl::Status SetSources(const toml::node& node, Config& c) {
  using S = SourceEntry;
  static const std::vector<std::pair<const char*, EntryKey<S>>> keys = {
      {"name",
       [](const toml::node& n, S& e) {
         auto v = GetString(n, "a name");
         if (v.ok()) e.name = *v;
         return v.status();
       }},
      {"address",
       [](const toml::node& n, S& e) {
         auto v = GetString(n, "a local IP address");
         if (!v.ok()) return v.status();
         if (!dns::IpAddress::Parse(*v).ok()) {
           return Expected("a local IP address such as \"192.0.2.10\"", n);
         }
         e.address = *v;
         return absl::OkStatus();
       }},
      {"ehlo",
       [](const toml::node& n, S& e) {
         auto v = GetString(n, "a host name");
         if (v.ok()) e.ehlo = *v;
         return v.status();
       }},
      {"pool",
       [](const toml::node& n, S& e) {
         auto v = GetString(n, "a pool name");
         if (v.ok()) e.pool = *v;
         return v.status();
       }},
      {"weight",
       [](const toml::node& n, S& e) { return GetInt(n, 1, 1000, &e.weight); }},
  };
  std::vector<SourceEntry> entries;
  absl::Status s = ParseEntries<S>(
      node,
      "a list of [[delivery.sources]] tables with name, address, ehlo, pool "
      "and weight",
      keys, entries);
  if (!s.ok()) return s;
  c.delivery.sources.assign(entries.begin(), entries.end());
  return absl::OkStatus();
}

}  // namespace

std::vector<Setting> DeliverySettings() {
  return {
      {"delivery", "enabled", "true",
       "Deliver queued mail. false: mail is received and kept in the queue\n"
       "(a reception-only instance, or while you test).",
       [](const toml::node& n, Config& c) {
         return GetBool(n, &c.delivery.enabled);
       }},
      {"delivery", "port", "25",
       "The port mail exchangers listen on (25; other values for tests).",
       [](const toml::node& n, Config& c) {
         return GetInt(n, 1, 65535, &c.delivery.port);
       }},
      {"delivery", "helo_name", "\"\"",
       "The EHLO name; empty: server.hostname. Receivers check that it\n"
       "resolves to the sending IP, and that the IP's PTR names it.",
       [](const toml::node& n, Config& c) {
         auto s = GetString(n, "a host name");
         if (s.ok()) c.delivery.helo = *s;
         return s.status();
       }},
      {"delivery", "tls", "\"opportunistic\"",
       "TLS towards destinations: \"none\", \"opportunistic\" (STARTTLS when\n"
       "offered, any certificate), \"required\" (STARTTLS or defer) or\n"
       "\"verify\" (required, trusted chain naming the MX host).\n"
       "[[delivery.sites]] entries override it per destination.",
       [](const toml::node& n, Config& c) {
         return GetTlsMode(n, &c.delivery.defaults.tls);
       }},
      {"delivery", "ca_file", "\"\"",
       "PEM certificates to trust for \"verify\"; empty: the system's\n"
       "(/etc/ssl/certs).",
       [](const toml::node& n, Config& c) {
         auto s = GetString(n, "a file path");
         if (s.ok()) c.delivery.ca_file = *s;
         return s.status();
       }},
      {"delivery", "mta_sts", "true",
       "Honour MTA-STS (RFC 8461): before the first delivery to a domain,\n"
       "look up _mta-sts.DOMAIN; when it announces a policy, fetch it from\n"
       "https://mta-sts.DOMAIN/.well-known/mta-sts.txt (certificate checked\n"
       "against delivery.ca_file or the system's), keep it until max_age in\n"
       "the queue's side table, and look at the TXT id again every hour.\n"
       "mode enforce: only MX hosts the policy names, over TLS whose\n"
       "certificate is trusted and names the host, else deferred with the\n"
       "reason; testing: delivered as usual, failures logged; none: ignored.\n"
       "Mail waiting for a fetch is not sent meanwhile. [[delivery.sites]]\n"
       "tls_policy = \"off\" ignores a receiver's policy.",
       [](const toml::node& n, Config& c) {
         return GetBool(n, &c.delivery.mta_sts);
       }},
      {"delivery", "mta_sts_fetch_timeout", "\"30s\"",
       "The whole policy fetch (connect, TLS, the answer) may take this long.",
       [](const toml::node& n, Config& c) {
         return GetDuration(n, absl::Seconds(1), absl::Minutes(5),
                            &c.delivery.mta_sts_fetch_timeout);
       }},
      {"delivery", "mta_sts_fetch_grace", "\"1h\"",
       "A domain announces a policy that cannot be fetched: its mail is\n"
       "deferred (never sent without the policy) for this long from the\n"
       "first failed fetch, then goes as though it had no policy, as RFC\n"
       "8461 3.3 says. \"0s\": at once.",
       [](const toml::node& n, Config& c) {
         return GetDuration(n, absl::ZeroDuration(), absl::Hours(24 * 7),
                            &c.delivery.mta_sts_fetch_grace);
       }},
      {"delivery", "connect_timeout", "\"30s\"",
       "How long a TCP connect may take before the next address is tried.",
       [](const toml::node& n, Config& c) {
         return GetDuration(n, absl::Milliseconds(100), absl::Minutes(10),
                            &c.delivery.connect_timeout);
       }},
      {"delivery", "command_timeout", "\"5m\"",
       "Wait for the greeting and each reply (RFC 5321 §4.5.3.2: 5m).",
       [](const toml::node& n, Config& c) {
         absl::Status s = GetDuration(n, absl::Seconds(1), absl::Hours(1),
                                      &c.delivery.command_timeout);
         c.delivery.greeting_timeout = c.delivery.command_timeout;
         return s;
       }},
      {"delivery", "data_timeout", "\"10m\"",
       "Wait for the reply to the end of a message (RFC 5321: 10m).",
       [](const toml::node& n, Config& c) {
         return GetDuration(n, absl::Seconds(1), absl::Hours(1),
                            &c.delivery.data_timeout);
       }},
      {"delivery", "idle_timeout", "\"5s\"",
       "An idle connection waits this long for more mail to its site, then\n"
       "says QUIT.",
       [](const toml::node& n, Config& c) {
         return GetDuration(n, absl::ZeroDuration(), absl::Minutes(10),
                            &c.delivery.idle_timeout);
       }},
      {"delivery", "retry_first", "\"5m\"",
       "After a transient failure (4xx, no connection), the first retry;\n"
       "each later one waits twice as long (with 10% jitter) ...",
       [](const toml::node& n, Config& c) {
         return GetDuration(n, absl::Seconds(1), absl::Hours(24),
                            &c.delivery.retry.first);
       }},
      {"delivery", "retry_max", "\"4h\"", "... up to this.",
       [](const toml::node& n, Config& c) {
         return GetDuration(n, absl::Seconds(1), absl::Hours(24 * 7),
                            &c.delivery.retry.max_delay);
       }},
      {"delivery", "max_age", "\"5d\"",
       "Mail still undelivered after this expires (a permanent failure).",
       [](const toml::node& n, Config& c) {
         return GetDuration(n, absl::Seconds(1), absl::Hours(24 * 60),
                            &c.delivery.retry.max_age);
       }},
      {"delivery", "max_connections", "20",
       "Per site (a set of domains sharing MX hosts): connections at once.\n"
       "They start at 5 and grow with successes (Postfix's slow start).",
       [](const toml::node& n, Config& c) {
         return GetInt(n, 1, 10000, &c.delivery.defaults.max_connections);
       }},
      {"delivery", "messages_per_connection", "100",
       "Messages sent over one connection before it is closed.",
       [](const toml::node& n, Config& c) {
         return GetInt(n, 1, 1000000,
                       &c.delivery.defaults.messages_per_connection);
       }},
      {"delivery", "recipients_per_transaction", "100",
       "Recipients in one transaction (RCPT TO commands per message).",
       [](const toml::node& n, Config& c) {
         return GetInt(n, 1, 100000,
                       &c.delivery.defaults.recipients_per_transaction);
       }},
      {"delivery", "message_rate", "\"unlimited\"",
       "Per site: messages per second, minute or hour (\"20/s\", \"600/m\").",
       [](const toml::node& n, Config& c) {
         return GetRate(n, &c.delivery.defaults.message_rate);
       }},
      {"delivery", "connection_rate", "\"unlimited\"",
       "Per site: new connections per second, minute or hour.",
       [](const toml::node& n, Config& c) {
         return GetRate(n, &c.delivery.defaults.connection_rate);
       }},
      {"delivery", "shared", "false",
       "Every site's rates and max_connections hold across all the nodes\n"
       "of the cluster (through [redis]), and a back-off one node sees\n"
       "pauses the site on all; per site: shared = true in\n"
       "[[delivery.sites]]. Without [redis] it changes nothing.",
       [](const toml::node& n, Config& c) {
         return GetBool(n, &c.delivery.defaults.shared);
       }},
      {"delivery", "pool", "\"\"",
       "The egress pool of [[delivery.sources]] sites use; empty: the\n"
       "sources in pool \"default\" (none: the kernel picks the address).",
       [](const toml::node& n, Config& c) {
         auto s = GetString(n, "a pool name");
         if (s.ok()) c.delivery.defaults.pool = *s;
         return s.status();
       }},
      {"delivery", "backoff_patterns",
       "[\"(?i)too many (connections|messages)\", \"(?i)rate limit\", "
       "\"(?i)try (again )?later\"]",
       "Replies whose text matches one of these (RE2) pause the site for\n"
       "backoff_pause and run it at backoff_rate_factor of its rates for as\n"
       "long again. A 421 reply always does.",
       [](const toml::node& n, Config& c) {
         auto l = GetStringList(n, "RE2 patterns");
         if (!l.ok()) return l.status();
         c.delivery.backoff.clear();
         for (const std::string& p : *l) {
           delivery::BackoffRule r;
           r.pattern = p;
           c.delivery.backoff.push_back(r);
         }
         return absl::OkStatus();
       }},
      {"delivery", "backoff_pause", "\"5m\"", "See backoff_patterns.",
       [](const toml::node& n, Config& c) {
         return GetDuration(n, absl::Seconds(1), absl::Hours(24),
                            &c.delivery_backoff_pause);
       }},
      {"delivery", "backoff_rate_factor", "0.5", "See backoff_patterns.",
       [](const toml::node& n, Config& c) {
         const char* what = "a number from 0.01 to 1";
         if (!n.is_number()) return Expected(what, n);
         double v = *n.value<double>();
         if (v < 0.01 || v > 1) return Expected(what, n);
         c.delivery_backoff_factor = v;
         return absl::OkStatus();
       }},
      {"delivery", "max_pending", "20000",
       "Recipients each shard holds in memory waiting for a connection;\n"
       "the rest wait in the queue on disk.",
       [](const toml::node& n, Config& c) {
         return GetInt(n, 100, 10000000, &c.delivery.max_pending_per_shard);
       }},
      {"delivery", "sites", "[]",
       "Per-destination overrides, later entries winning. Each matches\n"
       "recipient domains or the MX hosts of a provider:\n"
       "  [[delivery.sites]]\n"
       "  mx_suffixes = [\".google.com\"]     # every domain hosted there\n"
       "  max_connections = 10\n"
       "  message_rate = \"50/s\"\n"
       "  [[delivery.sites]]\n"
       "  domains = [\"example.com\"]         # or \"*.example.com\"\n"
       "  tls = \"verify\"\n"
       "  suspended = true                  # hold its mail in the queue\n"
       "Keys: domains, mx_suffixes, max_connections, messages_per_connection,\n"
       "recipients_per_transaction, message_rate, connection_rate, tls,\n"
       "tls_policy, suspended, pool, shared. tls_policy: \"auto\" (DANE when\n"
       "the MX answer is DNSSEC-validated, then MTA-STS), \"dane\" (required:\n"
       "no validated, usable TLSA record, no delivery), \"mta-sts\" (MTA-STS\n"
       "only), \"off\" (neither; for a receiver whose policy is broken;\n"
       "logged). tls = \"dane\" and tls = \"mta-sts\" say the same.",
       SetSites},
      {"delivery", "sources", "[]",
       "Egress sources: the local address and EHLO name to send from,\n"
       "grouped in pools and picked by weight for each connection:\n"
       "  [[delivery.sources]]\n"
       "  name = \"ip1\"\n"
       "  address = \"192.0.2.10\"\n"
       "  ehlo = \"mta1.example.com\"\n"
       "  pool = \"default\"\n"
       "  weight = 1",
       SetSources},
      {"smarthost", "host", "\"\"",
       "Relay mail through this host instead of delivering by MX (an ISP,\n"
       "Amazon SES, Gmail, Office 365...). Empty: deliver directly.",
       [](const toml::node& n, Config& c) {
         auto s = GetString(n, "a host name or IP address");
         if (s.ok()) c.delivery.smarthost.host = *s;
         return s.status();
       }},
      {"smarthost", "port", "587",
       "587 (with tls = \"starttls\") or 465 (with tls = \"implicit\").",
       [](const toml::node& n, Config& c) {
         return GetInt(n, 1, 65535, &c.delivery.smarthost.port);
       }},
      {"smarthost", "tls", "\"starttls\"",
       "\"starttls\" (required), \"implicit\" (TLS from the first byte, port\n"
       "465) or \"none\" (a relay on a trusted network only).",
       [](const toml::node& n, Config& c) {
         const char* what = "\"starttls\", \"implicit\" or \"none\"";
         auto s = GetString(n, what);
         if (!s.ok()) return s.status();
         if (*s == "starttls") {
           c.delivery.smarthost.tls = delivery::SmarthostTls::kStartTls;
         } else if (*s == "implicit") {
           c.delivery.smarthost.tls = delivery::SmarthostTls::kImplicit;
         } else if (*s == "none") {
           c.delivery.smarthost.tls = delivery::SmarthostTls::kNone;
         } else {
           return Expected(what, n);
         }
         return absl::OkStatus();
       }},
      {"smarthost", "verify", "true",
       "Check the relay's certificate chain and name (delivery.ca_file).",
       [](const toml::node& n, Config& c) {
         return GetBool(n, &c.delivery.smarthost.verify);
       }},
      {"smarthost", "user", "\"\"", "AUTH user name; empty: no AUTH.",
       [](const toml::node& n, Config& c) {
         auto s = GetString(n, "a user name");
         if (s.ok()) c.delivery.smarthost.user = *s;
         return s.status();
       }},
      {"smarthost", "password", "\"\"",
       "AUTH password (Gmail, Office 365: an app password). Keep this file\n"
       "readable by Peregrine's user only.",
       [](const toml::node& n, Config& c) {
         auto s = GetString(n, "a password");
         if (s.ok()) c.delivery.smarthost.password = *s;
         return s.status();
       }},
      {"smarthost", "domains", "[]",
       "Relay only mail for these recipient domains (\"*.example.com\"\n"
       "too); empty: all mail.",
       [](const toml::node& n, Config& c) {
         auto l = GetStringList(n, "domains");
         if (l.ok()) c.delivery.smarthost.domains = *l;
         return l.status();
       }},
      {"tls_report", "enabled", "false",
       "TLS reporting (RFC 8460): count per recipient domain the sessions\n"
       "that succeeded and those a TLS policy (MTA-STS, DANE) failed, and\n"
       "once per interval send each domain that publishes _smtp._tls TXT\n"
       "(\"v=TLSRPTv1; rua=...\") its gzipped JSON report: mailto: through\n"
       "this daemon's relay listener (queued and DKIM-signed like any\n"
       "mail), https: POSTed. Needs listen.relay for mailto:.",
       [](const toml::node& n, Config& c) {
         return GetBool(n, &c.tls_report);
       }},
      {"tls_report", "interval", "\"24h\"",
       "The report period: a UTC day, as RFC 8460 asks. Shorter only to\n"
       "try it out.",
       [](const toml::node& n, Config& c) {
         return GetDuration(n, absl::Seconds(5), absl::Hours(24 * 7),
                            &c.tls_report_interval);
       }},
      {"tls_report", "organization", "\"\"",
       "organization-name in the reports; empty: server.hostname.",
       [](const toml::node& n, Config& c) {
         auto s = GetString(n, "a name");
         if (s.ok()) c.tls_report_organization = *s;
         return s.status();
       }},
      {"tls_report", "contact", "\"\"",
       "contact-info in the reports; empty: mailto:postmaster@HOSTNAME.",
       [](const toml::node& n, Config& c) {
         auto s = GetString(n, "a mailto: or https: URI, or an address");
         if (s.ok()) c.tls_report_contact = *s;
         return s.status();
       }},
      {"tls_report", "from", "\"\"",
       "The report mail's sender; empty: tlsrpt-noreply@HOSTNAME. Its\n"
       "domain's DKIM key ([dkim] keys) signs the report, as RFC 8460 5.3\n"
       "asks.",
       [](const toml::node& n, Config& c) {
         auto s = GetString(n, "an address");
         if (s.ok()) c.tls_report_from = *s;
         return s.status();
       }},
  };
}

}  // namespace peregrine::config_schema
