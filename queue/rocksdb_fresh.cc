// Fresh mail: what the store keeps in memory of messages it has just
// written, so that delivering them needs no scan of the schedule, no
// RocksDB read and no pread of a body written with O_DIRECT (see the
// comment at RocksStore::FreshCandidate). Recovery and deferred mail take
// the ordinary path; so does everything once the budget is spent.

#include <utility>

#include "queue/rocksdb_internal.h"
#include "queue/rocksdb_store.h"

namespace peregrine::queue {

void RocksStore::NoteClaimScheduled(uint16_t shard, absl::Time when) {
  auto [it, inserted] = batch_claim_min_.try_emplace(shard, when);
  if (!inserted) it->second = std::min(it->second, when);
}

bool RocksStore::ReserveFresh(PreparedMessage& m, MessageId id) {
  if (options_.fresh_bytes == 0 || m.records_value.empty()) return false;
  // The body, the envelope and the records, roughly.
  const size_t bytes = m.body.size() + 512 + 160 * m.records_value.size();
  size_t reserved = fresh_reserved_.load(std::memory_order_relaxed);
  do {
    if (reserved + bytes > options_.fresh_bytes) return false;
  } while (!fresh_reserved_.compare_exchange_weak(reserved, reserved + bytes,
                                                  std::memory_order_relaxed));
  FreshCandidate c;
  c.id = id;
  c.envelope = std::move(m.envelope_value);
  c.envelope.recipient_count = static_cast<uint32_t>(m.records_value.size());
  c.envelope.body_bytes = m.body.size();
  c.body = std::make_shared<const std::string>(std::move(m.body));
  c.envelope_value = std::move(m.envelope);  // Already in the batch.
  c.records = std::move(m.records_value);
  for (uint32_t i = 0; i < c.records.size(); ++i) {
    c.records[i].message = id;
    c.records[i].index = i;
  }
  c.bytes = bytes;
  batch_fresh_.push_back(std::move(c));
  return true;
}

void RocksStore::PreclaimFresh(const std::vector<FreshCandidate>& candidates) {
  if (candidates.empty()) return;
  absl::MutexLock lock(&floor_mu_);
  for (const FreshCandidate& c : candidates) {
    for (const RecipientRecord& r : c.records) {
      claims_[r.spec.shard].claimed.insert({r.message, r.index});
    }
  }
}

void RocksStore::PublishFresh(std::vector<FreshCandidate>& candidates) {
  if (candidates.empty()) return;
  {
    absl::MutexLock lock(&fresh_mu_);
    for (FreshCandidate& c : candidates) {
      Fresh& f = fresh_[c.id];
      f.envelope = std::move(c.envelope);
      f.envelope_value = std::move(c.envelope_value);
      f.body = std::move(c.body);
      f.attempted.assign(c.records.size(), false);
      f.unattempted = static_cast<uint32_t>(c.records.size());
      f.bytes = c.bytes;
    }
  }
  absl::MutexLock lock(&floor_mu_);
  for (FreshCandidate& c : candidates) {
    for (RecipientRecord& r : c.records) {
      fresh_due_[r.spec.shard].push_back(std::move(r));
    }
  }
}

void RocksStore::DropFresh(std::vector<FreshCandidate>& candidates) {
  if (candidates.empty()) return;
  absl::MutexLock lock(&floor_mu_);
  for (const FreshCandidate& c : candidates) {
    for (const RecipientRecord& r : c.records) {
      claims_[r.spec.shard].claimed.erase({r.message, r.index});
    }
    fresh_reserved_.fetch_sub(c.bytes, std::memory_order_relaxed);
  }
}

void RocksStore::FreshAttempted(MessageId id, uint32_t index,
                                std::string* envelope_value) {
  if (options_.fresh_bytes == 0) return;
  absl::MutexLock lock(&fresh_mu_);
  auto it = fresh_.find(id);
  if (it == fresh_.end()) return;
  Fresh& f = it->second;
  if (index >= f.attempted.size() || f.attempted[index]) return;
  f.attempted[index] = true;
  if (--f.unattempted > 0) return;
  fresh_reserved_.fetch_sub(f.bytes, std::memory_order_relaxed);
  if (envelope_value != nullptr) *envelope_value = std::move(f.envelope_value);
  fresh_.erase(it);
}

void RocksStore::TakeFresh(uint16_t shard, size_t limit,
                           std::vector<RecipientRecord>* out) {
  absl::MutexLock lock(&floor_mu_);
  auto it = fresh_due_.find(shard);
  if (it == fresh_due_.end()) return;
  std::deque<RecipientRecord>& due = it->second;
  while (!due.empty() && out->size() < limit) {
    out->push_back(std::move(due.front()));
    due.pop_front();
  }
}

absl::StatusOr<OutgoingMessage> RocksStore::ReadForSend(MessageId id) {
  {
    absl::MutexLock lock(&fresh_mu_);
    auto it = fresh_.find(id);
    if (it != fresh_.end()) {
      return OutgoingMessage{id, it->second.envelope, it->second.body};
    }
  }
  return Store::ReadForSend(id);
}

}  // namespace peregrine::queue
