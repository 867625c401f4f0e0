// Internal to the configuration (mta/config*.cc): the schema's row type,
// the value parsers rows use, and each group of sections' rows. The table
// is split by concern: reception (config_reception.cc), storage and
// signing (config_storage.cc), delivery (config_delivery.cc); config.cc
// puts the rows together and drives parsing, defaults and checks.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "mta/config.h"

// toml++ is built with exceptions (Debian's shared library only exports that
// ABI); they never leave the config files: errors become absl::Status.
#include <toml++/toml.h>

namespace peregrine::config_schema {

// toml++ speaks std::string_view; this abseil has its own string_view.
inline absl::string_view Sv(std::string_view s) { return {s.data(), s.size()}; }

using Apply = absl::Status (*)(const toml::node& node, Config& config);

// One setting: where it lives, its default as TOML, what
// `config defaults` says of it, and how a value is checked and applied.
struct Setting {
  const char* section;
  const char* key;
  const char* default_toml;
  const char* doc;
  Apply apply;
};

// "expected WHAT, got TYPE VALUE".
absl::Status Expected(absl::string_view what, const toml::node& got);
absl::StatusOr<std::string> GetString(const toml::node& node,
                                      absl::string_view what);
// An array of strings; a lone string is refused (see config_values.cc).
absl::StatusOr<std::vector<std::string>> GetStringList(const toml::node& node,
                                                       absl::string_view what);
absl::Status GetInt(const toml::node& node, int64_t min, int64_t max, int* out);
// "30s", "5m", "2h", "500ms", "1h30m", "5d".
absl::Status GetDuration(const toml::node& node, absl::Duration min,
                         absl::Duration max, absl::Duration* out);
// "512MiB", "1GiB", "100MB", "4096" (bytes).
absl::Status GetSize(const toml::node& node, uint64_t min, uint64_t max,
                     uint64_t* out);
absl::Status GetBool(const toml::node& node, bool* out);

// Arrays of tables ([[delivery.sites]], [[admin.webhooks]]) whose keys
// are parsed one by one; errors name the entry and its line. An Entry has
// an `int line`.
template <typename Entry>
using EntryKey = absl::Status (*)(const toml::node& value, Entry& entry);

template <typename Entry>
inline absl::Status ParseEntries(
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

// [server] [listen] [relay] [auth] [tls] [smtp]
std::vector<Setting> ReceptionSettings();
// [queue] [events] [dns] [dkim]
std::vector<Setting> StorageSettings();
// [delivery] [[delivery.sites]] [[delivery.sources]] [smarthost]
std::vector<Setting> DeliverySettings();
// [bounce] [suppression]
std::vector<Setting> BounceSettings();
// [local]
std::vector<Setting> LocalSettings();
// [redis] (config_cluster.cc).
std::vector<Setting> ClusterSettings();

}  // namespace peregrine::config_schema
