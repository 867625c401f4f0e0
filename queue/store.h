// Store: the durable queue, as the rest of Peregrine sees it.
//
// "250 OK" means on stable storage: Enqueue completes only after the
// message, its envelope and every recipient are written and (in fsync mode)
// synced, all in one atomic write. Writes from every shard are joined into
// one write per fsync by a committer thread (group commit); completion
// callbacks run on that thread, so a shard hops back to itself from there.
// Nothing here blocks a reactor on a write.
//
// Recipient records change atomically (deferred with a next time,
// delivered, failed, expired). A message's body is deleted only when its
// last recipient is final, whichever shards own its recipients.
//
// Reads (Due, ReadMessage, inspection) are synchronous RocksDB reads from
// the calling thread: memory or block cache in the common case.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "queue/types.h"

namespace peregrine::queue {

class Store {
 public:
  using EnqueueDone = absl::AnyInvocable<void(absl::StatusOr<MessageId>)>;
  using Done = absl::AnyInvocable<void(absl::Status)>;

  virtual ~Store() = default;

  // Queues a message; each recipient is due at once on its shard.
  // Errors: ResourceExhausted (disk below its floor: answer 452),
  // Unavailable (the write failed: answer 451), InvalidArgument.
  virtual void Enqueue(NewMessage message, EnqueueDone done) = 0;

  // Records one attempt's outcome. FailedPrecondition if the recipient is
  // already final or unknown (nothing is written then).
  virtual void Update(RecipientUpdate update, Done done) = 0;

  // Records several attempts' outcomes and queues `notice` (a DSN about
  // them) in one atomic write: either the recipients are failed and their
  // notice is queued, or neither. An update for a recipient already final
  // is skipped; when every one is, the notice is dropped too and `done`
  // gets FailedPrecondition. Otherwise `done` gets the notice's id (0
  // without one). The notice is not held to the free-space floor: it is
  // small, and refusing it would leave the failure unrecorded.
  // The default (for test stores) is not atomic: the updates, then the
  // notice.
  virtual void UpdateWithNotice(std::vector<RecipientUpdate> updates,
                                std::optional<NewMessage> notice,
                                EnqueueDone done) {
    for (RecipientUpdate& u : updates)
      Update(std::move(u), [](absl::Status) {});
    if (notice.has_value()) return Enqueue(*std::move(notice), std::move(done));
    done(MessageId{0});
  }

  // Up to `limit` non-final recipients of `shard` with next_attempt <= now,
  // earliest first. They stay due until Update() moves them.
  virtual absl::StatusOr<std::vector<RecipientRecord>> Due(int shard,
                                                           absl::Time now,
                                                           size_t limit) = 0;

  // The delivery scheduler's Due(): like Due(), but a recipient returned
  // once is not returned again by this process until Update() moves it or
  // Unclaim() gives it back, so in-flight work is not fetched twice and
  // the scan need not walk over it. A restart forgets every claim.
  virtual absl::StatusOr<std::vector<RecipientRecord>> Claim(int shard,
                                                             absl::Time now,
                                                             size_t limit) = 0;
  virtual void Unclaim(const RecipientRecord& record) = 0;

  // For an operator's action (admin API): claims recipient `index` of
  // message `id` as Claim() would, so that delivery leaves it alone until
  // an update for it is on disk or Unclaim() gives it back. nullopt:
  // delivery has it (fresh, waiting at its site, being tried). NotFound:
  // final or unknown.
  virtual absl::StatusOr<std::optional<RecipientRecord>> ClaimOne(
      MessageId id, uint32_t index) {
    return absl::UnimplementedError("this queue has no operator actions");
  }

  // A message in the queue (NotFound once it is finished).
  virtual absl::StatusOr<StoredMessage> Read(MessageId id, bool with_body) = 0;
  // What delivery sends: the envelope and body (recipients may be left
  // out). A store may answer from memory for mail it has just written.
  virtual absl::StatusOr<OutgoingMessage> ReadForSend(MessageId id) {
    auto m = Read(id, true);
    if (!m.ok()) return m.status();
    return OutgoingMessage{
        m->id, std::move(m->envelope),
        std::make_shared<const std::string>(std::move(m->body))};
  }
  // For operators: a message in the queue, or the short record kept of it
  // once finished (StoredMessage::finished; no body).
  virtual absl::StatusOr<StoredMessage> Lookup(MessageId id) {
    return Read(id, false);
  }

  // For operators (CLI, admin API): whole-queue scans.
  virtual absl::StatusOr<QueueCounts> Counts() = 0;
  virtual absl::StatusOr<std::vector<StoredMessage>> List(
      const ListFilter& filter) = 0;

  // False while free disk space is under the configured floor.
  virtual bool AcceptingNewMail() const = 0;
  // False when `bytes` more (a message announced with SIZE) would take free
  // disk space under the floor, counting what is accepted but not yet
  // written. Enqueue() makes the same check with the message's real size.
  virtual bool HasRoomFor(uint64_t bytes) const { return AcceptingNewMail(); }
};

}  // namespace peregrine::queue
