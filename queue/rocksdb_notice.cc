// Store::UpdateWithNotice: failed recipients and the DSN about them in one
// atomic write (the pending group), so that neither goes without the
// other.

#include <tuple>

#include "absl/strings/str_cat.h"
#include "queue/rocksdb_internal.h"
#include "queue/rocksdb_store.h"

namespace peregrine::queue {

void RocksStore::UpdateWithNotice(std::vector<RecipientUpdate> updates,
                                  std::optional<NewMessage> notice,
                                  EnqueueDone done) {
  auto answer = [this](absl::Status s, EnqueueDone done) {
    Refuse(std::move(s),
           [done = std::move(done)](absl::Status s) mutable { done(s); });
  };
  if (options_.read_only) {
    return done(absl::FailedPreconditionError("queue: opened read-only"));
  }
  std::vector<std::string> records;
  for (RecipientUpdate& u : updates) {
    if (absl::Status s = CheckUpdate(u); !s.ok()) {
      return answer(std::move(s), std::move(done));
    }
    records.push_back(EncodeUpdated(u));
  }
  PreparedMessage m;
  if (notice.has_value()) {
    // No free-space floor here: a notice is small next to what the failed
    // message frees, and refusing it would leave the failure unrecorded.
    if (absl::Status s = PrepareMessage(*notice, &m); !s.ok()) {
      return answer(std::move(s), std::move(done));
    }
  }

  absl::ReaderMutexLock db_lock(&db_mu_);
  absl::MutexLock lock(&mu_);
  if (!db_) {
    waiters_.push_back(
        {[done = std::move(done)](absl::Status s) mutable { done(s); },
         Down()});
    work_.Signal();
    return;
  }
  std::vector<const RecipientRecord*> applied;
  std::string skipped;
  for (size_t i = 0; i < updates.size(); ++i) {
    absl::Status s = AddUpdateLocked(updates[i], records[i]);
    if (s.ok()) {
      applied.push_back(&updates[i].before);
    } else {
      absl::StrAppend(&skipped, skipped.empty() ? "" : "; ", s.message());
    }
  }
  // Nothing applied: someone else finished these recipients, and the
  // notice about them is not ours to send.
  MessageId id = 0;
  if (!applied.empty() && notice.has_value()) id = AddMessageLocked(m);
  std::vector<std::tuple<uint16_t, MessageId, uint32_t>> claims;
  for (const RecipientRecord* r : applied) {
    claims.emplace_back(r->spec.shard, r->message, r->index);
  }
  waiters_.push_back({[this, claims = std::move(claims), id, skipped,
                       done = std::move(done)](absl::Status s) mutable {
                        for (const auto& [shard, message, index] : claims) {
                          ReleaseClaim(shard, message, index);
                        }
                        if (!s.ok()) return done(s);
                        if (!skipped.empty() && claims.empty()) {
                          return done(absl::FailedPreconditionError(skipped));
                        }
                        done(id);
                      },
                      absl::OkStatus()});
  work_.Signal();
}

}  // namespace peregrine::queue
