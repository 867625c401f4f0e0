// Site: the scheduling state of one destination (an MX rollup, a domain
// with a rule of its own, or the smarthost), and Job, the unit it schedules.
//
// Pure logic: no sockets, no clock (every call that needs the time takes
// `now`), no other site. The engine owns its sites (each on the shard that
// owns it, so no locks) and asks one what to do: start a transaction on a
// ready connection (MayStartJob), open connections (ConnectionsToOpen), or
// wait until a time it names. A site keeps a ready queue of jobs, the
// shaping state (token buckets, concurrency window, pause and reduced rates
// after a back-off), which MX hosts failed lately, and suspension: while
// suspended it starts nothing, and the time a job waits held does not count
// toward its maximum age.
#pragma once

#include <deque>
#include <functional>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/time/time.h"
#include "dns/resolver.h"
#include "mta/delivery/mta_sts.h"
#include "mta/delivery/policy.h"
#include "mta/delivery/shaping.h"
#include "mta/delivery/shared_limits.h"
#include "queue/types.h"

namespace peregrine::delivery {

// Recipients of one message for one domain, delivered together.
struct Job {
  queue::MessageId message = 0;
  std::string domain;
  std::vector<queue::RecipientRecord> recipients;
  int claimed_by = 0;  // The shard whose claims these are.
  // From the envelope, once read (have_envelope).
  bool have_envelope = false;
  absl::Time received = absl::InfinitePast();
  std::string sender;
  uint64_t size = 0;
  std::string tenant;
  std::string campaign;
  std::string listener;  // Where it came in (the envelope's).
  // Held back by a suspended site: for how long so far, and since when
  // (InfinitePast: not held now). Not counted toward the maximum age.
  absl::Duration held = absl::ZeroDuration();
  absl::Time held_since = absl::InfinitePast();
  // A TLS policy kept this job from going (TLS reporting, RFC 8460): the
  // policy ("mta-sts", "dane") and the result type ("validation-failure",
  // "sts-policy-fetch-error", ...) its deferral's outcome carries.
  std::string tls_policy;
  std::string tls_failure;

  // `held` plus the time held until `now`.
  absl::Duration HeldUntil(absl::Time now) const;
};

class OutboundConnection;

class Site {
 public:
  // A suspended site holds at most kMaxHeldJobs transactions in memory;
  // the rest go back to the queue for kParkFor, unattempted.
  static constexpr size_t kMaxHeldJobs = 500;
  static constexpr absl::Duration kParkFor = absl::Minutes(1);
  // How long an MX host whose connect failed is tried after the others.
  static constexpr absl::Duration kHostDownFor = absl::Minutes(2);

  Site(std::string key, std::string first_domain, std::vector<dns::MxHost> mx,
       bool smarthost, SiteOptions options);

  const std::string key;
  const std::string domain;  // The first domain routed here: for its rules.
  const std::vector<dns::MxHost> mx;
  const bool smarthost;
  // The receiving domains' MTA-STS policy this site carries out (the engine
  // sets it when it makes the site; the key says it too): kEnforce: `mx`
  // are the hosts the policy names, reached over verified TLS; kTesting:
  // delivered as usual, what would fail is said. `sts_mx`: its patterns.
  StsMode sts = StsMode::kNone;
  std::vector<std::string> sts_mx;
  // DANE (RFC 7672): the MX answer was DNSSEC-validated, so each host's
  // TLSA records are looked up and, when usable, authenticate its TLS
  // (outbound_connection.cc). `dane_required`: a host without them is not
  // used (tls = "dane").
  bool dane = false;
  bool dane_required = false;
  // What TLS policy applied, for outcomes: "mta-sts", "mta-sts-testing",
  // "smarthost", or the site's tls mode ("opportunistic", ...).
  std::string TlsPolicyLabel() const;
  const SiteOptions& options() const { return options_; }
  bool suspended() const { return options_.suspended; }
  // Limits shared with the other nodes (shared_limits.h): asked after the
  // site's own, for each message and connection. Null: this node's alone.
  void SetShare(std::unique_ptr<SiteShare> share) {
    share_ = std::move(share);
    slots_ = std::numeric_limits<int>::max();
  }
  bool shared() const { return share_ != nullptr; }

  // New options (SIGHUP): rates and window at once; suspension holds what
  // waits (and Excess() then says what goes back to the queue), resuming
  // releases it.
  enum class Change { kNone, kSuspended, kResumed };
  Change SetOptions(SiteOptions fresh, absl::Time now);

  // Queues a job, in transactions of at most recipients_per_transaction.
  void Add(std::unique_ptr<Job> job, absl::Time now);
  // While suspended: the jobs past kMaxHeldJobs, newest first, to put back
  // in the queue unattempted (their `held` includes kParkFor).
  std::vector<std::unique_ptr<Job>> Excess(absl::Time now);
  // Everything queued, taken (to defer it when no connection works).
  std::deque<std::unique_ptr<Job>> TakeAll();
  std::unique_ptr<Job> TakeNext();
  // An operator's action (admin API): takes the waiting recipients `match`
  // picks out of their jobs, as jobs of their own (the rest keep waiting).
  std::vector<std::unique_ptr<Job>> TakeMatching(
      const std::function<bool(const queue::RecipientRecord&)>& match);
  // The waiting jobs `match` picks (a held campaign's), whole.
  std::vector<std::unique_ptr<Job>> TakeJobsIf(
      const std::function<bool(Job&)>& match);
  size_t waiting() const { return ready_.size(); }

  // A ready connection may start a transaction now (takes a message
  // token). False: not now; *wake is when to ask again (InfiniteFuture:
  // not until something changes: nothing waits, suspended).
  bool MayStartJob(absl::Time now, absl::Time* wake);
  // New connections to open now for what waits beyond the `connecting`
  // ones (takes window slots and connection tokens); *wake as above, when
  // the connection rate or a pause allows more.
  int ConnectionsToOpen(int connecting, absl::Time now, absl::Time* wake);
  // A connection ended (its window slot), ever ready or not.
  void ConnectionClosed(bool worked);
  // A transaction delivered something: the window may grow.
  void Delivered() { window_.OnSuccess(); }
  // A connection goes on after `messages_sent`: not past
  // messages_per_connection, nor while more are open than the cluster's
  // leases allow this node (shared_limits.h).
  bool MoreOnConnection(int messages_sent) const {
    return messages_sent < options_.messages_per_connection &&
           window_.in_flight() <= slots_;
  }
  int open_connections() const { return window_.in_flight(); }
  int window() const { return window_.limit(); }

  // A 421 or a back-off pattern: pause, then run at reduced rates for as
  // long again.
  void BackOff(const Backoff& b, absl::Time now);
  absl::Time paused_until() const { return paused_until_; }
  // The reduced rates end when their time is up; true when they just did.
  bool RestoreRates(absl::Time now);

  // MX hosts whose connect failed lately go after the others.
  void MarkHostDown(const std::string& host, absl::Time now);
  bool HostDown(const std::string& host, absl::Time now) const;

  // Nothing waits, nothing is open, no back-off in force.
  bool Quiet(absl::Time now) const;
  absl::Time last_used() const { return last_used_; }

  // The engine's, for this site: connections waiting for work, connections
  // opened and not yet ready, and the wake-up timer.
  std::vector<OutboundConnection*> idle;
  int connecting = 0;
  uint64_t wake_timer = 0;
  absl::Time wake_at = absl::InfiniteFuture();
  // Recipients parked while suspended and not yet logged; the line says
  // how many at most every kParkLogEvery.
  int parked_unlogged = 0;
  absl::Time parked_logged = absl::InfinitePast();
  static constexpr absl::Duration kParkLogEvery = absl::Seconds(10);

 private:
  // Asks the share how many connections this node may hold (and renews
  // its leases); remembers it in slots_.
  int Leases(int connecting_now, absl::Time now, absl::Time* wake);

  SiteOptions options_;
  std::unique_ptr<SiteShare> share_;
  int slots_ = std::numeric_limits<int>::max();
  TokenBucket message_rate_;
  TokenBucket connection_rate_;
  ConcurrencyWindow window_;  // Counts this site's open connections.
  std::deque<std::unique_ptr<Job>> ready_;
  absl::Time paused_until_ = absl::InfinitePast();
  absl::Time reduced_until_ = absl::InfinitePast();
  absl::Time last_used_ = absl::InfinitePast();
  absl::flat_hash_map<std::string, absl::Time> host_down_until_;
};

}  // namespace peregrine::delivery
