#include "mta/queue_actions.h"

#include <algorithm>
#include <map>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"

namespace peregrine {

absl::string_view QueueActionName(QueueAction action) {
  switch (action) {
    case QueueAction::kRetry:
      return "retry";
    case QueueAction::kBounce:
      return "bounce";
    case QueueAction::kDelete:
      return "delete";
    case QueueAction::kTransfer:
      return "transfer";
  }
  return "?";
}

absl::StatusOr<QueueSelection> QueueSelection::FromJson(
    const nlohmann::json& j) {
  if (!j.is_object()) {
    return absl::InvalidArgumentError(
        "the body must be a JSON object naming the mail: site, domain, "
        "campaign, tenant, id, or \"all\": true");
  }
  QueueSelection s;
  for (const auto& [key, value] : j.items()) {
    std::string* field = key == "site"       ? &s.site
                         : key == "domain"   ? &s.domain
                         : key == "campaign" ? &s.campaign
                         : key == "tenant"   ? &s.tenant
                         : key == "to"       ? &s.to
                                             : nullptr;
    if (field != nullptr) {
      if (!value.is_string() || value.get<std::string>().empty()) {
        return absl::InvalidArgumentError(
            absl::StrCat("\"", key, "\" must be a non-empty string"));
      }
      *field = value.get<std::string>();
    } else if (key == "id") {
      if (!value.is_string() ||
          !queue::ParseMessageId(value.get<std::string>(), &s.id) ||
          s.id == 0) {
        return absl::InvalidArgumentError(
            "\"id\" must be a queue id: 16 hex digits, as the queue list and "
            "the event log print it");
      }
    } else if (key == "all") {
      if (!value.is_boolean()) {
        return absl::InvalidArgumentError("\"all\" must be true or false");
      }
      s.all = value.get<bool>();
    } else {
      return absl::InvalidArgumentError(absl::StrCat(
          "unknown field \"", key,
          "\": the mail is named by site, domain, campaign, tenant or id"));
    }
  }
  bool named = !s.site.empty() || !s.domain.empty() || !s.campaign.empty() ||
               !s.tenant.empty() || s.id != 0;
  if (!named && !s.all) {
    return absl::InvalidArgumentError(
        "name the mail: site, domain, campaign, tenant or id (or \"all\": "
        "true for the whole queue)");
  }
  if (named && s.all) {
    return absl::InvalidArgumentError(
        "\"all\" goes alone: it means the whole queue");
  }
  return s;
}

std::string QueueSelection::ToString() const {
  if (all) return "all";
  std::vector<std::string> parts;
  if (id != 0) parts.push_back(absl::StrCat("id=", queue::FormatMessageId(id)));
  if (!site.empty()) parts.push_back(absl::StrCat("site=", site));
  if (!domain.empty()) parts.push_back(absl::StrCat("domain=", domain));
  if (!campaign.empty()) parts.push_back(absl::StrCat("campaign=", campaign));
  if (!tenant.empty()) parts.push_back(absl::StrCat("tenant=", tenant));
  return absl::StrJoin(parts, " ");
}

namespace {

// Retries' queue writes still unanswered; the action waits for them.
class Pending {
 public:
  void Add() {
    absl::MutexLock lock(&mu_);
    ++n_;
  }
  void Done() {
    absl::MutexLock lock(&mu_);
    --n_;
  }
  bool Wait(absl::Duration timeout) {
    absl::MutexLock lock(&mu_);
    auto zero = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return n_ == 0; };
    return mu_.AwaitWithTimeout(absl::Condition(&zero), timeout);
  }

 private:
  absl::Mutex mu_;
  int n_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace

namespace {

// An operator's outcome for a recipient of `m` (o.record): the message's
// context added, published, counted, and kept to wait for its queue
// update.
void Publish(const QueueActionContext& context, const queue::StoredMessage& m,
             absl::Time now, outcome::Outcome& o, QueueActionCounts& counts,
             std::vector<RecipientKey>& published) {
  o.time = now;
  o.id = m.id;
  o.sender = m.envelope.sender;
  o.size = m.envelope.body_bytes;
  o.tenant = m.envelope.tenant;
  o.campaign = m.envelope.campaign;
  o.listener = m.envelope.listener;
  o.queue_time = now - m.envelope.received;
  context.outcomes->Publish(o);
  ++counts.done;
  published.push_back({m.id, o.record.index});
}

// Relays `claimed` (recipients of `m` this action claimed) in groups of
// equal attempts; what the other node took becomes a `delivered` outcome,
// the rest is unclaimed (it stays here, due as it was).
void Transfer(const QueueActionContext& context, const RelayFn& relay,
              const std::string& to, const queue::StoredMessage& m,
              std::vector<queue::RecipientRecord> claimed,
              QueueActionCounts& counts, std::vector<RecipientKey>& published) {
  queue::Store& store = *context.store;
  auto keep = [&](const std::vector<queue::RecipientRecord>& rs) {
    for (const queue::RecipientRecord& r : rs) store.Unclaim(r);
    counts.kept += rs.size();
  };
  absl::StatusOr<queue::StoredMessage> whole = store.Read(m.id, true);
  if (!whole.ok()) {
    keep(claimed);
    if (!absl::IsNotFound(whole.status())) {
      counts.error = absl::StrCat("reading ", queue::FormatMessageId(m.id),
                                  ": ", whole.status().message());
    }
    return;
  }
  std::map<uint32_t, std::vector<queue::RecipientRecord>> by_attempts;
  for (queue::RecipientRecord& r : claimed) {
    by_attempts[r.attempts].push_back(std::move(r));
  }
  for (auto& [attempts, group] : by_attempts) {
    if (!counts.error.empty()) {
      keep(group);
      continue;
    }
    absl::StatusOr<Relayed> relayed = relay(*whole, group);
    if (!relayed.ok()) {
      keep(group);
      if (!absl::IsFailedPrecondition(relayed.status())) {
        counts.error = std::string(relayed.status().message());
      }
      continue;
    }
    const absl::Time now = absl::Now();
    for (const queue::RecipientRecord& r : group) {
      if (std::find(relayed->accepted.begin(), relayed->accepted.end(),
                    r.index) == relayed->accepted.end()) {
        keep({r});
        continue;
      }
      outcome::Outcome o;
      o.kind = outcome::Kind::kDelivered;
      o.recipient = r.spec.address;
      o.site = r.spec.site;
      o.mx = to;
      o.record = r;
      o.attempt = r.attempts + 1;
      o.operator_action = "transfer";
      o.reply = Reply::Parse(relayed->reply);
      o.reason =
          absl::StrCat("transferred to the node at ", to, " (queue transfer)");
      Publish(context, m, now, o, counts, published);
    }
  }
}

}  // namespace

absl::StatusOr<QueueActionCounts> RunQueueAction(
    const QueueActionContext& context, QueueAction action,
    const QueueSelection& selection) {
  queue::Store& store = *context.store;
  QueueActionCounts counts;
  queue::ListFilter filter;
  filter.pending = true;
  filter.site = selection.site;
  filter.domain = selection.domain;
  filter.campaign = selection.campaign;
  filter.tenant = selection.tenant;
  filter.id = selection.id;
  filter.limit = context.page;
  const bool deleted = action == QueueAction::kDelete;
  const bool transfer = action == QueueAction::kTransfer;
  RelayFn relay;
  if (transfer) {
    if (selection.to.empty() || !context.relay_to) {
      return absl::InvalidArgumentError(
          "a transfer needs \"to\": the other node's relay listener, "
          "HOST:PORT");
    }
    relay = context.relay_to(selection.to);
  }
  absl::flat_hash_set<RecipientKey> held;  // By delivery.
  auto pending = std::make_shared<Pending>();
  // Failed through the bus: written by its consumers (a DSN's batch window
  // first); the answer waits until they are final in the queue.
  std::vector<RecipientKey> published;
  auto cancelled = [&context, &counts] {
    if (context.cancelled && context.cancelled()) counts.cancelled = true;
    return counts.cancelled;
  };
  for (;;) {
    while (action == QueueAction::kBounce && context.dsn_backlog &&
           context.dsn_backlog() > QueueActionContext::kMaxDsnBacklog &&
           !cancelled()) {
      absl::SleepFor(absl::Milliseconds(50));
    }
    if (cancelled()) break;
    absl::StatusOr<std::vector<queue::StoredMessage>> page = store.List(filter);
    if (!page.ok()) return page.status();
    const absl::Time now = absl::Now();
    for (const queue::StoredMessage& m : *page) {
      filter.after = m.id;
      std::vector<queue::RecipientRecord> to_move;  // kTransfer's.
      for (const queue::RecipientRecord& listed : m.recipients) {
        if (!filter.MatchesRecipient(listed)) continue;
        ++counts.matched;
        auto claimed = store.ClaimOne(m.id, listed.index);
        if (absl::IsNotFound(claimed.status())) {
          --counts.matched;  // Final since the page was read.
          continue;
        }
        if (!claimed.ok()) return claimed.status();
        if (!claimed->has_value()) {
          if (action == QueueAction::kRetry) {
            ++counts.in_flight;  // Delivery has it: it goes already.
          } else {
            held.insert({m.id, listed.index});
          }
          continue;
        }
        const queue::RecipientRecord& r = **claimed;
        if (transfer) {
          to_move.push_back(r);
          continue;
        }
        if (action == QueueAction::kRetry) {
          ++counts.done;
          if (r.next_attempt <= now) {
            store.Unclaim(r);  // Due already.
            continue;
          }
          queue::RecipientUpdate u;
          u.before = r;
          u.state = queue::RecipientState::kDeferred;
          u.next_attempt = now;
          u.reply = r.last_reply;
          u.attempted = false;
          pending->Add();
          store.Update(std::move(u),
                       [pending](absl::Status) { pending->Done(); });
          continue;
        }
        outcome::Outcome o = outcome::OperatorFailure(r, deleted);
        Publish(context, m, now, o, counts, published);
      }
      if (!to_move.empty()) {
        Transfer(context, relay, selection.to, m, std::move(to_move), counts,
                 published);
        if (!counts.error.empty()) break;
      }
    }
    if (!counts.error.empty()) break;
    if (page->size() < filter.limit || selection.id != 0) break;
  }
  if (!held.empty()) {
    size_t n = held.size();
    size_t taken = context.take_from_delivery
                       ? context.take_from_delivery(std::move(held), deleted)
                       : 0;
    counts.done += taken;
    counts.in_flight += n - std::min(n, taken);
  }
  const absl::Time deadline = absl::Now() + absl::Seconds(30);
  pending->Wait(absl::Seconds(30));
  while (!published.empty() && absl::Now() < deadline) {
    std::vector<RecipientKey> left;
    for (size_t i = 0; i < published.size();) {
      // One read per message (the keys of one message are together).
      size_t end = i;
      while (end < published.size() &&
             published[end].first == published[i].first) {
        ++end;
      }
      auto m = store.Read(published[i].first, false);
      for (; i < end; ++i) {
        if (!m.ok()) continue;  // Gone: every recipient final.
        for (const queue::RecipientRecord& r : m->recipients) {
          if (r.index == published[i].second && !queue::IsFinal(r.state)) {
            left.push_back(published[i]);
          }
        }
      }
    }
    published.swap(left);
    if (!published.empty()) absl::SleepFor(absl::Milliseconds(50));
  }
  return counts;
}

}  // namespace peregrine
