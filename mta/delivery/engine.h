// The delivery engine: one DeliveryShard per shard.
//
// The path of a recipient:
//   1. Its shard claims it from the queue when it is due (Store::Claim).
//   2. Routing: smarthost, or MX look-up (dns/) -> site key (MX rollup, or
//      the domain itself when a per-domain rule applies) -> the shard that
//      owns the site (routing.h). Recipients of one message for one domain
//      travel together as a Job, handed over with SubmitTo.
//   3. The owning shard keeps per site: a ready queue, the shaping state
//      (token buckets, concurrency window, pause after back-off) and its
//      connections. Idle connections are reused for the next job; new ones
//      open while the window and the connection rate allow.
//   4. A connection (OutboundConnection) tries MX hosts in preference
//      order, each host's IPv4 then IPv6 addresses, moving on after a
//      connect failure or a 4xx/5xx greeting; it drives a sans-I/O
//      smtp::ClientSession, with TLS per the site's policy.
//   5. Every recipient's outcome goes to the queue (Store::Update) and to
//      the log: delivered, deferred (with its next attempt), failed, or
//      expired after the maximum age.
// Everything here runs on shard threads; a site and its connections live
// on one shard and need no locks.
//
// Lifetime of an OutboundConnection: it owns itself, on its site's shard.
// It ends only through Gone(), which clears the shared `alive_` flag,
// cancels its timers, leaves the site's idle list, and deletes it from a
// deferred task (never from inside one of its own callbacks). A DNS answer
// or connect completion that arrives later finds `alive_` false and does
// nothing; socket callbacks also check `conn_->closing()`, and a socket's
// Close() completion runs after every other callback of that socket, so
// a retry on the next address never sees the old socket's completions.
// Timer callbacks are cancelled in Finish(), CloseSocket() and Gone(), and
// ArmTimer() does nothing once the connection is closing.
#pragma once

#include <atomic>
#include <deque>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "dns/resolver.h"
#include "mta/delivery/policy.h"
#include "mta/delivery/shaping.h"
#include "mta/shard/reactor.h"
#include "mta/shard/shard_group.h"
#include "queue/store.h"
#include "tls/tls.h"

namespace peregrine::delivery {

class DeliveryShard;

// What every shard's engine shares; set up before the shards start.
struct EngineContext {
  queue::Store* queue = nullptr;
  shard::ShardGroup* group = nullptr;
  DeliveryOptions options;
  std::string helo;  // The EHLO name when no source gives one.
  std::shared_ptr<const tls::ClientContext> tls;
  // The resolver of a shard (on that shard's thread).
  std::function<dns::Resolver*(int shard)> resolver;
  // Per shard, once started.
  std::vector<std::unique_ptr<DeliveryShard>> engines;
  // Each shard's engine copies `options` at start; Reload() replaces it.
  // How often each shard looks for due recipients.
  absl::Duration poll_interval = absl::Milliseconds(100);
};

// Recipients of one message for one domain, delivered together.
struct Job {
  queue::MessageId message = 0;
  std::string domain;
  std::vector<queue::RecipientRecord> recipients;
  int claimed_by = 0;  // The shard whose claims these are.
  absl::Time received = absl::InfinitePast();  // Known once read.
  // Held back by a suspended site: for how long so far, and since when
  // (InfinitePast: not held now). Not counted toward the maximum age.
  absl::Duration held = absl::ZeroDuration();
  absl::Time held_since = absl::InfinitePast();
};

struct Site;
class OutboundConnection;

class DeliveryShard {
 public:
  DeliveryShard(shard::Reactor& reactor, EngineContext& context);
  ~DeliveryShard();
  DeliveryShard(const DeliveryShard&) = delete;
  DeliveryShard& operator=(const DeliveryShard&) = delete;

  // On the shard's thread: starts looking for due work.
  void Start();
  // Stops taking new work; idle connections say QUIT, busy ones after
  // their message. Safe from any thread (posts to the shard).
  void BeginDrain();
  // On the shard's thread: new limits, rules, sources and smarthost (SIGHUP).
  // Sites take their new options at once; open connections finish as they
  // began.
  void Reload(std::shared_ptr<const DeliveryOptions> options);
  // Outbound connections open now (any thread).
  int open_connections() const { return open_.load(std::memory_order_relaxed); }
  // Recipients this shard claimed that have no outcome yet (any thread).
  int outstanding() const {
    return outstanding_.load(std::memory_order_relaxed);
  }

 private:
  friend class OutboundConnection;

  void Poll();
  void SweepSites();
  void Route(std::unique_ptr<Job> job);
  void AddToSite(std::unique_ptr<Job> job, std::string site_key,
                 std::vector<dns::MxHost> mx, bool smarthost);
  void Pump(Site& site);
  void Wake(Site& site, absl::Time when);
  void OpenConnection(Site& site);
  // A connection is ready for a job; false: none for it now (it idles).
  bool GiveJob(Site& site, OutboundConnection* conn);
  void ConnectionGone(Site& site, OutboundConnection* conn, bool ever_ready,
                      const std::string& failure);
  void ApplyBackoff(Site& site, int code, absl::string_view text);

  // Outcomes, written to the queue and logged.
  struct Delivery {
    std::string host;  // MX host and address, TLS: for the log.
    std::string ip;
    std::string tls;
  };
  void Delivered(const Job& job, const queue::RecipientRecord& r,
                 const std::string& reply, const Delivery& d);
  void Failed(Job& job, const queue::RecipientRecord& r,
              const std::string& reply);
  void Deferred(Job& job, const queue::RecipientRecord& r,
                const std::string& reply);
  void DeferAll(Job& job, const std::string& reply, bool permanent);
  void Finish(const queue::RecipientRecord& r, queue::RecipientState state,
              absl::Time next, const std::string& reply, int claimed_by,
              bool attempted = true,
              absl::Duration held_more = absl::ZeroDuration());
  // A suspended site holds at most kMaxHeldJobs transactions in memory (and
  // claims); the rest go back to the queue for kParkFor, unattempted.
  static constexpr size_t kMaxHeldJobs = 500;
  static constexpr absl::Duration kParkFor = absl::Minutes(1);
  void ParkExcess(Site& site);
  // Options of a site: by its MX hosts, or the smarthost's name.
  SiteOptions OptionsFor(bool smarthost, absl::string_view domain,
                         const std::vector<dns::MxHost>& mx) const;
  // A [[delivery.sites]] rule names this domain: it is a site of its own,
  // through the smarthost too.
  bool HasDomainRule(absl::string_view domain) const;

  shard::Reactor& reactor_;
  EngineContext& context_;
  std::shared_ptr<const DeliveryOptions> options_;
  std::unique_ptr<BackoffRules> backoff_;
  absl::flat_hash_map<std::string, std::unique_ptr<Site>> sites_;
  std::mt19937_64 rng_;
  RetrySchedule retry_;
  bool draining_ = false;
  shard::Reactor::TimerId poll_timer_ = 0;
  absl::Time last_sweep_ = absl::InfinitePast();
  std::atomic<int> open_{0};
  std::atomic<int> outstanding_{0};
};

}  // namespace peregrine::delivery
