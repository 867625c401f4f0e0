// The cluster's events stream (PREFIX:events, cluster.h): what one node
// tells the others, one stream entry each, fields "t" (type), "n" (the
// node), then by type:
//   pause        site, until (Unix ms), factor, why: a 421 or back-off
//                pattern at `site`; the others pause it until then
//   suppress     v: the entry's CSV line (bounce/suppression.h)
//   unsuppress   v: the CSV line of the address and scope removed
// ParseEvents reads an XREAD answer. What Redis hands back is trusted no
// further than its shape: a malformed entry is skipped (its id still
// counts, so it is not read again), a pause is at most kMaxPause long.
#pragma once

#include <string>
#include <vector>

#include "absl/time/time.h"
#include "mta/bounce/suppression.h"
#include "mta/cluster/resp.h"
#include "mta/delivery/shaping.h"

namespace peregrine::cluster {

struct ClusterEvent {
  enum class Type { kPause, kSuppress, kUnsuppress };
  Type type = Type::kPause;
  std::string node;
  // kPause.
  std::string site;
  delivery::Backoff backoff{absl::ZeroDuration(), 1.0, ""};
  absl::Time until = absl::InfinitePast();
  // kSuppress, kUnsuppress.
  bounce::SuppressionEntry entry;
};

struct EventBatch {
  std::string last_id;  // Of the last entry read; "" if none.
  std::vector<ClusterEvent> events;
};

constexpr absl::Duration kMaxPause = absl::Hours(24);

EventBatch ParseEvents(const RedisValue& xread, absl::Time now);

// XADD's field list for a pause (after "XADD KEY MAXLEN ~ N *").
std::vector<std::string> PauseFields(const std::string& node,
                                     const std::string& site,
                                     const delivery::Backoff& backoff,
                                     absl::Time until);

}  // namespace peregrine::cluster
