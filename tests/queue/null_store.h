// NullStore: a queue::Store that keeps nothing, for tests and fuzz targets
// of the code above the queue (reception). Every scan is empty, every
// update succeeds; Enqueue answers at once with a new id. Subclasses
// override Enqueue to answer late or not at all. Single-threaded unless the
// subclass says otherwise. Header-only, so fuzz targets built by hand can
// include it.
#pragma once

#include <atomic>
#include <cstdint>
#include <vector>

#include "queue/store.h"

namespace peregrine::queue {

class NullStore : public Store {
 public:
  void Enqueue(NewMessage, EnqueueDone done) override { done(++next_id_); }
  void Update(RecipientUpdate, Done done) override { done(absl::OkStatus()); }
  absl::StatusOr<std::vector<RecipientRecord>> Due(int, absl::Time,
                                                   size_t) override {
    return std::vector<RecipientRecord>{};
  }
  absl::StatusOr<std::vector<RecipientRecord>> Claim(int, absl::Time,
                                                     size_t) override {
    return std::vector<RecipientRecord>{};
  }
  void Unclaim(const RecipientRecord&) override {}
  absl::StatusOr<StoredMessage> Read(MessageId, bool) override {
    return absl::NotFoundError("a NullStore keeps nothing");
  }
  absl::StatusOr<QueueCounts> Counts() override { return QueueCounts{}; }
  absl::StatusOr<std::vector<StoredMessage>> List(const ListFilter&) override {
    return std::vector<StoredMessage>{};
  }
  bool AcceptingNewMail() const override { return true; }

 protected:
  std::atomic<uint64_t> next_id_{0};
};

}  // namespace peregrine::queue
