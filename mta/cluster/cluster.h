// Cluster: this node's part in a cluster of Peregrine nodes sharing what
// receivers see as one sender, through Redis (issue 20).
//
// Per shard (made on the shard's thread by the delivery engine, through
// Limits()): a RedisClient and the shard's SharedLimits: each shared
// site's message and connection rates (SharedRate, GCRA in Redis) and its
// connection leases (SharedSlots).
// On shard 0 (Start()): the events reader, which polls the stream
// PREFIX:events every `poll` for what other nodes did: a site backed off
// ("pause": handed to the hook, which hands it to the site's shard), or a
// suppression added or removed ("suppress", "unsuppress"). The shared
// suppression list is the hash PREFIX:suppression (field SCOPE\tADDRESS,
// value the entry's CSV line); each node's own list (RocksDB) is its cache,
// loaded from the hash at start and after an outage, and kept in step by
// the stream. Local changes (ShareSuppression) go to the hash and the
// stream from shard 0, in order; while Redis is down they wait (up to
// kMaxOutbox; past that every local entry is shared again on return).
//
// Redis down or slow: every request fails fast (redis_client.h) and each
// limit falls back to its local share (limit / expected_nodes); the
// outage is logged and counted once a minute; when Redis answers again
// sharing resumes, the suppressions that waited are pushed and the
// shared list is read again.
//
// Threads: Limits(s) and what it returns on shard s; ShareSuppression and
// the counters from any thread; the hooks are called on shard 0.
// Lifetime: made before the shards start (and before the suppression
// list has other threads), attached to the group before it starts, Stop()
// before the shards stop (it closes each shard's client there and waits),
// freed after the delivery engines (their sites hold shares of it).
// Answers arriving after Stop() are dropped by the clients.
#pragma once

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "mta/bounce/suppression.h"
#include "mta/cluster/redis_client.h"
#include "mta/delivery/shaping.h"
#include "mta/delivery/shared_limits.h"
#include "mta/shard/shard_group.h"

namespace peregrine::cluster {

struct ClusterOptions {
  RedisOptions redis;
  std::string prefix = "peregrine:";  // Of every key.
  std::string node;                   // This node's name, unique.
  int expected_nodes = 1;             // Sizes each local share.
  absl::Duration poll = absl::Milliseconds(200);
};

struct ClusterHooks {
  // Another node backed off `site` until `until` (on shard 0).
  std::function<void(const std::string& site, const delivery::Backoff&,
                     absl::Time until)>
      paused;
  // Entries other nodes added or removed, or found in the shared list (on
  // shard 0); to apply with SuppressionList::ApplyShared.
  std::function<void(std::vector<bounce::SuppressionEntry> entries,
                     bool removed)>
      suppressions;
  // Redis is back after local changes were dropped from the outbox: share
  // every local entry added since `since` again (on shard 0).
  std::function<void(absl::Time since)> reshare;
  // Entries handed to `suppressions` not yet written (any thread): past
  // kMaxBacklog the reader waits (the shared list is read a page at a
  // time, so a node joining a big list holds at most a page more).
  std::function<size_t()> backlog;
};

class Cluster {
 public:
  static constexpr size_t kMaxOutbox = 100000;
  static constexpr int kStreamLength = 100000;  // Entries Redis keeps.
  static constexpr size_t kMaxBacklog = 20000;

  // For `shards` shards; Attach() the group before it starts.
  Cluster(ClusterOptions options, int shards, ClusterHooks hooks);
  ~Cluster();
  Cluster(const Cluster&) = delete;
  Cluster& operator=(const Cluster&) = delete;

  void Attach(shard::ShardGroup* group) { group_ = group; }
  // On shard `shard`'s thread: its limits (made on the first call).
  delivery::SharedLimits* Limits(int shard);
  // Any thread, once the shards run: the events reader on shard 0.
  void Start();
  // Any thread: closes every shard's client on its shard and waits.
  void Stop();
  // Any thread: a change this node made to its suppression list.
  void ShareSuppression(const bounce::SuppressionEntry& entry, bool removed);

  const ClusterOptions& options() const { return options_; }
  // Any thread: Redis answered the last request; commands sent and failed
  // on every shard; seconds Redis was down, summed.
  bool up() const { return up_.load(std::memory_order_relaxed); }
  uint64_t commands() const { return counters_.sent.load(); }
  uint64_t failures() const { return counters_.failed.load(); }
  double outage_seconds() const;
  // Suppression changes shared, and received from other nodes.
  uint64_t shared_out() const { return shared_out_.load(); }
  uint64_t shared_in() const { return shared_in_.load(); }

 private:
  class ShardLimits;
  struct Shard {
    std::unique_ptr<RedisClient> client;
    std::unique_ptr<ShardLimits> limits;
  };
  struct Change {
    bounce::SuppressionEntry entry;
    bool removed = false;
  };

  RedisClient* Client(int shard);
  // Shard 0: the events reader's cycle.
  void Tick();
  void Sync();
  void SyncPage(std::string cursor, std::string last_id);
  void Read();
  void Flush();
  void Down(const absl::Status& why);
  void Up();
  absl::Time DownSince() const;
  std::string Key(absl::string_view name) const;

  const ClusterOptions options_;
  shard::ShardGroup* group_ = nullptr;
  const ClusterHooks hooks_;
  std::vector<Shard> shards_;  // Each touched on its own shard alone.

  // Shard 0's.
  std::string last_id_;  // Of the stream; empty: a sync is due.
  // A sync paused between pages (the backlog is full): where it goes on.
  std::string sync_cursor_;
  std::string sync_last_id_;
  bool reading_ = false;
  bool flushing_ = false;
  bool stopped_ = false;
  shard::Reactor::TimerId timer_ = 0;
  absl::Time logged_ = absl::InfinitePast();
  absl::Time reshare_since_ = absl::InfiniteFuture();

  absl::Mutex mu_;
  std::deque<Change> outbox_ ABSL_GUARDED_BY(mu_);
  absl::Time dropped_since_ ABSL_GUARDED_BY(mu_) = absl::InfiniteFuture();

  RedisCounters counters_;
  std::atomic<bool> up_{true};
  std::atomic<int64_t> outage_ns_{0};
  std::atomic<int64_t> down_since_ns_{0};  // Unix ns; while !up().
  std::atomic<uint64_t> shared_out_{0};
  std::atomic<uint64_t> shared_in_{0};
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

}  // namespace peregrine::cluster
