// Operators' actions on queued mail: retry, bounce and delete, selected by
// site, recipient domain, campaign, tenant or message id (admin API: POST
// /api/v1/queue/retry|bounce|delete; `peregrine queue retry|bounce|delete`).
//
// RunQueueAction() runs on the admin API's own thread, never a shard's. It
// pages through the queue (Store::List, a few hundred messages at a time)
// for the recipients not yet final that the selection names. Each one is
// in one of three places:
//  - waiting in the queue (deferred, or due and not yet claimed): it is
//    claimed (Store::ClaimOne), so delivery leaves it alone, then acted on.
//    Retry: due now (the attempt count stays). Bounce: failed, with a DSN as
//    policy says. Delete: failed, no DSN. Bounce and delete are outcomes on
//    the bus like delivery's (outcome::OperatorFailure): the queue update,
//    the DSN, the event log and the metrics follow from them.
//  - held by delivery, waiting at its site (fresh mail, a suspended site's):
//    bounce and delete ask every delivery shard to take it
//    (DeliveryShard::TakeForOperator); retry leaves it, it goes already.
//  - on a connection now: left to that attempt; counted as in flight.
// Mail that arrives while the action runs may or may not be included. The
// answer comes once what was acted on is written (up to 30 s more).
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"
#include "mta/outcome/outcome.h"
#include "nlohmann/json.hpp"
#include "queue/store.h"

namespace peregrine {

// kTransfer: relays the mail to another node (mta/transfer.h); each
// recipient leaves this queue once the other node took it.
enum class QueueAction { kRetry, kBounce, kDelete, kTransfer };
absl::string_view QueueActionName(QueueAction action);

// Which mail. Every field given must match; at least one must be given
// (or `all`, the whole queue).
struct QueueSelection {
  std::string site;
  std::string domain;
  std::string campaign;
  std::string tenant;
  queue::MessageId id = 0;
  bool all = false;
  std::string to;  // kTransfer: HOST:PORT of the other node.

  // {"site": ..., "domain": ..., "campaign": ..., "tenant": ...,
  //  "id": "16 hex digits", "all": true, "to": "HOST:PORT"}; unknown
  // fields are refused.
  static absl::StatusOr<QueueSelection> FromJson(const nlohmann::json& j);
  // "campaign=spring domain=gmail.com", for logs and events.
  std::string ToString() const;
};

struct QueueActionCounts {
  uint64_t matched = 0;    // Recipients not yet final the selection named.
  uint64_t done = 0;       // Acted on.
  uint64_t in_flight = 0;  // Being tried now: left to that attempt.
  bool cancelled = false;  // Stopped part way (the daemon stops).
  // kTransfer: recipients the other node refused or could not take now
  // (they stay here), and why the transfer stopped early ("" if it did
  // not: the other node went away).
  uint64_t kept = 0;
  std::string error;
};

// kTransfer's relay of one message to some of its recipients (the same
// attempts each): the recipient indexes the other node took, and its
// reply; an error leaves them all here (Unavailable stops the transfer).
struct Relayed {
  std::string reply;
  std::vector<uint32_t> accepted;
  std::vector<std::string> refused;
};
using RelayFn = std::function<absl::StatusOr<Relayed>(
    const queue::StoredMessage& message,
    const std::vector<queue::RecipientRecord>& recipients)>;

using RecipientKey = std::pair<queue::MessageId, uint32_t>;

struct QueueActionContext {
  queue::Store* store = nullptr;
  const outcome::Bus* outcomes = nullptr;
  // Bounce and delete of what delivery holds: every shard takes what it
  // has of `wanted` (DeliveryShard::TakeForOperator); returns how many were
  // taken. Blocks until the shards answered. Empty: no delivery runs.
  std::function<size_t(absl::flat_hash_set<RecipientKey> wanted, bool deleted)>
      take_from_delivery;
  // Failures that wait for their DSNs (bounce::Notifier): a big bounce
  // waits while it is over kMaxDsnBacklog, rather than outrun the notifier.
  std::function<size_t()> dsn_backlog;
  static constexpr size_t kMaxDsnBacklog = 50000;
  // Checked between pages: true stops the action there (the daemon
  // stops); what was done so far stays done.
  std::function<bool()> cancelled;
  size_t page = 500;  // Messages read at a time.
  // kTransfer: made for each transfer, with its destination.
  std::function<RelayFn(const std::string& to)> relay_to;
};

absl::StatusOr<QueueActionCounts> RunQueueAction(
    const QueueActionContext& context, QueueAction action,
    const QueueSelection& selection);

}  // namespace peregrine
