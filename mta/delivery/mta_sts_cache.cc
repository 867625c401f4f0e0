#include "mta/delivery/mta_sts_cache.h"

#include <algorithm>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"

namespace peregrine::delivery {
namespace {

// Drops the oldest half of `map` (by the time `when` gives) once it is at
// `limit`: bounded memory, recent knowledge kept.
template <typename Map, typename When>
void Bound(Map& map, size_t limit, When when) {
  if (map.size() < limit) return;
  std::vector<absl::Time> times;
  times.reserve(map.size());
  for (const auto& [key, value] : map) times.push_back(when(value));
  std::nth_element(times.begin(), times.begin() + times.size() / 2,
                   times.end());
  absl::Time median = times[times.size() / 2];
  absl::erase_if(map,
                 [&](const auto& kv) { return when(kv.second) <= median; });
}

}  // namespace

std::string StsCache::Encode(const StsCacheEntry& entry) {
  nlohmann::json j = {
      {"mode", std::string(StsModeName(entry.policy.mode))},
      {"mx", entry.policy.mx},
      {"max_age", entry.policy.max_age},
      {"id", entry.id},
      {"fetched", absl::ToUnixSeconds(entry.fetched)},
  };
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

std::optional<StsCacheEntry> StsCache::Decode(absl::string_view text) {
  nlohmann::json j =
      nlohmann::json::parse(text.begin(), text.end(), nullptr, false);
  if (!j.is_object()) return std::nullopt;
  auto mode = j.find("mode");
  auto mx = j.find("mx");
  auto max_age = j.find("max_age");
  auto id = j.find("id");
  auto fetched = j.find("fetched");
  if (mode == j.end() || !mode->is_string() || mx == j.end() ||
      !mx->is_array() || max_age == j.end() || !max_age->is_number_integer() ||
      id == j.end() || !id->is_string() || fetched == j.end() ||
      !fetched->is_number_integer()) {
    return std::nullopt;
  }
  StsCacheEntry e;
  const std::string& m = mode->get_ref<const std::string&>();
  if (m == "enforce") {
    e.policy.mode = StsMode::kEnforce;
  } else if (m == "testing") {
    e.policy.mode = StsMode::kTesting;
  } else if (m == "none") {
    e.policy.mode = StsMode::kNone;
  } else {
    return std::nullopt;
  }
  for (const nlohmann::json& p : *mx) {
    if (!p.is_string()) return std::nullopt;
    e.policy.mx.push_back(p.get<std::string>());
  }
  e.policy.max_age = max_age->get<int64_t>();
  if (e.policy.max_age < 0 || e.policy.max_age > 31557600) return std::nullopt;
  e.id = id->get<std::string>();
  e.fetched = absl::FromUnixSeconds(fetched->get<int64_t>());
  return e;
}

absl::StatusOr<size_t> StsCache::Load(absl::Time now) {
  if (table_ == nullptr) return 0;
  std::vector<std::string> stale;
  absl::flat_hash_map<std::string, StsCacheEntry> kept;
  absl::Status s = table_->Scan(
      kKeyPrefix, [&](absl::string_view key, absl::string_view value) {
        std::string domain(key.substr(sizeof(kKeyPrefix) - 1));
        std::optional<StsCacheEntry> e = Decode(value);
        if (!e || e->Expires() <= now) {
          stale.emplace_back(key);
        } else {
          kept[domain] = *std::move(e);
        }
        return true;
      });
  if (!s.ok()) return s;
  for (const std::string& key : stale) {
    absl::Status d = table_->Delete(key);
    if (!d.ok()) return d;
  }
  absl::MutexLock lock(&mu_);
  policies_ = std::move(kept);
  return policies_.size();
}

std::optional<StsCacheEntry> StsCache::Get(const std::string& domain,
                                           absl::Time now) const {
  absl::MutexLock lock(&mu_);
  auto it = policies_.find(domain);
  if (it == policies_.end() || it->second.Expires() <= now) {
    return std::nullopt;
  }
  return it->second;
}

absl::Status StsCache::Put(const std::string& domain,
                           const StsCacheEntry& entry) {
  if (table_ != nullptr) {
    absl::Status s =
        table_->Put(absl::StrCat(kKeyPrefix, domain), Encode(entry));
    if (!s.ok()) return s;
  }
  absl::MutexLock lock(&mu_);
  Bound(policies_, kMaxRemembered,
        [](const StsCacheEntry& e) { return e.fetched; });
  policies_[domain] = entry;
  failures_.erase(domain);
  none_.erase(domain);
  return absl::OkStatus();
}

void StsCache::Checked(const std::string& domain, absl::Time now) {
  absl::MutexLock lock(&mu_);
  auto it = policies_.find(domain);
  if (it != policies_.end()) it->second.checked = now;
}

void StsCache::NoPolicy(const std::string& domain, absl::Time now) {
  absl::MutexLock lock(&mu_);
  Bound(none_, kMaxRemembered, [](absl::Time t) { return t; });
  none_[domain] = now;
}

bool StsCache::KnownNone(const std::string& domain, absl::Time now) const {
  absl::MutexLock lock(&mu_);
  auto it = none_.find(domain);
  return it != none_.end() && now - it->second < kNoPolicyFor;
}

StsCache::Failure StsCache::Failed(const std::string& domain, absl::Time now,
                                   std::string why, bool invalid) {
  absl::MutexLock lock(&mu_);
  Bound(failures_, kMaxRemembered, [](const Failure& f) { return f.last; });
  auto [it, fresh] =
      failures_.try_emplace(domain, Failure{now, now, "", false});
  // A failure long after the last one starts a new run of them.
  if (now - it->second.last > absl::Hours(24)) it->second.since = now;
  it->second.last = now;
  it->second.why = std::move(why);
  it->second.invalid = invalid;
  return it->second;
}

std::optional<StsCache::Failure> StsCache::FailureOf(
    const std::string& domain) const {
  absl::MutexLock lock(&mu_);
  auto it = failures_.find(domain);
  if (it == failures_.end()) return std::nullopt;
  return it->second;
}

size_t StsCache::size() const {
  absl::MutexLock lock(&mu_);
  return policies_.size();
}

}  // namespace peregrine::delivery
