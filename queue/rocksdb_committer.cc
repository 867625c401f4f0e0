// Over 800 lines, one concern: the write path. Enqueue and Update hand
// groups to the committer thread, which writes each group to the spool with
// one write and one flush, then applies it to RocksDB; free-space
// admission, the emergency reserve, checkpoints, and the record kept of
// finished messages all act on the one pending group, whose state would be
// scattered by a split.

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "base/log.h"
#include "queue/codec.h"
#include "queue/crc32c.h"
#include "queue/rocksdb_internal.h"
#include "queue/rocksdb_store.h"
#include "rocksdb/cache.h"
#include "rocksdb/slice_transform.h"
#include "rocksdb/table.h"
#include "rocksdb/write_batch.h"

namespace peregrine::queue {

using namespace rocks_internal;  // NOLINT: the store's own helpers.

// --- Write path -------------------------------------------------------------

MessageId RocksStore::NextId() {
  // Time-based so that ids sort by arrival and stay unique across restarts;
  // never below the last one, so a clock step back cannot reuse an id.
  MessageId candidate = static_cast<MessageId>(absl::ToUnixMicros(absl::Now()))
                        << 8;
  last_id_ = std::max(last_id_ + 1, candidate);
  return last_id_;
}

void RocksStore::NoteScheduled(uint16_t shard, absl::Time when) {
  auto [it, inserted] = batch_min_.try_emplace(shard, when);
  if (!inserted) it->second = std::min(it->second, when);
}

void RocksStore::Refuse(absl::Status status,
                        absl::AnyInvocable<void(absl::Status)> done) {
  absl::MutexLock lock(&mu_);
  waiters_.push_back({std::move(done), std::move(status)});
  work_.Signal();
}

absl::Status RocksStore::PrepareMessage(NewMessage& message,
                                        PreparedMessage* out) {
  if (options_.read_only) {  // No committer thread: answer here.
    return absl::FailedPreconditionError("queue: opened read-only");
  }
  if (message.recipients.empty()) {
    return absl::InvalidArgumentError("queue: message has no recipients");
  }
  if (message.recipients.size() > kMaxRecipients) {
    return absl::InvalidArgumentError(
        absl::StrCat("queue: more than ", kMaxRecipients, " recipients"));
  }
  for (const RecipientSpec& r : message.recipients) {
    if (r.shard >= options_.shards) {
      return absl::InvalidArgumentError(absl::StrCat(
          "queue: recipient shard ", r.shard, " >= shards ", options_.shards));
    }
  }
  // What the message takes on disk: its body in the spool, and roughly its
  // envelope and recipients in RocksDB.
  out->need = message.body.size() + 1024 + 256 * message.recipients.size();
  // Encode outside the lock; only keys need the id.
  out->now = absl::Now();
  message.envelope.recipient_count =
      static_cast<uint32_t>(message.recipients.size());
  message.envelope.body_bytes = message.body.size();
  out->envelope = codec::EncodeEnvelope(message.envelope);
  out->ref.length = static_cast<uint32_t>(message.body.size());
  out->ref.crc =
      rocksdb::crc32c::Extend(0, message.body.data(), message.body.size());
  out->records.reserve(message.recipients.size());
  // The queue keeps microseconds: a record in memory says what one read
  // back would.
  absl::Time due = absl::FromUnixMicros(absl::ToUnixMicros(out->now));
  for (RecipientSpec& spec : message.recipients) {
    RecipientRecord rec;
    rec.spec = std::move(spec);
    rec.next_attempt = due;
    rec.attempts = message.attempts;
    out->records.push_back(codec::EncodeRecipient(rec));
    out->shards.push_back(rec.spec.shard);
    if (options_.fresh_bytes > 0) out->records_value.push_back(std::move(rec));
  }
  if (options_.fresh_bytes > 0) out->envelope_value = message.envelope;
  out->body = std::move(message.body);
  return absl::OkStatus();
}

MessageId RocksStore::AddMessageLocked(PreparedMessage& m) {
  MessageId id = NextId();
  std::string key = codec::MessageKey(id);
  admitted_.fetch_add(m.need, std::memory_order_relaxed);
  group_admitted_ += m.need;
  // The reference holds the body's offset within the record; the committer
  // adds where the record goes.
  m.ref.offset = group_.AddBody(m.body, m.ref.crc);
  char encoded_ref[kBodyRefBytes];
  EncodeBodyRef(m.ref, encoded_ref);
  batch_.Put(spooled_, key, rocksdb::Slice(encoded_ref, kBodyRefBytes));
  patches_.push_back({batch_.GetDataSize() - kBodyRefBytes, m.ref.offset});
  group_ids_.push_back(id);
  batch_.Put(envelopes_, key, m.envelope);
  const bool fresh = ReserveFresh(m, id);
  for (uint32_t i = 0; i < m.records.size(); ++i) {
    batch_.Put(recipients_, codec::RecipientKey(id, i), m.records[i]);
    batch_.Put(schedule_, codec::ScheduleKey(m.shards[i], m.now, id, i), "");
    NoteScheduled(m.shards[i], m.now);
    if (!fresh) NoteClaimScheduled(m.shards[i], m.now);
  }
  Live& l = live_[id];
  l.total = l.pending = static_cast<uint32_t>(m.records.size());
  l.body_bytes = m.ref.length;
  batch_undo_.push_back({id, 0, true, nullptr});
  return id;
}

void RocksStore::Enqueue(NewMessage message, EnqueueDone done) {
  auto fail = [&](absl::Status status) {
    Refuse(std::move(status),
           [done = std::move(done)](absl::Status s) mutable { done(s); });
  };
  if (options_.read_only) {  // No committer thread: answer here.
    return done(absl::FailedPreconditionError("queue: opened read-only"));
  }
  PreparedMessage m;
  if (absl::Status s = PrepareMessage(message, &m); !s.ok()) return fail(s);
  // Admitted only when what it takes leaves the floor free, counting
  // messages admitted before and not written yet.
  if (!AcceptingNewMail() || !HasRoomFor(m.need)) {
    return fail(absl::ResourceExhaustedError(absl::StrCat(
        "queue: ", m.need >> 10,
        " KiB more would take free disk space on the "
        "device holding ",
        options_.path, " (",
        free_at_check_.load(std::memory_order_relaxed) >> 20,
        " MiB free) under the floor (queue.min_free_space, ", Floor() >> 20,
        " MiB); new mail is refused until "
        "space is freed")));
  }

  absl::ReaderMutexLock db_lock(&db_mu_);  // Column family handles.
  absl::MutexLock lock(&mu_);
  if (!db_) {
    waiters_.push_back(
        {[done = std::move(done)](absl::Status s) mutable { done(s); },
         Down()});
    work_.Signal();
    return;
  }
  // Again under the lock, which every admission takes: two shards cannot
  // both take the last room.
  if (!HasRoomFor(m.need)) {
    waiters_.push_back(
        {[done = std::move(done)](absl::Status s) mutable { done(s); },
         absl::ResourceExhaustedError(absl::StrCat(
             "queue: free disk space on the device holding ", options_.path,
             " would go under the floor (queue.min_free_space); new mail is "
             "refused "
             "until space is freed"))});
    work_.Signal();
    return;
  }
  MessageId id = AddMessageLocked(m);
  waiters_.push_back({[done = std::move(done), id](absl::Status s) mutable {
                        if (s.ok()) {
                          done(id);
                        } else {
                          done(s);
                        }
                      },
                      absl::OkStatus()});
  work_.Signal();
}

absl::Status RocksStore::CheckUpdate(const RecipientUpdate& update) const {
  if (options_.read_only) {
    return absl::FailedPreconditionError("queue: opened read-only");
  }
  if (update.state == RecipientState::kQueued) {
    return absl::InvalidArgumentError(
        "queue: an attempt cannot make a recipient 'queued'");
  }
  return absl::OkStatus();
}

std::string RocksStore::EncodeUpdated(RecipientUpdate& update) {
  const RecipientRecord& before = update.before;
  RecipientRecord after = before;
  after.state = update.state;
  after.attempts = before.attempts + (update.attempted ? 1 : 0);
  after.held = before.held + update.held_more;
  after.delay_notified = before.delay_notified || update.delay_notified;
  after.last_reply = std::move(update.reply);
  if (update.state == RecipientState::kDeferred) {
    // The queue keeps microseconds; round here so that the record, its
    // schedule key and what Due() returns agree.
    after.next_attempt =
        absl::FromUnixMicros(absl::ToUnixMicros(update.next_attempt));
  }
  update.next_attempt = after.next_attempt;
  return codec::EncodeRecipient(after);
}

absl::Status RocksStore::AddUpdateLocked(const RecipientUpdate& update,
                                         const std::string& record) {
  const RecipientRecord& before = update.before;
  auto it = live_.find(before.message);
  if (it == live_.end() || before.index >= it->second.total ||
      it->second.IsFinal(before.index)) {
    return absl::FailedPreconditionError(
        absl::StrCat("queue: recipient ", before.index, " of message ",
                     FormatMessageId(before.message), " is final or unknown"));
  }
  Live& l = it->second;
  const bool keep =
      finished_ != nullptr && options_.keep_finished > absl::ZeroDuration();
  std::string fresh_envelope;
  FreshAttempted(before.message, before.index,
                 keep ? &fresh_envelope : nullptr);
  batch_.Delete(schedule_,
                codec::ScheduleKey(before.spec.shard, before.next_attempt,
                                   before.message, before.index));
  if (IsFinal(update.state)) {
    l.SetFinal(before.index);
    batch_undo_.push_back({before.message, before.index, false, nullptr});
    ++totals_[static_cast<int>(update.state)];
    totals_dirty_ = true;
    if (keep) {
      batch_.Put(finished_, codec::RecipientKey(before.message, before.index),
                 record);
    }
    if (--l.pending == 0) {
      // The last recipient: the message is done everywhere.
      std::string key = codec::MessageKey(before.message);
      if (keep) {
        // Its envelope goes with the finished record: from memory for mail
        // just queued, else read (committed long ago: delivery starts only
        // after the enqueue is on disk).
        std::string envelope = std::move(fresh_envelope);
        if (!envelope.empty() ||
            db_->Get(rocksdb::ReadOptions(), envelopes_, key, &envelope).ok()) {
          batch_.Put(finished_,
                     codec::RecipientKey(before.message, kEnvelopeIndex),
                     envelope);
        }
      }
      batch_.Delete(l.segment != 0 ? spooled_ : bodies_, key);
      batch_.Delete(envelopes_, key);
      for (uint32_t i = 0; i < l.total; ++i) {
        batch_.Delete(recipients_, codec::RecipientKey(before.message, i));
      }
      batch_undo_.back().erased = std::make_unique<Live>(std::move(l));
      live_.erase(it);
    } else {
      batch_.Put(recipients_, codec::RecipientKey(before.message, before.index),
                 record);
    }
  } else {
    batch_.Put(recipients_, codec::RecipientKey(before.message, before.index),
               record);
    batch_.Put(schedule_,
               codec::ScheduleKey(before.spec.shard, update.next_attempt,
                                  before.message, before.index),
               "");
    NoteScheduled(before.spec.shard, update.next_attempt);
    NoteClaimScheduled(before.spec.shard, update.next_attempt);
  }
  return absl::OkStatus();
}

void RocksStore::ReleaseClaim(uint16_t shard, MessageId id, uint32_t index) {
  absl::MutexLock claims_lock(&floor_mu_);
  auto c = claims_.find(shard);
  if (c != claims_.end()) c->second.claimed.erase({id, index});
}

void RocksStore::Update(RecipientUpdate update, Done done) {
  if (options_.read_only) {  // No committer thread: answer here.
    return done(absl::FailedPreconditionError("queue: opened read-only"));
  }
  if (absl::Status s = CheckUpdate(update); !s.ok()) {
    return Refuse(std::move(s), std::move(done));
  }
  std::string record = EncodeUpdated(update);

  absl::ReaderMutexLock db_lock(&db_mu_);  // Column family handles.
  absl::MutexLock lock(&mu_);
  if (!db_) {
    waiters_.push_back({std::move(done), Down()});
    work_.Signal();
    return;
  }
  absl::Status added = AddUpdateLocked(update, record);
  if (added.ok()) {
    // The claim goes once this batch is on disk (or failed): until then a
    // scan would still find the old schedule entry and the old record, and
    // hand the recipient out a second time.
    done = [this, shard = update.before.spec.shard, id = update.before.message,
            index = update.before.index,
            done = std::move(done)](absl::Status s) mutable {
      ReleaseClaim(shard, id, index);
      done(std::move(s));
    };
  }
  waiters_.push_back({std::move(done), std::move(added)});
  work_.Signal();
}

std::string RocksStore::EmergencyPath() const {
  return options_.path + "/emergency-space";
}

void RocksStore::ReleaseEmergencySpaceIfFull() {
  // What an open writes at most: a MANIFEST, an OPTIONS file, a new WAL,
  // the spool's checkpoint; RocksDB aborts when one of them hits ENOSPC.
  constexpr uint64_t kOpenNeeds = 4 << 20;
  uint64_t free = options_.free_bytes();
  if (free >= kOpenNeeds || options_.emergency_space_bytes == 0) return;
  std::string path = EmergencyPath();
  if (::unlink(path.c_str()) == 0) {
    emergency_released_ = true;
    log::Error(kLog,
               "the disk holding %s is full (%d KiB free): deleted the %d MiB "
               "emergency space kept there for this, to start and deliver "
               "what is queued; new mail is refused (452) until space is "
               "freed on that device",
               options_.path, free >> 10, options_.emergency_space_bytes >> 20);
  } else {
    log::Error(kLog,
               "the disk holding %s is full (%d KiB free) and no emergency "
               "space is left to free; the queue may not open: free space "
               "on that device",
               options_.path, free >> 10);
  }
}

void RocksStore::KeepEmergencySpace(uint64_t free) {
  const uint64_t bytes = options_.emergency_space_bytes;
  if (bytes == 0 || options_.read_only) return;
  // Only with room to spare: never what pushes the disk under the floor.
  if (free < options_.min_free_bytes + 2 * bytes) return;
  std::string path = EmergencyPath();
  struct stat st;
  if (::stat(path.c_str(), &st) == 0) return;
  std::string tmp = path + ".part";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return;
  // Blocks reserved, nothing written: fast, and freed in one unlink.
  int err = posix_fallocate(fd, 0, static_cast<off_t>(bytes));
  ::close(fd);
  if (err != 0 || ::rename(tmp.c_str(), path.c_str()) != 0) {
    ::unlink(tmp.c_str());
    return;
  }
  if (emergency_released_.exchange(false)) {
    log::Info(kLog, "the emergency space in %s is kept again", path);
  }
}

uint64_t RocksStore::Floor() const {
  return options_.min_free_bytes +
         (emergency_released_.load(std::memory_order_relaxed)
              ? options_.emergency_space_bytes
              : 0);
}

bool RocksStore::HasRoomFor(uint64_t bytes) const {
  if (options_.min_free_bytes == 0) return true;
  uint64_t free = free_at_check_.load(std::memory_order_relaxed);
  uint64_t need = admitted_.load(std::memory_order_relaxed) + bytes + Floor();
  return free >= need;
}

void RocksStore::CheckFreeSpace() {
  last_space_check_ = absl::Now();
  if (options_.min_free_bytes == 0 && options_.emergency_space_bytes == 0) {
    return;
  }
  uint64_t free = options_.free_bytes();
  free_at_check_.store(free, std::memory_order_relaxed);
  KeepEmergencySpace(free);
  if (options_.min_free_bytes == 0) return;
  bool ok = free >= Floor();
  bool was = accepting_.exchange(ok);
  if (was && !ok) {
    log::Error(kLog,
               "free disk space %d MiB is under the floor of %d MiB: refusing "
               "new mail (452) until space is freed",
               free >> 20, Floor() >> 20);
  } else if (!was && ok) {
    log::Info(kLog, "free disk space %d MiB: accepting new mail again",
              free >> 20);
  }
}

void RocksStore::PrepareReserve(uint64_t max_bytes) {
  if (absl::Now() < prepare_after_) return;
  const uint64_t segment = options_.spool_segment_bytes;
  while (max_bytes > 0 && spool_->ReserveShort()) {
    if (options_.free_bytes() < options_.min_free_bytes + 2 * segment) {
      prepare_after_ = absl::Now() + kPrepareRetry;
      return;
    }
    uint64_t n = std::min(max_bytes, segment);
    if (absl::Status s = spool_->Prepare(n); !s.ok()) {
      log::Warn(kLog,
                "%s; the spool grows its segment files instead (slower "
                "commits); trying again in a minute",
                s.message());
      prepare_after_ = absl::Now() + kPrepareRetry;
      return;
    }
    max_bytes -= n;
  }
}

absl::Status RocksStore::Checkpoint() {
  // Tests losing RocksDB's unsynced writes persist no checkpoint, so no
  // segment may be freed: replay starts at the old one.
  if (options_.test_lose_unsynced_rocksdb_writes) return absl::OkStatus();
  SpoolPosition next = spool_->Next();
  rocksdb::WriteOptions wo;
  wo.sync = options_.sync;
  rocksdb::WriteBatch batch;
  batch.Put(meta_, kCheckpointKey, EncodeSpoolPosition(next));
  // The sync of this write takes every write before it along (one WAL).
  if (absl::Status s = FromRocks(db_->Write(wo, &batch), "checkpoint");
      !s.ok()) {
    return s;
  }
  spool_->Checkpointed(next);
  return absl::OkStatus();
}

void RocksStore::CommitterMain() {
  rocksdb::WriteOptions wo;  // The spool's fdatasync makes a group durable.
  wo.disableWAL = options_.test_lose_unsynced_rocksdb_writes;
  bool failed_before = false;
  absl::Time last_checkpoint = absl::Now();
  bool checkpoint_due = false;  // Something was written since the last.
  SpoolGroup group;
  absl::Time last_relocation = absl::Now();
  absl::Time last_commit = absl::InfinitePast();
  // Swapped with the shards' side each round and emptied here, so that
  // both sides keep their capacity instead of allocating afresh.
  rocksdb::WriteBatch batch;
  std::vector<Waiter> waiters;
  absl::flat_hash_map<uint16_t, absl::Time> scheduled;
  absl::flat_hash_map<uint16_t, absl::Time> claim_scheduled;
  std::vector<FreshCandidate> fresh;
  std::vector<Undo> undo;
  std::vector<Patch> patches;
  std::vector<MessageId> ids;
  std::vector<Relocated> relocated;
  uint64_t group_bytes = 0;  // What the group's new messages were admitted for.
  while (true) {
    if (absl::Now() - last_relocation >= options_.spool_relocate_interval) {
      last_relocation = absl::Now();
      if (!failed_before) Relocate();
    }
    if (absl::Now() - last_finished_sweep_ >= kFinishedSweepInterval &&
        !failed_before) {
      last_finished_sweep_ = absl::Now();
      SweepFinished();
    }
    batch.Clear();
    waiters.clear();
    scheduled.clear();
    claim_scheduled.clear();
    fresh.clear();
    undo.clear();
    patches.clear();
    ids.clear();
    relocated.clear();
    bool stop;
    bool preparing = spool_used_ && !failed_before && spool_->ReserveShort() &&
                     absl::Now() >= prepare_after_;
    {
      absl::MutexLock lock(&mu_);
      auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return !waiters_.empty() || stopping_;
      };
      absl::Duration wait = kSpaceCheckInterval;
      if (preparing) {
        wait = std::clamp(last_commit + kPrepareWhenIdle - absl::Now(),
                          absl::ZeroDuration(), wait);
      }
      mu_.AwaitWithTimeout(absl::Condition(&ready), wait);
      if (totals_dirty_) {
        batch_.Put(meta_, kTotalsKey, EncodeTotals(totals_));
        totals_dirty_ = false;
      }
      std::swap(batch, batch_);
      std::swap(group, group_);
      group_.Clear();
      waiters.swap(waiters_);
      answering_ = waiters.size();
      scheduled.swap(batch_min_);
      claim_scheduled.swap(batch_claim_min_);
      fresh.swap(batch_fresh_);
      undo.swap(batch_undo_);
      patches.swap(patches_);
      ids.swap(group_ids_);
      relocated.swap(relocated_);
      group_bytes = group_admitted_;
      group_admitted_ = 0;
      stop = stopping_ && waiters.empty();
    }
    if (absl::Now() - last_space_check_ >= kSpaceCheckInterval) {
      CheckFreeSpace();
    }
    if (checkpoint_due && !failed_before &&
        (stop || absl::Now() - last_checkpoint >= kCheckpointInterval)) {
      absl::ReaderMutexLock lock(&db_mu_);
      if (absl::Status s = Checkpoint(); !s.ok()) {
        log::Error(kLog, "%s", s.message());
      } else {
        checkpoint_due = false;
      }
      last_checkpoint = absl::Now();
    }
    if (stop) break;
    if (failed_before && Reopen()) failed_before = false;
    if (waiters.empty()) {
      if (preparing && absl::Now() - last_commit >= kPrepareWhenIdle) {
        PrepareReserve(kPrepareChunk);
      }
      continue;
    }

    absl::Status status;
    if (batch.Count() > 0) {
      bool rocks_failed = false;
      if (failed_before) {
        status = Down();
      } else {
        absl::ReaderMutexLock lock(&db_mu_);
        PreclaimFresh(fresh);
        const absl::Time began = absl::Now();
        status = Commit(batch, group, patches, ids, relocated, &rocks_failed);
        commit_seconds_.Observe(absl::ToDoubleSeconds(absl::Now() - began));
        commit_writes_.Observe(static_cast<double>(waiters.size()));
        checkpoint_due = true;
        last_commit = absl::Now();
        spool_used_ = true;
      }
      commits_.fetch_add(1, std::memory_order_relaxed);
      // Written (or failed): the free space says the rest from now on.
      if (options_.min_free_bytes > 0) {
        free_at_check_.store(options_.free_bytes(), std::memory_order_relaxed);
      }
      admitted_.fetch_sub(group_bytes, std::memory_order_relaxed);
      group_bytes = 0;
      if (!status.ok()) {
        bool full = absl::IsResourceExhausted(status) ||
                    absl::StrContains(status.message(), "No space left");
        log::Error(kLog, "%s%s", status.message(),
                   full ? absl::StrCat("; no space left on the device holding ",
                                       options_.path,
                                       ": the group was refused (451); free "
                                       "space there")
                        : "");
        // RocksDB treats most I/O errors as fatal: reopen it. A failed
        // spool write leaves RocksDB as it was; the next group is written
        // in the failed one's place.
        if (rocks_failed) failed_before = true;
        // The in-memory table counted this batch; the disk did not.
        UndoBatch(undo);
        DropFresh(fresh);
        CheckFreeSpace();
      } else {
        failed_before = false;
        for (const Undo& u : undo) {
          if (u.erased && u.erased->segment != 0) {
            spool_->Unref(u.erased->segment, 1, u.erased->body_bytes);
          }
        }
        PublishFresh(fresh);
        absl::MutexLock lock(&floor_mu_);
        for (auto [shard, when] : scheduled) {
          auto [it, inserted] = scheduled_min_.try_emplace(shard, when);
          if (!inserted) it->second = std::min(it->second, when);
        }
        for (auto [shard, when] : claim_scheduled) {
          Claims& c = claims_[shard];
          c.rewind = std::min(c.rewind, when);
        }
      }
    }
    for (Waiter& w : waiters) {
      w.done(w.preset.ok() ? status : w.preset);
    }
    absl::MutexLock lock(&mu_);
    answering_ = 0;
  }
}

bool RocksStore::WaitAnswered(absl::Duration timeout) {
  absl::MutexLock lock(&mu_);
  auto answered = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return waiters_.empty() && answering_ == 0;
  };
  return mu_.AwaitWithTimeout(absl::Condition(&answered), timeout);
}

absl::Status RocksStore::Commit(const rocksdb::WriteBatch& batch,
                                SpoolGroup& group,
                                const std::vector<Patch>& patches,
                                const std::vector<MessageId>& ids,
                                const std::vector<Relocated>& relocated,
                                bool* rocks_failed) {
  std::string data = batch.Data();
  auto at = spool_->Place(group, data.size());
  if (!at.ok()) return at.status();
  // Each body reference gets the record's segment and offset.
  for (const Patch& p : patches) {
    BodyRef ref;
    DecodeBodyRef(absl::string_view(data).substr(p.at, kBodyRefBytes), &ref);
    ref.segment = at->segment;
    ref.offset = at->offset + p.rel;
    EncodeBodyRef(ref, data.data() + p.at);
  }
  if (absl::Status s = spool_->Write(*at, group, data); !s.ok()) return s;
  uint64_t bytes = 0;
  if (!ids.empty()) {
    // Before the batch is visible: a recipient claimed and finished at once
    // must find its message's segment.
    absl::MutexLock lock(&mu_);
    for (MessageId id : ids) {
      auto it = live_.find(id);
      if (it == live_.end()) continue;
      it->second.segment = static_cast<uint32_t>(at->segment);
      bytes += it->second.body_bytes;
    }
  }
  spool_->Ref(at->segment, static_cast<uint32_t>(ids.size()), bytes);
  rocksdb::WriteBatch durable{std::move(data)};
  rocksdb::WriteOptions wo;
  wo.disableWAL = options_.test_lose_unsynced_rocksdb_writes;
  absl::Status s = FromRocks(db_->Write(wo, &durable), "write");
  if (!s.ok()) {
    *rocks_failed = true;
    // Callers hear of the failure, so replay must not bring the group
    // back.
    spool_->Unref(at->segment, static_cast<uint32_t>(ids.size()), bytes);
    if (absl::Status v = spool_->Void(*at, group, durable.Data()); !v.ok()) {
      log::Error(kLog,
                 "cannot void spool record %d:%d after a failed write (%s); "
                 "a crash before the next checkpoint would restore it",
                 at->segment, at->offset, v.message());
    }
    return s;
  }
  if (!relocated.empty()) {
    // Moved bodies count in their new segment from now on; one finished
    // meanwhile was counted off its old one.
    absl::MutexLock lock(&mu_);
    for (const Relocated& r : relocated) {
      auto it = live_.find(r.id);
      if (it == live_.end() || it->second.segment != r.from) continue;
      it->second.segment = static_cast<uint32_t>(at->segment);
      spool_->Ref(at->segment, 1, it->second.body_bytes);
      spool_->Unref(r.from, 1, it->second.body_bytes);
    }
  }
  return s;
}

void RocksStore::SweepFinished() {
  if (options_.keep_finished <= absl::ZeroDuration()) return;
  absl::ReaderMutexLock db_lock(&db_mu_);
  if (!db_ || finished_ == nullptr) return;
  // Ids are microseconds since the epoch, shifted: the cut is an id.
  MessageId cut = static_cast<MessageId>(
                      absl::ToUnixMicros(absl::Now() - options_.keep_finished))
                  << 8;
  rocksdb::Status s =
      db_->DeleteRange(rocksdb::WriteOptions(), finished_, codec::MessageKey(0),
                       codec::MessageKey(cut));
  if (!s.ok()) {
    log::Warn(kLog, "dropping finished records older than %s: %s",
              absl::FormatDuration(options_.keep_finished), s.ToString());
  }
}

absl::StatusOr<StoredMessage> RocksStore::ReadFinished(MessageId id) {
  std::string not_found = absl::StrCat(
      "no message ", FormatMessageId(id), " in the queue",
      options_.keep_finished > absl::ZeroDuration()
          ? absl::StrCat(", and none finished in the last ",
                         absl::FormatDuration(options_.keep_finished),
                         " (queue.keep_finished)")
          : "");
  if (finished_ == nullptr) return absl::NotFoundError(not_found);
  StoredMessage m;
  m.id = id;
  m.finished = true;
  bool have_envelope = false;
  std::string prefix = codec::MessageKey(id);
  std::unique_ptr<rocksdb::Iterator> it(
      db_->NewIterator(rocksdb::ReadOptions(), finished_));
  for (it->Seek(prefix); it->Valid() && it->key().starts_with(prefix);
       it->Next()) {
    MessageId got;
    uint32_t index;
    if (!codec::ParseRecipientKey(Sv(it->key()), &got, &index)) continue;
    if (index == kEnvelopeIndex) {
      auto envelope = codec::DecodeEnvelope(Sv(it->value()));
      if (!envelope.ok()) return envelope.status();
      m.envelope = *std::move(envelope);
      have_envelope = true;
      continue;
    }
    auto rec = codec::DecodeRecipient(id, index, Sv(it->value()));
    if (!rec.ok()) return rec.status();
    m.recipients.push_back(*std::move(rec));
  }
  if (!it->status().ok()) return FromRocks(it->status(), "read finished");
  if (!have_envelope) return absl::NotFoundError(not_found);
  return m;
}

void RocksStore::Relocate() {
  constexpr size_t kMaxBytes = 8 << 20;  // A pass; the next one goes on.
  absl::flat_hash_set<uint64_t> segments;
  size_t bytes = 0;
  absl::Time closed_before = absl::Now() - options_.spool_relocate_after;
  for (uint64_t s = spool_->SparseSegment(0, closed_before);
       s != 0 && bytes < kMaxBytes;
       s = spool_->SparseSegment(s, closed_before)) {
    segments.insert(s);
    bytes += spool_->LiveBytes(s);
  }
  if (segments.empty()) return;
  std::vector<std::pair<MessageId, uint64_t>> ids;
  {
    absl::MutexLock lock(&mu_);
    for (const auto& [id, l] : live_) {
      if (segments.contains(l.segment)) ids.push_back({id, l.segment});
    }
  }
  size_t moved = 0;
  absl::ReaderMutexLock db_lock(&db_mu_);
  if (!db_) return;
  for (auto [id, segment] : ids) {
    std::string key = codec::MessageKey(id), value;
    BodyRef ref;
    rocksdb::Status st =
        db_->Get(rocksdb::ReadOptions(), spooled_, key, &value);
    if (!st.ok() || !DecodeBodyRef(value, &ref) || ref.segment != segment) {
      continue;  // Finished meanwhile.
    }
    auto body = spool_->ReadBody(ref);
    if (!body.ok()) {
      log::Error(kLog, "cannot move the body of message %s: %s",
                 FormatMessageId(id), body.status().message());
      continue;
    }
    absl::MutexLock lock(&mu_);
    auto it = live_.find(id);
    if (it == live_.end() || it->second.segment != segment) continue;
    BodyRef moved_ref = ref;
    moved_ref.offset = group_.AddBody(*body, ref.crc);
    batch_.Put(spooled_, key, EncodeBodyRef(moved_ref));
    patches_.push_back(
        {batch_.GetDataSize() - kBodyRefBytes, moved_ref.offset});
    relocated_.push_back({id, static_cast<uint32_t>(segment)});
    ++moved;
  }
  if (moved == 0) return;
  log::Info(kLog,
            "spool: moving %d bodies out of %d old segments, which they alone "
            "keep on disk",
            moved, segments.size());
  absl::MutexLock lock(&mu_);
  waiters_.push_back({[](absl::Status) {}, absl::OkStatus()});
  work_.Signal();
}

void RocksStore::UndoBatch(std::vector<Undo>& undo) {
  absl::MutexLock lock(&mu_);
  for (auto u = undo.rbegin(); u != undo.rend(); ++u) {
    if (u->enqueued) {
      live_.erase(u->id);
      continue;
    }
    if (u->erased) {
      live_[u->id] = std::move(*u->erased);
    }
    auto it = live_.find(u->id);
    if (it == live_.end()) continue;
    it->second.ClearFinal(u->index);
    ++it->second.pending;
  }
}

}  // namespace peregrine::queue
