// Recovery at open: the live state rebuilt from RocksDB, the spool
// replayed from the last checkpoint, schedules moved to the shards that
// own them now.

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

// --- Recovery ---------------------------------------------------------------

absl::Status RocksStore::RebuildLive() {
  absl::ReaderMutexLock db_lock(&db_mu_);
  LiveMap live;
  rocksdb::ReadOptions ro;
  ro.fill_cache = false;
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(ro, envelopes_));
  for (it->SeekToFirst(); it->Valid(); it->Next()) {
    MessageId id;
    if (!codec::ParseMessageKey(Sv(it->key()), &id)) continue;
    auto envelope = codec::DecodeEnvelope(Sv(it->value()));
    if (!envelope.ok()) return envelope.status();
    Live& l = live[id];
    l.total = envelope->recipient_count;
  }
  if (!it->status().ok()) return FromRocks(it->status(), "recovery");
  it.reset(db_->NewIterator(ro, recipients_));
  for (it->SeekToFirst(); it->Valid(); it->Next()) {
    MessageId id;
    uint32_t index;
    if (!codec::ParseRecipientKey(Sv(it->key()), &id, &index)) continue;
    auto found = live.find(id);
    if (found == live.end() || index >= found->second.total) continue;
    auto rec = codec::DecodeRecipient(id, index, Sv(it->value()));
    if (!rec.ok()) return rec.status();
    if (IsFinal(rec->state)) {
      found->second.SetFinal(index);
    } else {
      ++found->second.pending;
    }
  }
  if (!it->status().ok()) return FromRocks(it->status(), "recovery");
  it.reset(db_->NewIterator(ro, spooled_));
  for (it->SeekToFirst(); it->Valid(); it->Next()) {
    MessageId id;
    BodyRef ref;
    if (!codec::ParseMessageKey(Sv(it->key()), &id)) continue;
    auto found = live.find(id);
    if (found == live.end()) continue;
    if (!DecodeBodyRef(Sv(it->value()), &ref) || ref.segment == 0 ||
        ref.segment > UINT32_MAX) {
      return absl::DataLossError(
          absl::StrCat("queue recovery: the body reference of message ",
                       FormatMessageId(id), " is garbled"));
    }
    found->second.segment = static_cast<uint32_t>(ref.segment);
    found->second.body_bytes = ref.length;
  }
  if (!it->status().ok()) return FromRocks(it->status(), "recovery");
  absl::MutexLock lock(&mu_);
  live_ = std::move(live);
  return absl::OkStatus();
}

absl::Status RocksStore::Recover(RecoveryStats* stats) {
  absl::Time start = absl::Now();
  {
    // Groups acknowledged after the last checkpoint are in the spool; RocksDB
    // has them unless the machine went down before its WAL reached the disk.
    absl::ReaderMutexLock db_lock(&db_mu_);
    SpoolPosition from;
    std::string value;
    rocksdb::Status st =
        db_->Get(rocksdb::ReadOptions(), meta_, kCheckpointKey, &value);
    if (st.ok() && !DecodeSpoolPosition(value, &from)) {
      return absl::DataLossError(
          "queue recovery: the spool checkpoint is garbled");
    }
    if (!st.ok() && !st.IsNotFound()) return FromRocks(st, "recovery");
    rocksdb::WriteOptions wo;
    wo.disableWAL = options_.test_lose_unsynced_rocksdb_writes;
    absl::Status s = spool_->Replay(
        from,
        [&](absl::string_view data) {
          rocksdb::WriteBatch batch{std::string(data)};
          return FromRocks(db_->Write(wo, &batch), "recovery replay");
        },
        &stats->replayed);
    if (!s.ok()) return s;
  }
  if (absl::Status s = RebuildLive(); !s.ok()) return s;
  absl::ReaderMutexLock db_lock(&db_mu_);

  rocksdb::WriteBatch fix;
  uint64_t pending = 0, final = 0, moved = 0;
  std::string previous_shards;
  bool shards_changed =
      db_->Get(rocksdb::ReadOptions(), meta_, kShardsKey, &previous_shards)
          .ok() &&
      previous_shards != std::to_string(options_.shards);

  // Walk recipients: count, and move those whose shard changed.
  rocksdb::ReadOptions ro;
  ro.fill_cache = false;
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(ro, recipients_));
  absl::MutexLock lock(&mu_);
  for (it->SeekToFirst(); it->Valid(); it->Next()) {
    MessageId id;
    uint32_t index;
    if (!codec::ParseRecipientKey(Sv(it->key()), &id, &index)) continue;
    if (!live_.contains(id)) {
      // A recipient without its message cannot come from an atomic write;
      // say so and drop it rather than deliver half a message.
      log::Warn(kLog, "recovery: recipient %u of unknown message %s dropped",
                index, FormatMessageId(id));
      fix.Delete(recipients_, it->key());
      continue;
    }
    auto rec = codec::DecodeRecipient(id, index, Sv(it->value()));
    if (!rec.ok()) return rec.status();
    if (IsFinal(rec->state)) {
      ++final;
      continue;
    }
    ++pending;
    int owner = rec->spec.shard;
    if (options_.shard_of && shards_changed) {
      owner = options_.shard_of(rec->spec.site);
    }
    if (owner >= options_.shards || owner < 0) owner %= options_.shards;
    if (owner != rec->spec.shard) {
      fix.Delete(schedule_, codec::ScheduleKey(rec->spec.shard,
                                               rec->next_attempt, id, index));
      rec->spec.shard = static_cast<uint16_t>(owner);
      fix.Put(schedule_,
              codec::ScheduleKey(rec->spec.shard, rec->next_attempt, id, index),
              "");
      fix.Put(recipients_, it->key(), codec::EncodeRecipient(*rec));
      ++moved;
    }
  }
  if (!it->status().ok()) return FromRocks(it->status(), "recovery");
  // Messages whose recipients are all final were complete: finish them.
  for (auto l = live_.begin(); l != live_.end();) {
    if (l->second.pending == 0) {
      std::string key = codec::MessageKey(l->first);
      fix.Delete(l->second.segment != 0 ? spooled_ : bodies_, key);
      fix.Delete(envelopes_, key);
      for (uint32_t i = 0; i < l->second.total; ++i) {
        fix.Delete(recipients_, codec::RecipientKey(l->first, i));
      }
      l = live_.erase(l);
    } else {
      ++l;
    }
  }
  fix.Put(meta_, kShardsKey, std::to_string(options_.shards));
  // Replayed groups reach the disk with this write's sync: replay starts
  // after them next time.
  fix.Put(meta_, kCheckpointKey, EncodeSpoolPosition(spool_->Next()));
  rocksdb::WriteOptions wo;
  wo.sync = options_.sync;
  if (absl::Status s = FromRocks(db_->Write(wo, &fix), "recovery write");
      !s.ok()) {
    return s;
  }

  absl::flat_hash_map<uint64_t, Spool::SegmentUse> refs;
  for (const auto& [id, l] : live_) {
    if (l.segment == 0) continue;
    Spool::SegmentUse& use = refs[l.segment];
    ++use.bodies;
    use.bytes += l.body_bytes;
  }
  uint64_t orphans = 0;
  for (const auto& [segment, use] : refs) {
    if (!spool_->HasSegment(segment)) orphans += use.bodies;
  }
  if (orphans > 0) {
    // Only someone deleting files under the data directory gets here.
    log::Error(kLog,
               "recovery: %d queued messages have their bodies in spool "
               "segments that are missing from %s; they cannot be delivered "
               "(peregrine queue list shows them)",
               orphans, spool_->dir());
  }
  spool_->SetRefs(std::move(refs));
  spool_->Checkpointed(spool_->Next());

  // The next id continues after the newest message, whatever the clock says.
  std::unique_ptr<rocksdb::Iterator> last(db_->NewIterator(ro, envelopes_));
  last->SeekToLast();
  if (last->Valid()) codec::ParseMessageKey(Sv(last->key()), &last_id_);

  stats->messages = live_.size();
  stats->pending_recipients = pending;
  stats->final_recipients = final;
  stats->rescheduled = moved;
  stats->took = absl::Now() - start;
  return absl::OkStatus();
}

}  // namespace peregrine::queue
