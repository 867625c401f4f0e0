// One blocking exchange with Redis, for `peregrine doctor`: connect (TLS
// and AUTH as configured), send the commands pipelined, read a reply to
// each. Never on a shard (it blocks up to the timeouts).
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "mta/cluster/redis_client.h"

namespace peregrine::cluster {

// The replies in order (an error reply as a failed status in its place);
// a failure to connect, to agree on TLS, to authenticate or to read, as
// the whole result's status.
absl::StatusOr<std::vector<absl::StatusOr<RedisValue>>> BlockingRedis(
    const RedisEndpoint& endpoint, const RedisOptions& options,
    const std::vector<std::vector<std::string>>& commands);

}  // namespace peregrine::cluster
