#include "mta/bounce/notifier.h"

#include <algorithm>
#include <random>
#include <utility>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "base/log.h"
#include "mta/bounce/dsn.h"

namespace peregrine::bounce {
namespace {

constexpr const char* kLog = "bounce";
// Outcomes waiting for the thread, at most: past this a failure is
// recorded at once without its DSN (and the log says so), rather than
// holding memory without bound.
constexpr size_t kMaxWaiting = 100000;

using outcome::Kind;
using outcome::Outcome;

absl::string_view DomainOf(absl::string_view address) {
  size_t at = address.rfind('@');
  return at == absl::string_view::npos ? absl::string_view()
                                       : address.substr(at + 1);
}

bool Contains(const std::vector<std::string>& list, absl::string_view value) {
  for (const std::string& s : list) {
    if (absl::EqualsIgnoreCase(s, value)) return true;
  }
  return false;
}

// Why no DSN goes for a failure ("" when one does).
std::string NoDsnReason(const Outcome& o, const NotifierOptions& options) {
  uint8_t notify = o.record.spec.notify;
  if (o.operator_action == "delete") return "no DSN: deleted by the operator";
  if (o.sender.empty()) return "no DSN: the sender is null (<>)";
  if (!options.dsn) return "no DSN: bounce.dsn is off";
  if (notify & queue::kNotifyNever) return "no DSN: NOTIFY=NEVER";
  if (notify != queue::kNotifyDefault && !(notify & queue::kNotifyFailure)) {
    return "no DSN: NOTIFY does not ask for failures";
  }
  if (!o.listener.empty() && Contains(options.no_dsn_listeners, o.listener)) {
    return absl::StrCat("no DSN: off for the ", o.listener, " listener");
  }
  if (Contains(options.no_dsn_sender_domains, DomainOf(o.sender))) {
    return absl::StrCat("no DSN: off for the sender domain ",
                        DomainOf(o.sender));
  }
  return "";
}

}  // namespace

Notifier::Notifier(queue::Store* store, const outcome::Bus* bus,
                   SuppressionList* suppression, NotifierOptions options)
    : store_(store),
      bus_(bus),
      suppression_(suppression),
      options_(std::move(options)),
      thread_([this] { Main(); }) {}

Notifier::~Notifier() { Stop(); }

bool Notifier::DsnDue(const Outcome& o) const {
  if (o.kind == Kind::kFailed || o.kind == Kind::kExpired) {
    return NoDsnReason(o, options_).empty();
  }
  if (o.kind != Kind::kDeferred || !o.attempted) return false;
  if (options_.delay_after <= absl::ZeroDuration()) return false;
  if (o.record.delay_notified || o.queue_time < options_.delay_after) {
    return false;
  }
  uint8_t notify = o.record.spec.notify;
  bool asked = (notify & queue::kNotifyDelay) != 0;
  bool by_default = notify == queue::kNotifyDefault &&
                    (options_.delay_listeners.empty() ||
                     Contains(options_.delay_listeners, o.listener));
  if (!asked && !by_default) return false;
  if (o.sender.empty() || !options_.dsn) return false;
  if (!o.listener.empty() && Contains(options_.no_dsn_listeners, o.listener)) {
    return false;
  }
  return !Contains(options_.no_dsn_sender_domains, DomainOf(o.sender));
}

bool Notifier::Divert(const Outcome& o, queue::RecipientUpdate& update) {
  if (o.id == 0 || !DsnDue(o)) return false;
  absl::MutexLock lock(&mu_);
  if (stopped_) return false;
  if (waiting_ >= kMaxWaiting) {
    log::Error(kLog,
               "id=%s to=<%s>: %d failures already wait for their DSNs; this "
               "one is recorded without a DSN",
               queue::FormatMessageId(o.id), o.recipient, waiting_);
    return false;
  }
  Pending& p = pending_[o.id];
  if (p.outcomes.empty()) p.since = absl::Now();
  p.outcomes.push_back(o);
  p.updates.push_back(std::move(update));
  ++waiting_;
  return true;
}

void Notifier::OnOutcome(const Outcome& o) {
  if (o.kind != Kind::kFailed && o.kind != Kind::kExpired) return;
  Outcome b;
  b.kind = Kind::kBounce;
  b.time = o.time;
  b.shard = o.shard;
  b.id = o.id;
  b.sender = o.sender;
  b.recipient = o.recipient;
  b.size = o.size;
  b.tenant = o.tenant;
  b.campaign = o.campaign;
  b.site = o.site;
  b.mx = o.mx;
  b.ip = o.ip;
  b.reply = o.reply;
  b.category = o.category.value_or(Category::kUnknown);
  b.category_rule = o.category_rule;
  b.attempt = o.attempt;
  b.queue_time = o.queue_time;
  b.listener = o.listener;
  std::string no_dsn = NoDsnReason(o, options_);
  b.reason =
      no_dsn.empty() ? absl::StrCat("a DSN goes to <", o.sender, ">") : no_dsn;
  bus_->Publish(b);

  if (suppression_ != nullptr && o.category && o.operator_action.empty() &&
      std::find(options_.suppress.begin(), options_.suppress.end(),
                *o.category) != options_.suppress.end()) {
    absl::MutexLock lock(&mu_);
    if (to_suppress_.size() < kMaxWaiting) to_suppress_.push_back(o);
  }
}

void Notifier::Stop() {
  {
    absl::MutexLock lock(&mu_);
    if (stopping_) return;
    stopping_ = true;
  }
  if (thread_.joinable()) thread_.join();
  absl::MutexLock lock(&mu_);
  auto answered = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return in_flight_ == 0;
  };
  if (!mu_.AwaitWithTimeout(absl::Condition(&answered), absl::Seconds(30))) {
    log::Error(kLog, "%d failure records with DSNs not answered by the queue",
               in_flight_);
  }
}

void Notifier::Main() {
  for (;;) {
    std::vector<std::pair<queue::MessageId, Pending>> ready;
    std::vector<Outcome> suppress;
    bool last = false;
    {
      absl::MutexLock lock(&mu_);
      auto due = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        if (stopping_ || !to_suppress_.empty()) return true;
        absl::Time now = absl::Now();
        for (const auto& [id, p] : pending_) {
          if (now - p.since >= options_.window) return true;
        }
        return false;
      };
      mu_.AwaitWithTimeout(absl::Condition(&due),
                           std::min(options_.window, absl::Milliseconds(100)));
      absl::Time now = absl::Now();
      for (auto it = pending_.begin(); it != pending_.end();) {
        if (stopping_ || now - it->second.since >= options_.window) {
          waiting_ -= it->second.outcomes.size();
          ready.emplace_back(it->first, std::move(it->second));
          it = pending_.erase(it);
        } else {
          ++it;
        }
      }
      suppress.swap(to_suppress_);
      if (stopping_ && pending_.empty()) {
        stopped_ = true;
        last = true;
      }
    }
    for (auto& [id, p] : ready) Process(id, std::move(p));
    for (const Outcome& o : suppress) Suppress(o);
    if (last) return;
  }
}

void Notifier::Process(queue::MessageId id, Pending p) {
  std::string hex = queue::FormatMessageId(id);
  auto m = store_->Read(id, /*with_body=*/true);
  std::optional<queue::NewMessage> notice;
  if (!m.ok()) {
    log::Error(kLog, "id=%s: no DSN: cannot read the message: %s", hex,
               m.status().message());
  } else {
    const queue::Envelope& e = m->envelope;
    absl::Time now = absl::Now();
    std::mt19937_64 rng(static_cast<uint64_t>(absl::ToUnixNanos(now)) ^ id);
    std::string unique = absl::StrFormat("%s.%016x", hex, rng());
    DsnInput in;
    in.reporting_mta = options_.hostname;
    in.sender = e.sender;
    in.envid = e.envid;
    in.ret = e.ret;
    in.arrival = e.received;
    in.now = now;
    in.message_id = absl::StrCat("<dsn.", unique, "@", options_.hostname, ">");
    in.boundary = absl::StrCat("=_", unique, "/", options_.hostname);
    in.original = std::move(m->body);
    in.full_limit = options_.full_limit;
    for (size_t i = 0; i < p.outcomes.size(); ++i) {
      const Outcome& o = p.outcomes[i];
      DsnRecipient r;
      r.address = o.recipient;
      r.orcpt = o.record.spec.orcpt;
      r.action =
          o.kind == Kind::kDeferred ? DsnAction::kDelayed : DsnAction::kFailed;
      r.reply = o.reply;
      r.remote = !o.mx.empty() && !o.ip.empty();
      r.remote_mta = o.mx;
      r.category = o.category.value_or(Category::kUnknown);
      r.last_attempt = o.time;
      r.reason = o.reason;
      if (r.action == DsnAction::kDelayed) {
        r.retry_until = o.next_attempt;
        p.updates[i].delay_notified = true;
      }
      in.recipients.push_back(std::move(r));
    }
    queue::NewMessage n;
    n.envelope.sender = "";  // RFC 5321 §6.1: never answered.
    n.envelope.received = now;
    n.envelope.listener = "dsn";
    n.envelope.tenant = e.tenant;
    n.envelope.campaign = e.campaign;
    queue::RecipientSpec to;
    to.address = e.sender;
    to.notify = queue::kNotifyNever;
    to.site = absl::AsciiStrToLower(DomainOf(e.sender));
    to.shard =
        options_.shard_for_domain ? options_.shard_for_domain(to.site) : 0;
    n.recipients.push_back(std::move(to));
    n.body = BuildDsn(in);
    notice = std::move(n);
  }
  size_t count = p.outcomes.size();
  std::string sender = p.outcomes.front().sender;
  bool delayed =
      std::all_of(p.outcomes.begin(), p.outcomes.end(),
                  [](const Outcome& o) { return o.kind == Kind::kDeferred; });
  {
    absl::MutexLock lock(&mu_);
    ++in_flight_;
  }
  store_->UpdateWithNotice(
      std::move(p.updates), std::move(notice),
      [this, hex, count, sender, delayed, tenant = p.outcomes.front().tenant,
       campaign =
           p.outcomes.front().campaign](absl::StatusOr<queue::MessageId> dsn) {
        auto answered = absl::MakeCleanup([this] {
          absl::MutexLock lock(&mu_);
          --in_flight_;
        });
        if (!dsn.ok()) {
          log::Error(kLog, "id=%s: recording %d failures and their DSN: %s",
                     hex, count, dsn.status().message());
          return;
        }
        if (*dsn == 0) return;
        dsns_sent_.fetch_add(1);
        Outcome o;
        o.kind = Kind::kDsnSent;
        o.time = absl::Now();
        o.id = *dsn;
        o.sender = "";
        o.recipient = sender;
        o.tenant = tenant;
        o.campaign = campaign;
        o.reason = absl::StrCat(delayed ? "delay" : "failure",
                                " notice for message ", hex, " (", count,
                                count == 1 ? " recipient)" : " recipients)");
        bus_->Publish(o);
      });
}

void Notifier::Suppress(const Outcome& o) {
  SuppressionEntry e;
  e.address = o.recipient;
  if (options_.suppress_scope == "tenant" && !o.tenant.empty()) {
    e.scope = absl::StrCat("tenant:", o.tenant);
  } else if (options_.suppress_scope == "campaign" && !o.campaign.empty()) {
    e.scope = absl::StrCat("campaign:", o.campaign);
  }
  e.category =
      std::string(CategoryName(o.category.value_or(Category::kUnknown)));
  e.reason = o.reply.ToString();
  e.source = "delivery";
  e.added = absl::Now();
  if (options_.suppress_for > absl::ZeroDuration()) {
    e.expires = e.added + options_.suppress_for;
  }
  if (absl::Status s = suppression_->Add(e); !s.ok()) {
    log::Error(kLog, "cannot suppress <%s>: %s", o.recipient, s.message());
    return;
  }
  Outcome s;
  s.kind = Kind::kSuppressed;
  s.time = e.added;
  s.id = o.id;
  s.sender = o.sender;
  s.recipient = o.recipient;
  s.tenant = o.tenant;
  s.campaign = o.campaign;
  s.reply = o.reply;
  s.category = o.category;
  s.reason =
      absl::StrCat("added to the suppression list",
                   e.scope.empty() ? "" : absl::StrCat(" (", e.scope, ")"),
                   " after a ", e.category, " failure");
  bus_->Publish(s);
}

}  // namespace peregrine::bounce
