// `peregrine doctor`'s look at [redis] (many nodes, mta/cluster): each
// address answers (TLS and AUTH as configured), runs the scripts the
// shared limits need (Redis 6.2 or later for ACL users; scripts with
// TIME), and lets this node write under its key prefix; expected_nodes is
// more than one.
#pragma once

#include <vector>

#include "mta/config.h"
#include "mta/doctor/doctor.h"

namespace peregrine::doctor {

// Nothing when [redis] has no addresses (this node is alone).
std::vector<Finding> ClusterChecks(const Config& config);

}  // namespace peregrine::doctor
