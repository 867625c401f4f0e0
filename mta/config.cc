// Parsing, defaults and checks, driven by the schema: its rows live with
// their concern in config_reception.cc, config_storage.cc and
// config_delivery.cc (config_schema.h).
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
#include "base/files.h"
#include "mta/config_schema.h"

namespace peregrine {
namespace {

using config_schema::Setting;
using config_schema::Sv;

const std::vector<Setting>& Schema() {
  static const auto* schema = [] {
    auto* all = new std::vector<Setting>(config_schema::ReceptionSettings());
    for (auto part :
         {config_schema::StorageSettings(), config_schema::DeliverySettings(),
          config_schema::BounceSettings(), config_schema::LocalSettings(),
          config_schema::ClusterSettings()}) {
      all->insert(all->end(), part.begin(), part.end());
    }
    return all;
  }();
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
  for (const ListenerConfig& l : config.listeners) {
    if (l.kind != ListenerKind::kAdmin || !config.admin_tokens_file.empty()) {
      continue;
    }
    for (const auto& a : l.addresses) {
      if (a.IsLoopback()) continue;
      errors.push_back(absl::StrCat(
          config.Where(l.key), ": ", a.ToString(),
          " is not a loopback address, and the admin port controls the "
          "queue: set admin.tokens_file to a file of bearer tokens (one "
          "per line, `openssl rand -hex 32`), or listen on 127.0.0.1"));
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
         absl::StartsWith(key, "smarthost.") || key == "bounce.rules_file";
}

}  // namespace peregrine
