// SharedLimits: what a site's limits share with the other nodes of a
// cluster (issue 20). mta/cluster implements it with Redis; a node alone
// has none, and a site shares only when its options say `shared`.
//
// The site keeps its own token buckets and window as the fast path; a
// shared site also asks its SiteShare before each message and connection,
// which answers from tokens and leases it reserved ahead (never a round
// trip per message).
//
// Threads: a SharedLimits belongs to one shard, as do the SiteShares it
// makes; everything is called on that shard's thread.
// Lifetime: the site owns its SiteShare; the shard's engine holds the
// SharedLimits pointer, which outlives the engine's sites. A share's
// pending request to Redis that completes after the share is gone does
// nothing.
#pragma once

#include <memory>
#include <string>

#include "absl/time/time.h"
#include "mta/delivery/policy.h"
#include "mta/delivery/shaping.h"

namespace peregrine::delivery {

class SiteShare {
 public:
  virtual ~SiteShare() = default;
  // A message token of the cluster's rate. False: not now; *wake is when
  // to ask again.
  virtual bool TakeMessage(absl::Time now, absl::Time* wake) = 0;
  // A token of the cluster's connection rate; false as above.
  virtual bool TakeConnection(absl::Time now, absl::Time* wake) = 0;
  // Connections this node may hold open at the site now (its leases of
  // the cluster's max_connections), given that it would like `wanted`;
  // when fewer, *wake is when to ask again.
  virtual int ConnectionSlots(int wanted, absl::Time now, absl::Time* wake) = 0;
};

class SharedLimits {
 public:
  virtual ~SharedLimits() = default;
  // The share of a site whose options say `shared`.
  virtual std::unique_ptr<SiteShare> ForSite(const std::string& key,
                                             const SiteOptions& options) = 0;
  // This node backed off `key` (a 421, a back-off pattern): the other
  // nodes pause it for as long, at the same reduced rates.
  virtual void BackedOff(const std::string& key, const Backoff& backoff) = 0;
};

}  // namespace peregrine::delivery
