#include "mta/delivery/engine.h"

#include <algorithm>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "base/log.h"
#include "mta/delivery/routing.h"

namespace peregrine::delivery {
namespace {

constexpr char kLog[] = "delivery";

}  // namespace

DeliveryShard::DeliveryShard(shard::Reactor& reactor, EngineContext& context)
    : reactor_(reactor),
      context_(context),
      rng_(static_cast<uint64_t>(absl::ToUnixNanos(reactor.Now())) +
           static_cast<uint64_t>(reactor.id())),
      retry_(context.options.retry) {
  Reload(std::make_shared<const DeliveryOptions>(context.options),
         context.classifier);
}

DeliveryShard::~DeliveryShard() {
  for (auto& [key, site] : sites_) {
    if (site->wake_timer != 0) reactor_.CancelTimer(site->wake_timer);
  }
  if (poll_timer_ != 0) reactor_.CancelTimer(poll_timer_);
}

dns::Resolver* DeliveryShard::resolver() {
  return context_.resolver ? context_.resolver(reactor_.id()) : nullptr;
}

void DeliveryShard::Reload(
    std::shared_ptr<const DeliveryOptions> options,
    std::shared_ptr<const bounce::Classifier> classifier) {
  std::shared_ptr<const DeliveryOptions> before = std::move(options_);
  options_ = std::move(options);
  if (classifier != nullptr) classifier_ = std::move(classifier);
  retry_ = RetrySchedule(options_->retry);
  auto rules = BackoffRules::Create(options_->backoff, options_->on_421);
  if (rules.ok()) {
    backoff_ = std::make_unique<BackoffRules>(*std::move(rules));
  } else {
    log::Error(kLog, "back-off rules: %s", rules.status().message());
  }
  absl::Time now = reactor_.Now();
  bool resumed = false;
  for (auto& [key, site] : sites_) {
    Site::Change change = site->SetOptions(OptionsOf(*site), now);
    ShareSite(*site);
    if (change == Site::Change::kSuspended) {
      // At once: what waits is held (unattempted, its time not counted),
      // idle connections leave, busy ones finish their transaction first.
      std::vector<OutboundConnection*> idle = site->idle;
      for (OutboundConnection* c : idle) c->Leave();
      log::Info(kLog,
                "site %s: suspended: %d transactions held, %d connections "
                "finish the one they are sending",
                site->key, site->waiting(), site->open_connections());
      ParkExcess(*site);
    } else if (change == Site::Change::kResumed) {
      log::Info(kLog, "site %s: resumed: %d transactions released", site->key,
                site->waiting());
      resumed = true;
    }
    Pump(*site);
  }
  // A campaign or tenant held now: what waits at the sites goes back to
  // the queue. One released: what was parked comes back at once.
  if (!options_->held_campaigns.empty() || !options_->held_tenants.empty() ||
      !options_->held_messages.empty()) {
    for (auto& [key, site] : sites_) {
      for (std::unique_ptr<Job>& job :
           site->TakeJobsIf([this](Job& j) { return Held(j); })) {
        ParkHeld(std::move(job));
      }
    }
  }
  auto released = [](const std::vector<std::string>& was,
                     const std::vector<std::string>& now_held) {
    for (const std::string& t : was) {
      if (std::find(now_held.begin(), now_held.end(), t) == now_held.end()) {
        return true;
      }
    }
    return false;
  };
  auto released_id = [](const std::vector<queue::MessageId>& was,
                        const std::vector<queue::MessageId>& now_held) {
    for (queue::MessageId id : was) {
      if (std::find(now_held.begin(), now_held.end(), id) == now_held.end()) {
        return true;
      }
    }
    return false;
  };
  if (before != nullptr &&
      (released(before->held_campaigns, options_->held_campaigns) ||
       released(before->held_tenants, options_->held_tenants) ||
       released_id(before->held_messages, options_->held_messages))) {
    log::Info(kLog, "a held campaign or tenant was released");
    resumed = true;
  }
  if (resumed) {
    // What the site held past its limit waits in the queue, parked until
    // up to kParkFor from now, in every shard's schedule: every shard looks
    // that far ahead once, so it goes now rather than in a minute.
    absl::Time until = now + Site::kParkFor;
    EngineContext* context = &context_;
    for (int shard = 0; shard < context_.group->size(); ++shard) {
      context_.group->SubmitTo(shard, [context, shard, until] {
        context->engines[shard]->ClaimAhead(until);
      });
    }
  }
}

void DeliveryShard::ClaimAhead(absl::Time until) {
  claim_until_ = std::max(claim_until_, until);
  if (draining_) return;
  if (poll_timer_ != 0) reactor_.CancelTimer(poll_timer_);
  poll_timer_ = 0;
  Poll();
}

SiteOptions DeliveryShard::OptionsFor(
    bool smarthost, absl::string_view domain,
    const std::vector<dns::MxHost>& mx) const {
  if (!smarthost) return ResolveSite(*options_, domain, mx);
  // The smarthost is a site too: rules match its host name (mx_suffixes)
  // or, for a site of its own, the domain they name.
  return ResolveSite(*options_, domain,
                     {dns::MxHost{options_->smarthost.host, 0, false}});
}

bool DeliveryShard::HasDomainRule(absl::string_view domain) const {
  if (domain.empty()) return false;
  for (const SiteRule& r : options_->rules) {
    if (!r.domains.empty() && r.Matches(domain, {})) return true;
  }
  return false;
}

void DeliveryShard::ParkExcess(Site& site) {
  absl::Time now = reactor_.Now();
  int parked = 0;
  for (std::unique_ptr<Job>& job : site.Excess(now)) {
    // No envelope read: an unattempted deferral gets no event or log line
    // and no DSN; the queue needs only the record. Parking a backlog that
    // arrives at a suspended site read every envelope back before.
    for (const queue::RecipientRecord& r : job->recipients) {
      outcome::Outcome o;
      o.kind = outcome::Kind::kDeferred;
      o.recipient = r.spec.address;
      o.site = site.key;
      o.reply =
          Reply{451, "4.4.5", "delivery to this site is suspended (held)"};
      o.attempt = r.attempts;
      o.next_attempt = now + Site::kParkFor;
      o.record = r;
      o.attempted = false;
      o.held_more = job->held;
      Publish(std::move(o), *job);
      ++parked;
    }
  }
  // One line per site every few seconds, not one per recipient parked (a
  // backlog arriving at a suspended site parks them one by one).
  site.parked_unlogged += parked;
  if (site.parked_unlogged > 0 &&
      now - site.parked_logged >= Site::kParkLogEvery) {
    log::Info(kLog,
              "site %s: suspended: %d more recipients wait in the queue "
              "(looked at again every %s, unattempted)",
              site.key, site.parked_unlogged,
              absl::FormatDuration(Site::kParkFor));
    site.parked_unlogged = 0;
    site.parked_logged = now;
  }
}

void DeliveryShard::Start() {
  if (context_.shared_limits) shared_ = context_.shared_limits(reactor_.id());
  poll_timer_ = reactor_.AddTimer(absl::ZeroDuration(), [this] {
    poll_timer_ = 0;
    Poll();
  });
}

void DeliveryShard::BeginDrain() {
  context_.group->SubmitTo(reactor_.id(), [this] {
    draining_ = true;
    if (poll_timer_ != 0) reactor_.CancelTimer(poll_timer_);
    poll_timer_ = 0;
    for (auto& [key, site] : sites_) {
      std::vector<OutboundConnection*> idle = site->idle;
      for (OutboundConnection* c : idle) c->Leave();
    }
  });
}

size_t DeliveryShard::TakeForOperator(
    const absl::flat_hash_set<RecipientKey>& wanted, bool deleted) {
  size_t taken = 0;
  for (auto& [key, site] : sites_) {
    for (std::unique_ptr<Job>& job :
         site->TakeMatching([&wanted](const queue::RecipientRecord& r) {
           return wanted.contains(RecipientKey{r.message, r.index});
         })) {
      ReadEnvelope(*job);
      for (const queue::RecipientRecord& r : job->recipients) {
        outcome::Outcome o = outcome::OperatorFailure(r, deleted);
        o.site = site->key;
        Publish(std::move(o), *job);
        ++taken;
      }
    }
  }
  return taken;
}

void DeliveryShard::SweepSites() {
  // Sites come and go with the mail: forget the ones quiet for a while.
  absl::Time now = reactor_.Now();
  if (now - last_sweep_ < absl::Minutes(1)) return;
  last_sweep_ = now;
  for (auto it = sites_.begin(); it != sites_.end();) {
    const Site& site = *it->second;
    if (site.Quiet(now) && now - site.last_used() > absl::Minutes(10)) {
      sites_.erase(it++);
    } else {
      ++it;
    }
  }
  for (auto it = peer_pauses_.begin(); it != peer_pauses_.end();) {
    if (it->second.until <= now) {
      peer_pauses_.erase(it++);
    } else {
      ++it;
    }
  }
}

void DeliveryShard::ShareSite(Site& site) {
  bool share = shared_ != nullptr && site.options().shared;
  site.SetShare(share ? shared_->ForSite(site.key, site.options()) : nullptr);
}

void DeliveryShard::PeerBackedOff(const std::string& key,
                                  const Backoff& backoff, absl::Time until) {
  absl::Time now = reactor_.Now();
  if (until <= now) return;
  auto it = sites_.find(key);
  if (it == sites_.end()) {
    PeerPause& p = peer_pauses_[key];
    if (p.until < until) p = {backoff, until};
    return;
  }
  Backoff b = backoff;
  b.pause = until - now;
  it->second->BackOff(b, now);
  log::Warn(kLog,
            "site %s: backing off for %s at %.0f%% of its rates: another "
            "node did (%s)",
            key, absl::FormatDuration(b.pause), b.rate_factor * 100, b.why);
}

void DeliveryShard::Poll() {
  if (draining_) return;
  SweepSites();
  int room = options_->max_pending_per_shard - outstanding();
  size_t claimed = 0;
  constexpr size_t kBatch = 2000;
  if (room > 0) {
    // After a resume, up to claim_until_: parked mail of the resumed site
    // goes at once; what is due a little later (a retry, mail of a site
    // still suspended, parked again) comes early, once.
    absl::Time upto = std::max(reactor_.Now(), claim_until_);
    auto due = context_.queue->Claim(reactor_.id(), upto,
                                     std::min<size_t>(room, kBatch));
    if (!due.ok()) {
      // The queue is down (it reopens itself): say so, then wait a while
      // rather than asking (and logging) ten times a second.
      log::Warn(kLog, "shard %d: reading due recipients: %s; retrying in 5s",
                reactor_.id(), due.status().message());
      poll_timer_ = reactor_.AddTimer(absl::Seconds(5), [this] {
        poll_timer_ = 0;
        Poll();
      });
      return;
    }
    claimed = due->size();
    outstanding_.fetch_add(static_cast<int>(claimed),
                           std::memory_order_relaxed);
    // Recipients of one message for one domain travel together, in the
    // order they were claimed (a message's recipients are adjacent).
    std::vector<std::unique_ptr<Job>> jobs;
    absl::flat_hash_map<std::pair<queue::MessageId, std::string>, Job*>
        by_domain;
    for (queue::RecipientRecord& r : *due) {
      std::string domain = absl::AsciiStrToLower(r.domain());
      // Through a smarthost, one transaction carries every domain (but
      // those a site rule names: they are sites of their own).
      if (options_->smarthost.Covers(domain) && !HasDomainRule(domain)) {
        domain.clear();
      }
      Job*& job = by_domain[{r.message, domain}];
      if (job == nullptr) {
        jobs.push_back(std::make_unique<Job>());
        job = jobs.back().get();
        job->message = r.message;
        job->domain = std::move(domain);
        job->claimed_by = reactor_.id();
      }
      job->recipients.push_back(std::move(r));
    }
    for (auto& job : jobs) Route(std::move(job));
  }
  // A full batch: there is more; look again at once.
  poll_timer_ = reactor_.AddTimer(
      claimed == kBatch ? absl::ZeroDuration() : context_.poll_interval,
      [this] {
        poll_timer_ = 0;
        Poll();
      });
}

bool DeliveryShard::Held(Job& job) {
  const DeliveryOptions& o = *options_;
  if (std::find(o.held_messages.begin(), o.held_messages.end(), job.message) !=
      o.held_messages.end()) {
    return true;
  }
  if (o.held_campaigns.empty() && o.held_tenants.empty()) return false;
  ReadEnvelope(job);
  auto in = [](const std::vector<std::string>& list, const std::string& tag) {
    return !tag.empty() &&
           std::find(list.begin(), list.end(), tag) != list.end();
  };
  return in(o.held_campaigns, job.campaign) || in(o.held_tenants, job.tenant);
}

void DeliveryShard::ParkHeld(std::unique_ptr<Job> job) {
  absl::Time now = reactor_.Now();
  const absl::Duration held = job->HeldUntil(now) + Site::kParkFor;
  for (const queue::RecipientRecord& r : job->recipients) {
    outcome::Outcome o;
    o.kind = outcome::Kind::kDeferred;
    o.recipient = r.spec.address;
    o.site = r.spec.site;
    o.reply = Reply{451, "4.4.5",
                    "held by the operator: the message, its campaign or "
                    "its tenant is suspended"};
    o.attempt = r.attempts;
    o.next_attempt = now + Site::kParkFor;
    o.record = r;
    o.attempted = false;
    o.held_more = held;
    Publish(std::move(o), *job);
    ++held_unlogged_;
  }
  if (now - held_logged_ >= Site::kParkLogEvery) {
    log::Info(kLog,
              "%d recipients of held campaigns or tenants wait in the queue "
              "(looked at again every %s, unattempted)",
              held_unlogged_, absl::FormatDuration(Site::kParkFor));
    held_unlogged_ = 0;
    held_logged_ = now;
  }
}

void DeliveryShard::HandOver(std::unique_ptr<Job> job, std::string key,
                             std::vector<dns::MxHost> mx, bool smarthost,
                             SitePolicy policy) {
  int owner = ShardForSite(key, context_.group->size());
  if (owner == reactor_.id()) {
    return AddToSite(std::move(job), std::move(key), std::move(mx), smarthost,
                     std::move(policy));
  }
  struct Handover {
    std::unique_ptr<Job> job;
    std::string key;
    std::vector<dns::MxHost> mx;
    bool smarthost;
    SitePolicy policy;
  };
  auto* h = new Handover{std::move(job), std::move(key), std::move(mx),
                         smarthost, std::move(policy)};
  EngineContext* context = &context_;
  context_.group->SubmitTo(owner, [context, owner, h] {
    std::unique_ptr<Handover> own(h);
    // Looked up there: that shard made its engine before running tasks.
    context->engines[owner]->AddToSite(std::move(own->job), std::move(own->key),
                                       std::move(own->mx), own->smarthost,
                                       std::move(own->policy));
  });
}

std::string DeliveryShard::KeyFor(const std::string& domain,
                                  const std::vector<dns::MxHost>& mx) const {
  // A rule naming this domain gives it limits of its own: its own site.
  return HasDomainRule(domain) ? absl::StrCat("domain:", domain) : SiteKey(mx);
}

void DeliveryShard::Route(std::unique_ptr<Job> job) {
  if (Held(*job)) return ParkHeld(std::move(job));
  const DeliveryOptions& options = *options_;
  bool relayed = job->domain.empty() ? !options.smarthost.host.empty()
                                     : options.smarthost.Covers(job->domain);
  if (relayed) {
    std::string key = HasDomainRule(job->domain)
                          ? absl::StrCat("smarthost:domain:", job->domain)
                          : std::string("smarthost");
    if (key == "smarthost") job->domain.clear();
    return HandOver(std::move(job), std::move(key), {}, true);
  }
  if (job->domain.empty()) {
    return DeferAll(*job, Reply{553, "5.1.3", "the address has no domain"});
  }
  dns::Resolver* resolver = this->resolver();
  if (resolver == nullptr) {
    return DeferAll(*job, Reply{451, "4.4.3", "no DNS resolver on this shard"});
  }
  std::string domain = job->domain;
  resolver->Mx(
      domain, [this, job = std::move(job)](
                  absl::StatusOr<std::vector<dns::MxHost>> mx) mutable {
        if (!mx.ok()) {
          const absl::Status& s = mx.status();
          if (absl::IsFailedPrecondition(s)) {
            return DeferAll(
                *job,
                Reply{556, "5.1.10",
                      absl::StrCat(job->domain, " accepts no mail (null MX)")});
          }
          if (dns::IsPermanent(s)) {
            return DeferAll(
                *job, Reply{550, "5.1.2",
                            absl::StrCat(job->domain, ": no such domain (",
                                         s.message(), ")")});
          }
          return DeferAll(*job,
                          Reply{451, "4.4.3",
                                absl::StrCat("MX look-up for ", job->domain,
                                             " failed: ", s.message())});
        }
        RouteByMx(std::move(job), *std::move(mx));
      });
}

void DeliveryShard::AddToSite(std::unique_ptr<Job> job, std::string site_key,
                              std::vector<dns::MxHost> mx, bool smarthost,
                              SitePolicy policy) {
  auto it = sites_.find(site_key);
  if (it == sites_.end()) {
    SiteOptions options = OptionsFor(smarthost, job->domain, mx);
    if (policy.sts == StsMode::kEnforce) options.tls = TlsMode::kVerify;
    auto site = std::make_unique<Site>(site_key, job->domain, std::move(mx),
                                       smarthost, std::move(options));
    site->sts = policy.sts;
    site->sts_mx = std::move(policy.sts_mx);
    site->dane = policy.dane;
    site->dane_required = policy.dane_required;
    ShareSite(*site);
    if (auto p = peer_pauses_.find(site_key); p != peer_pauses_.end()) {
      Backoff b = p->second.backoff;
      b.pause = p->second.until - reactor_.Now();
      if (b.pause > absl::ZeroDuration()) site->BackOff(b, reactor_.Now());
      peer_pauses_.erase(p);
    }
    if (site->suspended()) {
      log::Info(kLog, "site %s: suspended: its mail is held", site->key);
    }
    if (!smarthost && site->options().tls_policy == TlsPolicyUse::kOff) {
      log::Info(kLog,
                "site %s: tls_policy = \"off\": the receiver's DANE and "
                "MTA-STS policies are ignored (TLS %s)",
                site->key, TlsModeName(site->options().tls));
    }
    it = sites_.emplace(site_key, std::move(site)).first;
  }
  Site& site = *it->second;
  site.Add(std::move(job), reactor_.Now());
  if (site.suspended()) return ParkExcess(site);
  Pump(site);
}

void DeliveryShard::Wake(Site& site, absl::Time when) {
  if (when == absl::InfiniteFuture()) return;
  if (site.wake_timer != 0) {
    if (site.wake_at <= when) return;
    reactor_.CancelTimer(site.wake_timer);
  }
  site.wake_at = when;
  site.wake_timer = reactor_.AddTimerAt(when, [this, &site] {
    site.wake_timer = 0;
    site.wake_at = absl::InfiniteFuture();
    Pump(site);
  });
}

void DeliveryShard::Pump(Site& site) {
  if (draining_ || site.suspended()) return;
  absl::Time now = reactor_.Now();
  if (site.RestoreRates(now)) {
    log::Info(kLog, "site %s: back to its configured rates", site.key);
  }
  // Idle connections first: no new handshake.
  while (site.waiting() > 0 && !site.idle.empty()) {
    OutboundConnection* conn = site.idle.back();
    site.idle.pop_back();
    if (!GiveJob(site, conn)) {
      site.idle.push_back(conn);
      return;  // Rate-limited or paused: GiveJob set the wake-up.
    }
  }
  absl::Time wake;
  int open = site.ConnectionsToOpen(site.connecting, now, &wake);
  for (int i = 0; i < open; ++i) {
    ++site.connecting;
    auto* conn = new OutboundConnection(*this, site);
    conn->Begin();
  }
  Wake(site, wake);
}

bool DeliveryShard::GiveJob(Site& site, OutboundConnection* conn) {
  if (conn->connecting_counted) {
    conn->connecting_counted = false;
    --site.connecting;
  }
  if (draining_) return false;
  absl::Time wake;
  if (!site.MayStartJob(reactor_.Now(), &wake)) {
    Wake(site, wake);
    return false;
  }
  std::unique_ptr<Job> job = site.TakeNext();
  auto message = context_.queue->ReadForSend(job->message);
  if (!message.ok()) {
    // A body that fails its checksum or whose spool file is gone will not
    // come back: fail it now rather than retry for days. Anything else (a
    // read error) may pass.
    bool damaged = absl::IsDataLoss(message.status());
    log::Warn(kLog, "id=%s: cannot read the message: %s",
              queue::FormatMessageId(job->message), message.status().message());
    DeferAll(*job, damaged ? Reply{554, "5.3.0",
                                   absl::StrCat("queued message damaged: ",
                                                message.status().message())}
                           : Reply{451, "4.3.0",
                                   absl::StrCat("queue read: ",
                                                message.status().message())});
    return GiveJob(site, conn);
  }
  const queue::Envelope& e = message->envelope;
  job->have_envelope = true;
  job->received = e.received;
  job->sender = e.sender;
  job->size = e.body_bytes;
  job->tenant = e.tenant;
  job->campaign = e.campaign;
  job->listener = e.listener;
  conn->Send(std::move(job), std::move(message->body), e);
  return true;
}

void DeliveryShard::Gone(Site& site, OutboundConnection* conn, bool ever_ready,
                         const Reply& failure) {
  if (conn->connecting_counted) --site.connecting;
  bool failed = failure.code != 0 || !failure.text.empty();
  site.ConnectionClosed(!failed || ever_ready);
  if (failed && !ever_ready) {
    Reply why = failure;
    if (site.smarthost && !absl::StartsWith(why.text, "smarthost ")) {
      why.text = SmarthostHint(options_->smarthost,
                               smtp::ClientSession::Phase::kGreeting, why.text);
    }
    if (site.sts == StsMode::kEnforce) {
      why.text = absl::StrCat("MTA-STS policy (enforce): ", why.text);
    }
    log::Warn(kLog, "site %s: %s", site.key, why.text);
    // No connection to this site works: what waits here is deferred
    // (Postfix's dead destination). Never bounced for a connection-level
    // refusal, even a 5xx greeting: that is how Postfix treats it too
    // (smtp_skip_5xx_greeting), and a misconfiguration loses no mail.
    if (site.open_connections() == 0) {
      if (why.code >= 500 || why.code < 400) why.code = 451;
      std::string failure = TlsFailureType(site, why);
      for (auto& job : site.TakeAll()) {
        if (!failure.empty()) {
          job->tls_failure = failure;
          job->tls_policy = absl::StartsWith(why.text, "DANE")
                                ? "dane"
                                : site.TlsPolicyLabel();
        }
        for (const queue::RecipientRecord& r : job->recipients) {
          Deferred(*job, r, why, &site);
        }
      }
    }
  }
  Pump(site);
}

void DeliveryShard::Result(Site& site, Job& job,
                           const queue::RecipientRecord& r, const Reply& reply,
                           const Where& where) {
  if (reply.positive()) return Delivered(site, job, r, reply, where);
  bounce::Verdict verdict = Classify(reply);
  if (reply.code >= 500) {
    Failed(job, r, reply, &site, &where, &verdict);
  } else {
    Deferred(job, r, reply, &site, &where, &verdict);
  }
  ApplyBackoff(site, reply, verdict);
}

bounce::Verdict DeliveryShard::Classify(const Reply& reply) const {
  return classifier_ != nullptr ? classifier_->Classify(reply)
                                : bounce::Verdict{};
}

void DeliveryShard::ApplyBackoff(Site& site, const Reply& reply,
                                 const bounce::Verdict& verdict) {
  if (backoff_ == nullptr) return;
  std::optional<Backoff> b = backoff_->Match(reply.code, reply.ToString());
  bool throttled = verdict.category == bounce::Category::kRateLimited ||
                   verdict.category == bounce::Category::kIpReputation;
  if (!b && throttled && !reply.positive() && reply.code < 500) {
    // The receiver slows us down in words of its own: as for a 421.
    b = Backoff{
        options_->on_421.pause, options_->on_421.rate_factor,
        absl::StrCat("classified ", bounce::CategoryName(verdict.category))};
  }
  if (!b) return;
  site.BackOff(*b, reactor_.Now());
  if (shared_ != nullptr && site.shared()) shared_->BackedOff(site.key, *b);
  log::Warn(kLog, "site %s: backing off for %s at %.0f%% of its rates (%s): %s",
            site.key, absl::FormatDuration(b->pause), b->rate_factor * 100,
            b->why, reply.ToString());
}

void DeliveryShard::ReadEnvelope(Job& job) {
  if (job.have_envelope) return;
  job.have_envelope = true;
  auto m = context_.queue->Read(job.message, /*with_body=*/false);
  if (!m.ok()) {
    job.received = reactor_.Now();
    return;
  }
  job.received = m->envelope.received;
  job.sender = m->envelope.sender;
  job.size = m->envelope.body_bytes;
  job.tenant = m->envelope.tenant;
  job.campaign = m->envelope.campaign;
  job.listener = m->envelope.listener;
}

void DeliveryShard::Publish(outcome::Outcome o, const Job& job) {
  o.time = reactor_.Now();
  o.shard = reactor_.id();
  o.id = job.message;
  o.sender = job.sender;
  o.size = job.size;
  o.tenant = job.tenant;
  o.campaign = job.campaign;
  o.listener = job.listener;
  o.queue_time = o.time - job.received;
  context_.outcomes->Publish(o);
  context_.engines[job.claimed_by]->outstanding_.fetch_sub(
      1, std::memory_order_relaxed);
}

namespace {

void Fill(outcome::Outcome& o, const queue::RecipientRecord& r,
          const Reply& reply, const Site* site, const Where* where) {
  o.recipient = r.spec.address;
  o.reply = reply;
  o.attempt = r.attempts + 1;
  o.record = r;
  if (site != nullptr) o.site = site->key;
  if (where != nullptr) {
    o.mx = where->mx;
    o.ip = where->ip;
    o.source = where->source;
    o.tls = where->tls;
    o.tls_policy = where->tls_policy;
  }
}

}  // namespace

void DeliveryShard::Delivered(Site& site, Job& job,
                              const queue::RecipientRecord& r,
                              const Reply& reply, const Where& where) {
  outcome::Outcome o;
  o.kind = outcome::Kind::kDelivered;
  Fill(o, r, reply, &site, &where);
  o.reason = StsTestingNote(site, where);
  if (!o.reason.empty()) {
    o.tls_failure =
        !where.tls ? "starttls-not-supported" : "validation-failure";
  }
  Publish(std::move(o), job);
}

void DeliveryShard::Failed(Job& job, const queue::RecipientRecord& r,
                           const Reply& reply, const Site* site,
                           const Where* where, const bounce::Verdict* verdict) {
  ReadEnvelope(job);
  outcome::Outcome o;
  o.kind = outcome::Kind::kFailed;
  Fill(o, r, reply, site, where);
  bounce::Verdict v = verdict != nullptr ? *verdict : Classify(reply);
  o.category = v.category;
  o.category_rule = std::move(v.rule);
  Publish(std::move(o), job);
}

void DeliveryShard::Deferred(Job& job, const queue::RecipientRecord& r,
                             const Reply& reply, const Site* site,
                             const Where* where,
                             const bounce::Verdict* verdict) {
  ReadEnvelope(job);
  absl::Time now = reactor_.Now();
  outcome::Outcome o;
  Fill(o, r, reply, site, where);
  if (!job.tls_failure.empty()) {
    o.tls_failure = job.tls_failure;
    if (!job.tls_policy.empty()) o.tls_policy = job.tls_policy;
  }
  // Time held by a suspended site is not counted toward the maximum age.
  absl::Duration held = r.held + job.held;
  std::optional<absl::Time> next =
      retry_.Next(r.attempts + 1, job.received + held, now, rng_);
  if (!next) {
    o.kind = outcome::Kind::kExpired;
    o.category = bounce::Category::kExpired;
    o.reason = absl::StrCat("expired after ", r.attempts + 1, " attempts over ",
                            absl::FormatDuration(absl::Trunc(
                                now - job.received, absl::Minutes(1))));
    return Publish(std::move(o), job);
  }
  o.kind = outcome::Kind::kDeferred;
  bounce::Verdict v = verdict != nullptr ? *verdict : Classify(reply);
  o.category = v.category;
  o.category_rule = std::move(v.rule);
  o.next_attempt = *next;
  o.held_more = job.held;
  Publish(std::move(o), job);
}

void DeliveryShard::DeferAll(Job& job, const Reply& reply) {
  for (const queue::RecipientRecord& r : job.recipients) {
    if (reply.code >= 500) {
      Failed(job, r, reply);
    } else {
      Deferred(job, r, reply);
    }
  }
}

}  // namespace peregrine::delivery
