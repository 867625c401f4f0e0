// [redis] made into the cluster's options (mta/cluster): addresses
// resolved, the password file read, the TLS context made. For the daemon
// and `peregrine doctor`; errors name the setting.
#pragma once

#include "absl/status/statusor.h"
#include "mta/cluster/cluster.h"
#include "mta/config.h"

namespace peregrine {

// Blocking (name resolution, files): at start-up, not on a shard.
absl::StatusOr<cluster::ClusterOptions> ClusterOptionsFrom(
    const Config& config);

}  // namespace peregrine
