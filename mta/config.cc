// Over 800 lines: one schema table (every setting's key, default, doc and
// parser) and the helpers it needs. Splitting the table by section is part
// of issue 13.
#include "mta/config.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <sstream>
#include <thread>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

// toml++ is built with exceptions (Debian's shared library only exports that
// ABI); they never leave this file: parse errors become absl::Status.
#include <toml++/toml.h>

#include "base/files.h"
#include "dns/message.h"

namespace peregrine {
namespace {

// toml++ speaks std::string_view; this abseil has its own string_view.
absl::string_view Sv(std::string_view s) { return {s.data(), s.size()}; }

using Apply = absl::Status (*)(const toml::node& node, Config& config);

struct Setting {
  const char* section;
  const char* key;
  const char* default_toml;
  const char* doc;
  Apply apply;
};

absl::Status Expected(absl::string_view what, const toml::node& got) {
  std::ostringstream os;
  got.visit([&os](auto&& v) { os << v; });
  return absl::InvalidArgumentError(absl::StrCat(
      "expected ", what, ", got ",
      Sv(toml::impl::node_type_friendly_names[static_cast<int>(got.type())]),
      " ", os.str()));
}

absl::StatusOr<std::string> GetString(const toml::node& node,
                                      absl::string_view what) {
  if (!node.is_string()) return Expected(what, node);
  return std::string(*node.value<std::string_view>());
}

// An array of strings. A lone string is refused: for a key that takes a
// list, a string is a sign the value was misunderstood (the [listen] keys,
// where one address is the usual case, take GetAddressList instead).
absl::StatusOr<std::vector<std::string>> GetStringList(const toml::node& node,
                                                       absl::string_view what) {
  std::vector<std::string> out;
  if (node.is_string()) {
    return Expected(absl::StrCat("a list of ", what, " in brackets: [\"",
                                 Sv(*node.value<std::string_view>()), "\"]"),
                    node);
  }
  const toml::array* array = node.as_array();
  if (array == nullptr) return Expected(absl::StrCat("a list of ", what), node);
  for (const toml::node& item : *array) {
    if (!item.is_string()) {
      return Expected(absl::StrCat("a list of ", what, " (strings)"), item);
    }
    out.push_back(std::string(*item.value<std::string_view>()));
  }
  return out;
}

absl::Status GetInt(const toml::node& node, int64_t min, int64_t max,
                    int* out) {
  std::string what = absl::StrCat("an integer from ", min, " to ", max);
  if (!node.is_integer()) return Expected(what, node);
  int64_t v = *node.value<int64_t>();
  if (v < min || v > max) return Expected(what, node);
  *out = static_cast<int>(v);
  return absl::OkStatus();
}

// "30s", "5m", "2h", "500ms", "1h30m", "5d".
absl::Status GetDuration(const toml::node& node, absl::Duration min,
                         absl::Duration max, absl::Duration* out) {
  std::string what = absl::StrCat("a duration from ", absl::FormatDuration(min),
                                  " to ", absl::FormatDuration(max),
                                  " such as \"30s\", \"5m\", \"2h\"");
  if (!node.is_string()) return Expected(what, node);
  std::string text(*node.value<std::string_view>());
  absl::Duration d;
  int64_t days = 0;
  if (!text.empty() && text.back() == 'd' &&
      absl::SimpleAtoi(absl::string_view(text).substr(0, text.size() - 1),
                       &days)) {
    d = absl::Hours(24 * days);
  } else if (!absl::ParseDuration(text, &d)) {
    return Expected(what, node);
  }
  if (d < min || d > max) return Expected(what, node);
  *out = d;
  return absl::OkStatus();
}

// "512MiB", "1GiB", "100MB", "4096" (bytes).
absl::Status GetSize(const toml::node& node, uint64_t min, uint64_t max,
                     uint64_t* out) {
  std::string what = absl::StrCat("a size from ", min, " to ", max,
                                  " bytes such as \"512MiB\" or \"2GB\"");
  if (!node.is_string()) return Expected(what, node);
  std::string text(*node.value<std::string_view>());
  size_t digits = 0;
  while (digits < text.size() &&
         (absl::ascii_isdigit(text[digits]) || text[digits] == '.')) {
    ++digits;
  }
  double number = 0;
  if (!absl::SimpleAtod(text.substr(0, digits), &number)) {
    return Expected(what, node);
  }
  std::string unit = absl::AsciiStrToLower(
      absl::StripAsciiWhitespace(absl::string_view(text).substr(digits)));
  static const std::pair<const char*, double> kUnits[] = {
      {"", 1},      {"b", 1},
      {"kb", 1e3},  {"kib", 1024.0},
      {"mb", 1e6},  {"mib", 1048576.0},
      {"gb", 1e9},  {"gib", 1073741824.0},
      {"tb", 1e12}, {"tib", 1099511627776.0}};
  for (const auto& [name, factor] : kUnits) {
    if (unit == name) {
      double bytes = number * factor;
      if (bytes < static_cast<double>(min) ||
          bytes > static_cast<double>(max)) {
        return Expected(what, node);
      }
      *out = static_cast<uint64_t>(bytes);
      return absl::OkStatus();
    }
  }
  return Expected(what, node);
}

absl::Status GetBool(const toml::node& node, bool* out) {
  if (!node.is_boolean()) return Expected("true or false", node);
  *out = *node.value<bool>();
  return absl::OkStatus();
}

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

// A list of names as TOML, kept for the life of the process (the schema
// holds plain pointers).
const char* TomlList(const std::vector<std::string>& names) {
  static auto* storage = new std::vector<std::unique_ptr<std::string>>;
  std::string out = "[";
  for (size_t i = 0; i < names.size(); ++i) {
    absl::StrAppend(&out, i ? ", " : "", "\"", names[i], "\"");
  }
  out += "]";
  storage->push_back(std::make_unique<std::string>(std::move(out)));
  return storage->back()->c_str();
}

absl::Status SetDkimKeys(const toml::node& node, Config& c) {
  const char* kWhat =
      "a list of keys: [[dkim.keys]] tables with domain, "
      "selector and key_file";
  const toml::array* array = node.as_array();
  if (array == nullptr) return Expected(kWhat, node);
  c.dkim.keys.clear();
  int index = 0;
  for (const toml::node& item : *array) {
    ++index;
    const toml::table* table = item.as_table();
    if (table == nullptr) return Expected(kWhat, item);
    std::string where =
        absl::StrCat("entry ", index, " (line ", item.source().begin.line, ")");
    dkim::KeySpec spec;
    for (auto&& [key, value] : *table) {
      absl::string_view name = Sv(key.str());
      absl::Status status;
      if (name == "domain" || name == "selector" || name == "key_file" ||
          name == "algorithm") {
        auto text = GetString(value, "a string");
        if (!text.ok()) {
          status = text.status();
        } else if (name == "domain") {
          spec.domain = *text;
        } else if (name == "selector") {
          spec.selector = *text;
        } else if (name == "key_file") {
          spec.key_file = *text;
        } else if (*text != "rsa-sha256" && *text != "ed25519-sha256") {
          status = Expected("\"rsa-sha256\" or \"ed25519-sha256\"", value);
        } else {
          spec.algorithm = *text;
        }
      } else if (name == "match") {
        auto list = GetStringList(value,
                                  "From domains like \"example.com\", "
                                  "\"*.example.com\" or \"*\"");
        if (list.ok()) {
          spec.match = *list;
        } else {
          status = list.status();
        }
      } else {
        status = absl::InvalidArgumentError(absl::StrCat(
            "unknown key '", name,
            "' (keys: domain, selector, key_file, match, algorithm)"));
      }
      if (!status.ok()) {
        return absl::InvalidArgumentError(
            absl::StrCat(where, ": ", name, ": ", status.message()));
      }
    }
    for (auto [name, v] : {std::pair{"domain", &spec.domain},
                           std::pair{"selector", &spec.selector},
                           std::pair{"key_file", &spec.key_file}}) {
      if (v->empty()) {
        return absl::InvalidArgumentError(
            absl::StrCat(where, ": '", name,
                         "' is required (peregrine dkim keygen "
                         "prints a complete entry)"));
      }
    }
    auto names = dkim::Signer::Create({spec.domain, spec.selector}, nullptr);
    if (!names.ok() && !absl::StrContains(names.status().message(), "no key")) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ": ", names.status().message()));
    }
    c.dkim.keys.push_back(std::move(spec));
  }
  return absl::OkStatus();
}

// [[delivery.sites]] and [[delivery.sources]]: arrays of tables whose
// keys are parsed one by one; errors name the entry and its line.
template <typename Entry>
using EntryKey = absl::Status (*)(const toml::node& value, Entry& entry);

template <typename Entry>
absl::Status ParseEntries(
    const toml::node& node, const char* what,
    const std::vector<std::pair<const char*, EntryKey<Entry>>>& keys,
    std::vector<Entry>& out) {
  const toml::array* array = node.as_array();
  if (array == nullptr) return Expected(what, node);
  out.clear();
  int index = 0;
  for (const toml::node& item : *array) {
    ++index;
    const toml::table* table = item.as_table();
    if (table == nullptr) return Expected(what, item);
    std::string where =
        absl::StrCat("entry ", index, " (line ", item.source().begin.line, ")");
    Entry entry;
    entry.line = static_cast<int>(item.source().begin.line);
    for (auto&& [key, value] : *table) {
      absl::string_view name = Sv(key.str());
      EntryKey<Entry> apply = nullptr;
      std::vector<std::string> names;
      for (const auto& [k, f] : keys) {
        names.push_back(k);
        if (name == k) apply = f;
      }
      absl::Status status =
          apply != nullptr ? apply(value, entry)
                           : absl::InvalidArgumentError(absl::StrCat(
                                 "unknown key '", name,
                                 "' (keys: ", absl::StrJoin(names, ", "), ")"));
      if (!status.ok()) {
        return absl::InvalidArgumentError(
            absl::StrCat(where, ": ", name, ": ", status.message()));
      }
    }
    out.push_back(std::move(entry));
  }
  return absl::OkStatus();
}

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
         delivery::TlsMode m;
         absl::Status s = GetTlsMode(n, &m);
         if (s.ok()) r.tls = m;
         return s;
       }},
      {"suspended",
       [](const toml::node& n, R& r) {
         bool b = false;
         absl::Status s = GetBool(n, &b);
         if (s.ok()) r.suspended = b;
         return s;
       }},
      {"pool",
       [](const toml::node& n, R& r) {
         auto v = GetString(n, "a pool name");
         if (v.ok()) r.pool = *v;
         return v.status();
       }},
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

const std::vector<Setting>& Schema() {
  static const auto* schema = new std::vector<Setting>{
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
      {"queue", "durability", "\"fsync\"",
       "\"fsync\": a message is on stable storage before the 250 reply.\n"
       "\"none\": UNSAFE, the queue is written but not synced; a power\n"
       "failure or kernel crash can lose mail that was acknowledged.",
       [](const toml::node& n, Config& c) {
         auto s = GetString(n, "\"fsync\" or \"none\"");
         if (!s.ok()) return s.status();
         if (*s != "fsync" && *s != "none") {
           return Expected("\"fsync\" or \"none\"", n);
         }
         c.queue_fsync = *s == "fsync";
         return absl::OkStatus();
       }},
      {"queue", "min_free_space", "\"512MiB\"",
       "New mail is refused with 452 (try later) while the queue's file\n"
       "system has less free space; deliveries go on and free it.",
       [](const toml::node& n, Config& c) {
         return GetSize(n, 0, uint64_t{1} << 50, &c.queue_min_free_bytes);
       }},
      {"queue", "keep_finished", "\"3d\"",
       "How long `peregrine queue show ID` can still find a message after\n"
       "it finished (delivered, failed or expired): its envelope and each\n"
       "recipient's outcome and last reply are kept, not the body. \"0s\":\n"
       "none kept.",
       [](const toml::node& n, Config& c) {
         return GetDuration(n, absl::ZeroDuration(), absl::Hours(24 * 365),
                            &c.queue_keep_finished);
       }},
      {"queue", "body_blob_files", "true",
       "Bodies are kept in the spool (<data_dir>/queue/spool), written\n"
       "once. This applies only to bodies a version before the spool left\n"
       "in RocksDB: keep them in blob files, not rewritten by compaction.",
       [](const toml::node& n, Config& c) {
         return GetBool(n, &c.queue_body_blob_files);
       }},
      {"queue", "spool_reserve", "\"256MiB\"",
       "Spool space kept written and ready, in 64 MiB segments (rounded\n"
       "up). Commits into it write no file-system metadata: about 10% more\n"
       "messages/s and lower latency while a burst fits in it. Written at\n"
       "start and when the queue is idle; delivered mail's segments refill\n"
       "it. 0: the spool only grows its files (use 0 on copy-on-write file\n"
       "systems such as btrfs or ZFS, where overwriting saves nothing).",
       [](const toml::node& n, Config& c) {
         return GetSize(n, 0, uint64_t{1} << 40, &c.queue_spool_reserve_bytes);
       }},
      {"queue", "block_cache", "\"32MiB\"",
       "RocksDB block cache for the queue's indexes and records.",
       [](const toml::node& n, Config& c) {
         return GetSize(n, 1 << 20, uint64_t{1} << 40,
                        &c.queue_block_cache_bytes);
       }},
      {"events", "path", "\"\"",
       "The JSON event log: one object per line for every message received\n"
       "or refused and every delivery attempt's outcome (delivered,\n"
       "deferred, failed, expired), with the remote reply's code, enhanced\n"
       "status and text kept apart. Empty: none. A relative path is under\n"
       "server.data_dir. SIGHUP reopens it (for logrotate).",
       [](const toml::node& n, Config& c) {
         auto s = GetString(n, "a file path");
         if (!s.ok()) return s.status();
         c.events_path = *s;
         return absl::OkStatus();
       }},
      {"events", "stdout", "false",
       "Write the events to standard output instead (containers); the\n"
       "human log stays on standard error.",
       [](const toml::node& n, Config& c) {
         return GetBool(n, &c.events_stdout);
       }},
      {"events", "max_size", "\"100MiB\"",
       "Rotate the file when it would pass this size: FILE becomes\n"
       "FILE.1, FILE.1 FILE.2, and so on. \"0\": never (leave it to\n"
       "logrotate).",
       [](const toml::node& n, Config& c) {
         return GetSize(n, 0, uint64_t{1} << 50, &c.events_max_bytes);
       }},
      {"events", "keep", "10",
       "Rotated files kept; the oldest beyond this is removed.",
       [](const toml::node& n, Config& c) {
         return GetInt(n, 0, 1000, &c.events_keep);
       }},
      {"dns", "servers", "[]",
       "DNS servers as \"ip\" or \"ip:port\" (\"[ipv6]:port\"). Empty: the\n"
       "ones in /etc/resolv.conf. Use a resolver that validates and does\n"
       "not filter: receivers' MX and blocklists depend on it.",
       [](const toml::node& n, Config& c) {
         auto list = GetStringList(n, "addresses like \"127.0.0.1:53\"");
         if (!list.ok()) return list.status();
         c.dns_servers.clear();
         for (const std::string& text : *list) {
           auto address = shard::SocketAddress::Parse(text);
           if (!address.ok()) {
             // A bare address means port 53.
             auto bare = shard::SocketAddress::Parse(
                 text.find(':') != std::string::npos ? "[" + text + "]:53"
                                                     : text + ":53");
             if (!bare.ok()) {
               return absl::InvalidArgumentError(absl::StrCat(
                   "'", text,
                   "' is not an IP address: DNS servers are \"ip\" or "
                   "\"ip:port\", e.g. \"127.0.0.1:53\" (a name would need DNS "
                   "to be found)"));
             }
             address = bare;
           }
           c.dns_servers.push_back(address->ToString());
         }
         return absl::OkStatus();
       }},
      {"dns", "timeout", "\"5s\"", "How long to wait for an answer, per try.",
       [](const toml::node& n, Config& c) {
         return GetDuration(n, absl::Milliseconds(100), absl::Minutes(1),
                            &c.dns_timeout);
       }},
      {"dns", "tries", "2",
       "Tries per server before a look-up fails (transiently).",
       [](const toml::node& n, Config& c) {
         return GetInt(n, 1, 10, &c.dns_tries);
       }},
      {"dns", "cache_size", "10000",
       "Answers cached per shard (positive and negative, by TTL); the least\n"
       "recently used go first.",
       [](const toml::node& n, Config& c) {
         return GetInt(n, 0, 10000000, &c.dns_cache_entries);
       }},
      {"dkim", "keys", "[]",
       "Signing keys. Each signs the mail whose From domain its `match`\n"
       "covers (default: its own domain; \"*\" signs everything, e.g. a\n"
       "platform signature). Several matching keys give several signatures.\n"
       "A key that cannot be loaded holds (defers) its mail: never unsigned.\n"
       "`peregrine dkim keygen` makes a key and prints its entry:\n"
       "  [[dkim.keys]]\n"
       "  domain = \"example.com\"\n"
       "  selector = \"s2025\"\n"
       "  key_file = \"/etc/peregrine/dkim/example.com/s2025.key\"\n"
       "  match = [\"example.com\", \"*.example.com\"]   # optional\n"
       "  algorithm = \"ed25519-sha256\"   # optional: checked against the "
       "file",
       SetDkimKeys},
      {"dkim", "headers", TomlList(dkim::DefaultSignedHeaders()),
       "Header fields signed, each as often as it occurs.",
       [](const toml::node& n, Config& c) {
         auto list = GetStringList(n, "header names");
         if (!list.ok()) return list.status();
         c.dkim.headers = *list;
         return absl::OkStatus();
       }},
      {"dkim", "oversign", TomlList(dkim::DefaultOversignedHeaders()),
       "Header fields signed once more than they occur, so that a copy\n"
       "added in transit breaks the signature.",
       [](const toml::node& n, Config& c) {
         auto list = GetStringList(n, "header names");
         if (!list.ok()) return list.status();
         c.dkim.oversign = *list;
         return absl::OkStatus();
       }},
      {"dkim", "canonicalization", "\"relaxed/relaxed\"",
       "HEADER/BODY, each \"relaxed\" (survives common rewrapping) or\n"
       "\"simple\".",
       [](const toml::node& n, Config& c) {
         const char* what =
             "\"relaxed/relaxed\", \"relaxed/simple\", "
             "\"simple/relaxed\" or \"simple/simple\"";
         auto s = GetString(n, what);
         if (!s.ok()) return s.status();
         std::vector<std::string> parts = absl::StrSplit(*s, '/');
         auto canon = [](const std::string& p, dkim::Canon* out) {
           if (p == "relaxed")
             *out = dkim::Canon::kRelaxed;
           else if (p == "simple")
             *out = dkim::Canon::kSimple;
           else
             return false;
           return true;
         };
         if (parts.size() != 2 || !canon(parts[0], &c.dkim.header_canon) ||
             !canon(parts[1], &c.dkim.body_canon)) {
           return Expected(what, n);
         }
         return absl::OkStatus();
       }},
      {"dkim", "expiration", "\"0s\"",
       "Signatures expire this long after signing (x= tag); \"0s\": never.",
       [](const toml::node& n, Config& c) {
         return GetDuration(n, absl::ZeroDuration(), absl::Hours(24 * 3650),
                            &c.dkim.expiration);
       }},
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
       "suspended, pool.",
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
  };
  return *schema;
}

std::string Position(absl::string_view source, const toml::source_region& r) {
  return absl::StrCat(source, ":", r.begin.line, ":", r.begin.column);
}

int Distance(absl::string_view a, absl::string_view b) {
  std::vector<int> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = static_cast<int>(j);
  for (size_t i = 1; i <= a.size(); ++i) {
    int diag = row[0];
    row[0] = static_cast<int>(i);
    for (size_t j = 1; j <= b.size(); ++j) {
      int up = row[j];
      row[j] = std::min(
          {row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diag = up;
    }
  }
  return row[b.size()];
}

std::string UnknownKey(absl::string_view section, absl::string_view key) {
  std::vector<std::string> known;
  std::string best;
  int best_distance = 3;  // Only suggest near misses.
  for (const Setting& s : Schema()) {
    if (section != s.section) continue;
    known.push_back(s.key);
    int d = Distance(key, s.key);
    if (d < best_distance) {
      best_distance = d;
      best = s.key;
    }
  }
  std::string out = absl::StrCat("unknown key '", section, ".", key, "'");
  if (!best.empty()) absl::StrAppend(&out, "; did you mean '", best, "'?");
  absl::StrAppend(&out, " (keys in [", section,
                  "]: ", absl::StrJoin(known, ", "), ")");
  return out;
}

std::vector<std::string> Sections() {
  std::vector<std::string> out;
  for (const Setting& s : Schema()) {
    if (out.empty() || out.back() != s.section) out.push_back(s.section);
  }
  return out;
}

const Setting* Find(absl::string_view section, absl::string_view key) {
  for (const Setting& s : Schema()) {
    if (section == s.section && key == s.key) return &s;
  }
  return nullptr;
}

std::string TomlText(const toml::node& node) {
  std::ostringstream os;
  node.visit([&os](auto&& v) { os << v; });
  return os.str();
}

// Applies every key of `table` to `config`, adding one line per problem.
void ApplyTable(const toml::table& table, absl::string_view source,
                bool record_lines, Config& config,
                std::vector<std::string>& errors) {
  std::vector<std::string> sections = Sections();
  for (auto&& [section_key, section_node] : table) {
    std::string section(section_key.str());
    if (std::find(sections.begin(), sections.end(), section) ==
        sections.end()) {
      errors.push_back(absl::StrCat(
          Position(source, section_key.source()), ": unknown section [",
          section, "] (sections: ", absl::StrJoin(sections, ", "), ")"));
      continue;
    }
    const toml::table* keys = section_node.as_table();
    if (keys == nullptr) {
      errors.push_back(absl::StrCat(
          Position(source, section_key.source()), ": '", section,
          "' must be a section: write [", section, "] and its keys below it"));
      continue;
    }
    for (auto&& [key, node] : *keys) {
      const Setting* setting = Find(section, Sv(key.str()));
      if (setting == nullptr) {
        errors.push_back(absl::StrCat(Position(source, key.source()), ": ",
                                      UnknownKey(section, Sv(key.str()))));
        continue;
      }
      std::string name = absl::StrCat(section, ".", Sv(key.str()));
      absl::Status status = setting->apply(node, config);
      if (!status.ok()) {
        errors.push_back(absl::StrCat(Position(source, node.source()), ": ",
                                      name, ": ", status.message()));
        continue;
      }
      config.values[name] = TomlText(node);
      if (record_lines) {
        config.lines[name] = static_cast<int>(key.source().begin.line);
      }
    }
  }
}

absl::StatusOr<toml::table> ParseToml(absl::string_view text,
                                      absl::string_view source) {
  try {
    return toml::parse(std::string_view(text.data(), text.size()),
                       std::string_view(source.data(), source.size()));
  } catch (const toml::parse_error& e) {
    return absl::InvalidArgumentError(
        absl::StrCat(Position(source, e.source()),
                     ": TOML syntax error: ", Sv(e.description())));
  }
}

// Checks that span several keys.
void CrossCheck(const Config& config, std::vector<std::string>& errors) {
  if (absl::Status d = delivery::Validate(config.delivery); !d.ok()) {
    errors.push_back(absl::StrCat(config.source, ": ", d.message()));
  }
  if (!config.allow_open_relay) {
    for (const shard::Cidr& net : config.trusted_networks) {
      if (!net.TooBroad()) continue;
      errors.push_back(absl::StrCat(
          config.Where("relay.trusted_networks"), ": ", net.ToString(),
          " trusts a large part of the internet: anyone there could send "
          "mail through this server (an open relay). List only the networks "
          "of your own machines, such as \"10.0.0.0/8\", and let everyone "
          "else authenticate on submission; if you really mean it, set "
          "relay.allow_open_relay = true"));
    }
  }
  for (size_t i = 0; i < config.listeners.size(); ++i) {
    for (const auto& a : config.listeners[i].addresses) {
      for (size_t j = i; j < config.listeners.size(); ++j) {
        size_t count = 0;
        for (const auto& b : config.listeners[j].addresses) {
          if (a.ToString() == b.ToString() && a.port() != 0) ++count;
        }
        if ((i == j && count > 1) || (i != j && count > 0)) {
          errors.push_back(absl::StrCat(
              config.Where(config.listeners[j].key), ": address ", a.ToString(),
              " is also used by ", config.listeners[i].key,
              "; each listener needs its own port"));
        }
      }
    }
  }
}

}  // namespace

std::string Config::Where(absl::string_view key) const {
  auto it = lines.find(std::string(key));
  if (it == lines.end()) return absl::StrCat(key, " (built-in default)");
  return absl::StrCat(source, ":", it->second, ": ", key);
}

int Config::EffectiveShards() const {
  if (shards > 0) return shards;
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) == 0) {
    int n = CPU_COUNT(&set);
    if (n > 0) return n;
  }
  return std::max(1u, std::thread::hardware_concurrency());
}

std::string Config::EffectiveHostname() const {
  if (!hostname.empty()) return hostname;
  char buf[256] = {};
  if (gethostname(buf, sizeof(buf) - 1) != 0 || buf[0] == '\0') {
    return "localhost";
  }
  return buf;
}

std::string DefaultConfigToml() {
  std::string out =
      "# Peregrine configuration. Every key is listed with its default;\n"
      "# delete what you do not change. Check a file with\n"
      "#   peregrine config check FILE\n"
      "# Durations are strings such as \"30s\", \"5m\", \"2h\", \"5d\".\n";
  std::string section;
  for (const Setting& s : Schema()) {
    if (section != s.section) {
      section = s.section;
      absl::StrAppend(&out, "\n[", section, "]\n");
    } else {
      out += "\n";
    }
    for (absl::string_view line : absl::StrSplit(s.doc, '\n')) {
      absl::StrAppend(&out, "# ", line, "\n");
    }
    absl::StrAppend(&out, s.key, " = ", s.default_toml, "\n");
  }
  return out;
}

Config DefaultConfig() {
  static const Config* defaults = [] {
    auto* config = new Config;
    config->source = "built-in defaults";
    auto table = ParseToml(DefaultConfigToml(), "built-in defaults");
    std::vector<std::string> errors;
    if (table.ok())
      ApplyTable(*table, "built-in defaults", false, *config, errors);
    // The defaults are ours: a failure here is a bug, caught by the tests.
    if (!table.ok() || !errors.empty()) {
      log::Error("config", "built-in defaults do not parse: %s",
                 table.ok() ? errors.front() : table.status().message());
      std::abort();
    }
    return config;
  }();
  return *defaults;
}

absl::StatusOr<Config> ParseConfig(absl::string_view text,
                                   absl::string_view source) {
  auto table = ParseToml(text, source);
  if (!table.ok()) return table.status();
  Config config = DefaultConfig();
  config.source = std::string(source);
  std::vector<std::string> errors;
  ApplyTable(*table, source, true, config, errors);
  for (delivery::BackoffRule& r : config.delivery.backoff) {
    r.pause = config.delivery_backoff_pause;
    r.rate_factor = config.delivery_backoff_factor;
  }
  config.delivery.on_421.pause = config.delivery_backoff_pause;
  config.delivery.on_421.rate_factor = config.delivery_backoff_factor;
  if (errors.empty()) CrossCheck(config, errors);
  if (config.tls_cert_file.empty() != config.tls_key_file.empty()) {
    errors.push_back(absl::StrCat(
        source,
        ": tls.cert_file and tls.key_file go together: set both, or "
        "neither for a self-signed certificate"));
  }
  // toml++ walks tables in key order; report in file order instead.
  auto position = [&source](const std::string& e) {
    std::pair<int, int> pos{0, 0};
    absl::string_view rest =
        absl::string_view(e).substr(std::min(e.size(), source.size() + 1));
    std::vector<absl::string_view> parts = absl::StrSplit(rest, ':');
    if (parts.size() >= 2) {
      (void)absl::SimpleAtoi(parts[0], &pos.first);
      (void)absl::SimpleAtoi(parts[1], &pos.second);
    }
    return pos;
  };
  std::stable_sort(errors.begin(), errors.end(),
                   [&](const std::string& a, const std::string& b) {
                     return position(a) < position(b);
                   });
  if (!errors.empty()) {
    return absl::InvalidArgumentError(absl::StrJoin(errors, "\n"));
  }
  return config;
}

absl::StatusOr<Config> LoadConfigFile(const std::string& path) {
  // A directory reads as an empty file and a device as an endless one:
  // only a regular file (or a link to one) of sane size is a configuration.
  constexpr off_t kMaxBytes = 16 << 20;
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) {
    return absl::NotFoundError(
        absl::StrCat(path, ": cannot read the configuration file: ",
                     CannotReadReason(path, errno)));
  }
  if (S_ISDIR(st.st_mode)) {
    return absl::InvalidArgumentError(absl::StrCat(
        path,
        ": is a directory, not a configuration file: give the path of the "
        "TOML file itself (e.g. ",
        path, path.empty() || path.back() != '/' ? "/" : "",
        "peregrine.toml)"));
  }
  if (!S_ISREG(st.st_mode)) {
    return absl::InvalidArgumentError(
        absl::StrCat(path,
                     ": is not a regular file (a device, pipe or socket): "
                     "give the path of a TOML file"));
  }
  if (st.st_size > kMaxBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": ", st.st_size,
                     " bytes is too large for a configuration file (at "
                     "most 16 MiB): is it the right file?"));
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::NotFoundError(
        absl::StrCat(path, ": cannot read the configuration file: ",
                     CannotReadReason(path, errno)));
  }
  std::stringstream buffer;
  buffer << in.rdbuf();
  return ParseConfig(buffer.str(), path);
}

std::vector<std::string> ConfigWarnings(const Config& config) {
  std::vector<std::string> out;
  for (const shard::Cidr& net : config.trusted_networks) {
    if (net.IsPrivate()) continue;
    out.push_back(absl::StrCat(
        config.Where("relay.trusted_networks"), ": ", net.ToString(),
        " is not a private or loopback network: every client there may "
        "relay mail to any domain without AUTH; make sure you control all of "
        "it"));
  }
  std::string host = config.EffectiveHostname();
  if (!absl::StrContains(absl::StripSuffix(host, "."), '.')) {
    out.push_back(absl::StrCat(
        config.hostname.empty() ? "server.hostname (built-in default: the "
                                  "machine's name)"
                                : config.Where("server.hostname"),
        ": '", host,
        "' is not a fully qualified domain name; receivers distrust or "
        "refuse mail whose HELO is not one. Set server.hostname = "
        "\"mail.example.com\" (a name whose A record and PTR point at this "
        "server)"));
  }
  return out;
}

std::string Config::EventsFilePath() const {
  if (events_path.empty() || events_path[0] == '/') return events_path;
  return absl::StrCat(data_dir, "/", events_path);
}

bool IsReloadable(absl::string_view key) {
  if (key == "delivery.enabled" || key == "delivery.ca_file") return false;
  return key == "server.log_level" || absl::StartsWith(key, "dkim.") ||
         absl::StartsWith(key, "tls.") || absl::StartsWith(key, "auth.") ||
         absl::StartsWith(key, "delivery.") ||
         absl::StartsWith(key, "smarthost.");
}

}  // namespace peregrine
