// The delivery engine: one DeliveryShard per shard.
//
// The path of a recipient:
//   1. Its shard claims it from the queue when it is due (Store::Claim).
//   2. Routing: smarthost, or MX look-up (dns/) -> the domain's MTA-STS
//      policy (engine_sts.cc: cached, or looked up and fetched while the
//      job waits on this shard, never sent meanwhile) -> site key (MX
//      rollup, or the domain itself when a per-domain rule applies; with
//      "|mta-sts" when a policy is enforced, the hosts it allows only) ->
//      the shard that owns the site (routing.h). Recipients of one message for
//      one domain travel together as a Job, handed over with SubmitTo.
//   3. The owning shard keeps its sites (site.h: ready queue, shaping,
//      suspension; pure logic) and their connections. Idle connections are
//      reused for the next job; new ones open while the site allows.
//   4. A connection (outbound_connection.h) tries the site's hosts and
//      carries transactions.
//   5. Every recipient's outcome (delivered, deferred with its next
//      attempt, failed, expired after the maximum age) is published on the
//      outcome Bus (mta/outcome): the queue update, the log and the event
//      log are its consumers.
// Everything here runs on shard threads; a site and its connections live
// on one shard and need no locks. Time is the reactor's (Reactor::Now()),
// so tests can drive it.
//
// Lifetime: a DeliveryShard lives as long as its shard's reactor runs; its
// sites live in it (a site quiet for ten minutes is forgotten) and outlive
// their connections, whose own rule is in outbound_connection.h.
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "dns/resolver.h"
#include "mta/bounce/classifier.h"
#include "mta/delivery/mta_sts.h"
#include "mta/delivery/mta_sts_cache.h"
#include "mta/delivery/mta_sts_fetcher.h"
#include "mta/delivery/outbound_connection.h"
#include "mta/delivery/policy.h"
#include "mta/delivery/shaping.h"
#include "mta/delivery/shared_limits.h"
#include "mta/delivery/site.h"
#include "mta/outcome/outcome.h"
#include "mta/shard/reactor.h"
#include "mta/shard/shard_group.h"
#include "queue/store.h"
#include "tls/tls.h"

namespace peregrine::delivery {

class DeliveryShard;

// What the receiver's published policies make of a site: MTA-STS (its
// mode and MX patterns), DANE (the MX answer was validated).
struct SitePolicy {
  StsMode sts = StsMode::kNone;
  std::vector<std::string> sts_mx;
  bool dane = false;
  bool dane_required = false;
  // The site key's suffix that keeps sites of different policies apart.
  std::string KeySuffix() const;
};

// The RFC 8460 result type of a connection failure at a site under a
// policy (MTA-STS enforced, DANE); "" when the site has none or the
// failure is not TLS's.
std::string TlsFailureType(const Site& site, const Reply& failure);

// What a site under an MTA-STS policy in testing mode would have refused
// in this delivery (RFC 8461 5: delivered, and said); "" when nothing.
std::string StsTestingNote(const Site& site, const Where& where);

// What every shard's engine shares; set up before the shards start.
struct EngineContext {
  queue::Store* queue = nullptr;
  shard::ShardGroup* group = nullptr;
  // Where outcomes go; its first consumer writes them to the queue.
  const outcome::Bus* outcomes = nullptr;
  DeliveryOptions options;
  std::string helo;  // The EHLO name when no source gives one.
  std::shared_ptr<const tls::ClientContext> tls;
  // What kind of failure each reply reports (nullptr: none classified).
  std::shared_ptr<const bounce::Classifier> classifier;
  // The resolver of a shard (on that shard's thread).
  std::function<dns::Resolver*(int shard)> resolver;
  // Per shard, once started.
  std::vector<std::unique_ptr<DeliveryShard>> engines;
  // MTA-STS (both or neither; null: not looked up). They outlive the
  // shards' work: the fetcher is stopped before the shards go.
  StsCache* sts_cache = nullptr;
  StsFetcher* sts_fetcher = nullptr;
  // Limits shared with other nodes (the shard's; null or unset: none).
  std::function<SharedLimits*(int shard)> shared_limits;
  // Each shard's engine copies `options` at start; Reload() replaces it.
  // How often each shard looks for due recipients.
  absl::Duration poll_interval = absl::Milliseconds(100);
};

class DeliveryShard : public ConnectionHost {
 public:
  DeliveryShard(shard::Reactor& reactor, EngineContext& context);
  ~DeliveryShard() override;
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
  void Reload(std::shared_ptr<const DeliveryOptions> options,
              std::shared_ptr<const bounce::Classifier> classifier = nullptr);
  // On the shard's thread: claims what is due up to `until` (not only what
  // is due now) until that time passes, starting at once. After a site
  // resumes, for the mail it parked in the queue.
  void ClaimAhead(absl::Time until);
  // On the shard's thread: an operator's bounce or delete (admin API) of
  // the recipients waiting at this shard's sites that `wanted` names
  // (message id, index): each gets its operator outcome (see
  // outcome::OperatorFailure) and leaves. Recipients on a connection now
  // are not touched: their attempt decides. Returns how many it took.
  using RecipientKey = std::pair<queue::MessageId, uint32_t>;
  size_t TakeForOperator(const absl::flat_hash_set<RecipientKey>& wanted,
                         bool deleted);
  // On the shard's thread (the owner of `key`'s site): another node backed
  // off the site; it pauses here too, for the time left of `until`. A site
  // this shard has not made yet takes the pause when it is made.
  void PeerBackedOff(const std::string& key, const Backoff& backoff,
                     absl::Time until);
  // On the shard's thread: new classification rules (SIGHUP).
  void SetClassifier(std::shared_ptr<const bounce::Classifier> classifier) {
    classifier_ = std::move(classifier);
  }
  // Outbound connections open now (any thread).
  int open_connections() const { return open_.load(std::memory_order_relaxed); }
  // Recipients this shard claimed that have no outcome yet (any thread).
  int outstanding() const {
    return outstanding_.load(std::memory_order_relaxed);
  }

  // ConnectionHost.
  shard::Reactor& reactor() override { return reactor_; }
  dns::Resolver* resolver() override;
  std::shared_ptr<const tls::ClientContext> tls() override {
    return context_.tls;
  }
  std::string default_helo() override { return context_.helo; }
  std::shared_ptr<const DeliveryOptions> options() override { return options_; }
  std::mt19937_64& rng() override { return rng_; }
  bool draining() override { return draining_; }
  bool GiveJob(Site& site, OutboundConnection* conn) override;
  void Result(Site& site, Job& job, const queue::RecipientRecord& r,
              const Reply& reply, const Where& where) override;
  void Opened() override { open_.fetch_add(1, std::memory_order_relaxed); }
  void Closed() override { open_.fetch_sub(1, std::memory_order_relaxed); }
  void Gone(Site& site, OutboundConnection* conn, bool ever_ready,
            const Reply& failure) override;

 private:
  void Poll();
  void SweepSites();
  void Route(std::unique_ptr<Job> job);
  // Hands the job to the shard that owns its site.
  void HandOver(std::unique_ptr<Job> job, std::string key,
                std::vector<dns::MxHost> mx, bool smarthost,
                SitePolicy policy = {});
  void AddToSite(std::unique_ptr<Job> job, std::string site_key,
                 std::vector<dns::MxHost> mx, bool smarthost,
                 SitePolicy policy);
  // The site key of a domain routed by MX.
  std::string KeyFor(const std::string& domain,
                     const std::vector<dns::MxHost>& mx) const;

  // MTA-STS (engine_sts.cc). After the MX look-up: the domain's policy
  // from the cache, or looked up (TXT, then the fetch) while the job waits
  // in sts_waiting_; then ApplySts.
  void RouteByMx(std::unique_ptr<Job> job, std::vector<dns::MxHost> mx);
  // `refresh`: a cached policy's periodic look; no job waits for it.
  void LookUpSts(const std::string& domain, bool refresh);
  void FetchSts(const std::string& domain, const std::string& id, bool refresh);
  void StsFetched(const std::string& domain, bool refresh,
                  absl::StatusOr<StsPolicy> policy);
  // The waiting jobs of `domain` go on: with the policy, or none.
  void StsKnown(const std::string& domain, const StsPolicy* policy);
  void ApplySts(std::unique_ptr<Job> job, std::vector<dns::MxHost> mx,
                SitePolicy site, const StsPolicy& policy);
  // An announced policy could not be fetched lately: deferred until the
  // grace ends, then sent as though there were none (RFC 8461 3.3).
  void StsUnavailable(std::unique_ptr<Job> job, std::vector<dns::MxHost> mx,
                      SitePolicy site, const StsCache::Failure& failure);
  // Hands over with `site`'s key suffix (no MTA-STS policy applies).
  void HandOverByMx(std::unique_ptr<Job> job, std::vector<dns::MxHost> mx,
                    SitePolicy site);
  // A site's options: the configuration's, then its MTA-STS policy's.
  SiteOptions OptionsOf(const Site& site) const;
  void Pump(Site& site);
  void Wake(Site& site, absl::Time when);
  // Gives a site whose options say `shared` its share of the cluster's
  // limits (or takes it away).
  void ShareSite(Site& site);
  // A 421, a back-off pattern, or a deferral classified rate_limited or
  // ip_reputation pauses the site and slows it down.
  void ApplyBackoff(Site& site, const Reply& reply,
                    const bounce::Verdict& verdict);
  bounce::Verdict Classify(const Reply& reply) const;
  // Puts what a suspended site holds past its limit back in the queue.
  void ParkExcess(Site& site);
  // The job's campaign or tenant is held through the admin API (reads the
  // envelope, only while one is).
  bool Held(Job& job);
  // Puts a held campaign's or tenant's job back in the queue for kParkFor,
  // unattempted.
  void ParkHeld(std::unique_ptr<Job> job);

  // Outcomes: published, then the claim is released.
  void Publish(outcome::Outcome o, const Job& job);
  void Delivered(Site& site, Job& job, const queue::RecipientRecord& r,
                 const Reply& reply, const Where& where);
  // `verdict`: the reply's classification when the caller has it.
  void Failed(Job& job, const queue::RecipientRecord& r, const Reply& reply,
              const Site* site = nullptr, const Where* where = nullptr,
              const bounce::Verdict* verdict = nullptr);
  void Deferred(Job& job, const queue::RecipientRecord& r, const Reply& reply,
                const Site* site = nullptr, const Where* where = nullptr,
                const bounce::Verdict* verdict = nullptr);
  void DeferAll(Job& job, const Reply& reply);
  // The envelope's sender, size, tags and time received, read once.
  void ReadEnvelope(Job& job);
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
  std::shared_ptr<const bounce::Classifier> classifier_;
  absl::flat_hash_map<std::string, std::unique_ptr<Site>> sites_;
  std::mt19937_64 rng_;
  RetrySchedule retry_;
  bool draining_ = false;
  shard::Reactor::TimerId poll_timer_ = 0;
  absl::Time last_sweep_ = absl::InfinitePast();
  absl::Time claim_until_ = absl::InfinitePast();  // ClaimAhead().
  SharedLimits* shared_ = nullptr;
  // Pauses other nodes asked for sites this shard has not made yet.
  struct PeerPause {
    Backoff backoff;
    absl::Time until;
  };
  absl::flat_hash_map<std::string, PeerPause> peer_pauses_;
  // Jobs waiting for their domain's MTA-STS policy, by domain.
  struct StsWaiting {
    std::unique_ptr<Job> job;
    std::vector<dns::MxHost> mx;
    SitePolicy site;
  };
  absl::flat_hash_map<std::string, std::vector<StsWaiting>> sts_waiting_;
  // Recipients ParkHeld() put back since the last log line about them.
  int held_unlogged_ = 0;
  absl::Time held_logged_ = absl::InfinitePast();
  std::atomic<int> open_{0};
  std::atomic<int> outstanding_{0};
};

}  // namespace peregrine::delivery
