#include "mta/delivery/routing.h"

#include <algorithm>

#include "absl/strings/ascii.h"
#include "absl/strings/str_join.h"

namespace peregrine::delivery {

std::string SiteKey(const std::vector<dns::MxHost>& mx) {
  std::vector<std::string> hosts;
  for (const dns::MxHost& h : mx) {
    std::string host = absl::AsciiStrToLower(h.host);
    while (!host.empty() && host.back() == '.') host.pop_back();
    hosts.push_back(std::move(host));
  }
  std::sort(hosts.begin(), hosts.end());
  hosts.erase(std::unique(hosts.begin(), hosts.end()), hosts.end());
  return absl::StrJoin(hosts, ",");
}

int ShardForSite(absl::string_view site, int shards) {
  if (shards <= 1) return 0;
  uint64_t h = 1469598103934665603ull;  // FNV-1a: fixed across restarts.
  for (char c : site) {
    h ^= static_cast<uint8_t>(c);
    h *= 1099511628211ull;
  }
  return static_cast<int>(h % static_cast<uint64_t>(shards));
}

}  // namespace peregrine::delivery
