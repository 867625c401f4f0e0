// Routing: recipient domain -> site -> owning shard. Pure functions.
//
// A site is the set of domains that share an MX set ("MX rollup"): all the
// domains hosted by one provider get one site, so per-site limits hold per
// receiving provider, not per domain name. The site key is the sorted,
// lower-cased set of MX host names (preferences ignored: they do not change
// who receives). A domain with no MX (implicit MX) is its own site. The
// shard of a site is a fixed hash of its key, stable across restarts, so a
// site's limits live on exactly one shard and need no locks.
#pragma once

#include <string>
#include <vector>

#include "dns/resolver.h"

namespace peregrine::delivery {

std::string SiteKey(const std::vector<dns::MxHost>& mx);
int ShardForSite(absl::string_view site, int shards);

}  // namespace peregrine::delivery
