// Over 800 lines: the store's data model, its committer and its recovery.
// Issue 13 moves the committer and recovery into files of their own.
#include "queue/rocksdb_store.h"

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
#include "rocksdb/cache.h"
#include "rocksdb/slice_transform.h"
#include "rocksdb/table.h"
#include "rocksdb/write_batch.h"

namespace peregrine::queue {
namespace {

constexpr const char* kLog = "queue";
constexpr absl::Duration kSpaceCheckInterval = absl::Seconds(1);
constexpr uint32_t kMaxRecipients = 100000;
const char* const kShardsKey = "shards";
// Where spool replay starts: everything before is in RocksDB, synced.
const char* const kCheckpointKey = "spool_checkpoint";
const char* const kTotalsKey = "totals";
// In the finished family, the envelope sorts after every recipient.
constexpr uint32_t kEnvelopeIndex = UINT32_MAX;
constexpr absl::Duration kFinishedSweepInterval = absl::Minutes(1);

std::string EncodeTotals(const uint64_t (&totals)[5]) {
  std::string out;
  for (uint64_t t : totals) absl::StrAppend(&out, t, " ");
  return out;
}

void DecodeTotals(absl::string_view text, uint64_t (&totals)[5]) {
  std::vector<absl::string_view> parts =
      absl::StrSplit(text, ' ', absl::SkipEmpty());
  for (size_t i = 0; i < parts.size() && i < 5; ++i) {
    if (!absl::SimpleAtoi(parts[i], &totals[i])) totals[i] = 0;
  }
}
constexpr absl::Duration kCheckpointInterval = absl::Seconds(1);
// The committer writes the spool's reserve after this long without a
// group (not in the gaps of a steady load), a chunk at a time, so that a
// group arriving meanwhile waits for one chunk at most.
constexpr absl::Duration kPrepareWhenIdle = absl::Seconds(1);
constexpr uint64_t kPrepareChunk = 1 << 20;
constexpr absl::Duration kPrepareRetry = absl::Minutes(1);

absl::string_view Sv(const rocksdb::Slice& s) { return {s.data(), s.size()}; }

absl::Status FromRocks(const rocksdb::Status& s, absl::string_view what) {
  if (s.ok()) return absl::OkStatus();
  std::string message = absl::StrCat("queue ", what, ": ", s.ToString());
  if (s.IsNoSpace()) {
    return absl::ResourceExhaustedError(message);
  }
  if (s.IsCorruption()) return absl::DataLossError(message);
  return absl::UnavailableError(message);
}

uint64_t StatvfsFree(const std::string& path) {
  struct statvfs st;
  if (statvfs(path.c_str(), &st) != 0) return UINT64_MAX;
  return static_cast<uint64_t>(st.f_bavail) * st.f_frsize;
}

}  // namespace

bool RocksStore::Live::IsFinal(uint32_t i) const {
  if (i < 64) return final_bits & (uint64_t{1} << i);
  return more_bits && (more_bits[(i - 64) / 64] & (uint64_t{1} << (i % 64)));
}

void RocksStore::Live::SetFinal(uint32_t i) {
  if (i < 64) {
    final_bits |= uint64_t{1} << i;
    return;
  }
  if (!more_bits) {
    size_t words = (total - 64 + 63) / 64;
    more_bits = std::make_unique<uint64_t[]>(words);  // Zeroed.
  }
  more_bits[(i - 64) / 64] |= uint64_t{1} << (i % 64);
}

void RocksStore::Live::ClearFinal(uint32_t i) {
  if (i < 64) {
    final_bits &= ~(uint64_t{1} << i);
  } else if (more_bits) {
    more_bits[(i - 64) / 64] &= ~(uint64_t{1} << (i % 64));
  }
}

RocksStore::RocksStore(RocksStoreOptions options)
    : options_(std::move(options)) {
  if (!options_.free_bytes) {
    std::string path = options_.path;
    options_.free_bytes = [path] { return StatvfsFree(path); };
  }
}

absl::StatusOr<std::unique_ptr<RocksStore>> RocksStore::Open(
    RocksStoreOptions options, RecoveryStats* stats) {
  if (options.shards < 1 || options.shards > 65535) {
    return absl::InvalidArgumentError("queue: shards must be 1..65535");
  }
  std::unique_ptr<RocksStore> store(new RocksStore(std::move(options)));
  if (!store->options_.read_only) store->ReleaseEmergencySpaceIfFull();
  {
    absl::MutexLock lock(&store->db_mu_);
    if (absl::Status s = store->OpenDb(); !s.ok()) return s;
  }
  // After RocksDB's lock is held: one process writes the spool.
  Spool::Options so;
  so.dir = store->options_.spool_dir.empty() ? store->options_.path + "/spool"
                                             : store->options_.spool_dir;
  so.sync = store->options_.sync;
  so.segment_bytes = store->options_.spool_segment_bytes;
  so.reserve = store->options_.spool_reserve_segments;
  so.read_only = store->options_.read_only;
  so.fail_write = store->options_.test_fail_spool_write;
  auto spool = Spool::Open(std::move(so));
  if (!spool.ok()) return spool.status();
  store->spool_ = *std::move(spool);
  if (store->options_.read_only) return store;  // No recovery, no writes.
  RecoveryStats local;
  if (absl::Status s = store->Recover(stats ? stats : &local); !s.ok()) {
    return s;
  }
  {
    std::string totals;
    if (store->db_
            ->Get(rocksdb::ReadOptions(), store->meta_, kTotalsKey, &totals)
            .ok()) {
      absl::MutexLock lock(&store->mu_);
      DecodeTotals(totals, store->totals_);
    }
  }
  store->CheckFreeSpace();
  Spool::DiskUse use = store->spool_->Usage();
  store->spool_used_ = use.segments > 0 || use.spares > 0;
  if (!store->spool_used_ && store->spool_->ReserveShort()) {
    log::Info(kLog,
              "spool: a new queue; its reserve of %d ready segments (%d MiB) "
              "is written once mail has come in",
              store->options_.spool_reserve_segments,
              store->options_.spool_reserve_segments *
                  (store->options_.spool_segment_bytes >> 20));
  } else if (store->spool_->ReserveShort()) {
    absl::Time start = absl::Now();
    Spool::DiskUse before = store->spool_->Usage();
    store->PrepareReserve(UINT64_MAX);
    Spool::DiskUse after = store->spool_->Usage();
    if (after.spares > before.spares) {
      log::Info(kLog, "spool: wrote %d ready segments in %s",
                after.spares - before.spares,
                absl::FormatDuration(
                    absl::Trunc(absl::Now() - start, absl::Milliseconds(1))));
    }
  }
  store->committer_ = std::thread([s = store.get()] { s->CommitterMain(); });
  return store;
}

namespace {

// RocksDB's info log, kept out of a file of its own: the daemon's log gets
// what RocksDB says at warning level and above (the rest is tuning chatter),
// and a read-only view writes nothing at all. A LOG file in the data
// directory would be one more write that fails on a full disk, which
// Debian's RocksDB answers with an assertion.
class InfoLog : public rocksdb::Logger {
 public:
  explicit InfoLog(bool quiet)
      : rocksdb::Logger(rocksdb::InfoLogLevel::WARN_LEVEL), quiet_(quiet) {}
  using rocksdb::Logger::Logv;
  void Logv(const char* format, va_list ap) override {
    Logv(rocksdb::InfoLogLevel::INFO_LEVEL, format, ap);
  }
  void Logv(const rocksdb::InfoLogLevel level, const char* format,
            va_list ap) override {
    if (quiet_ || level < GetInfoLogLevel()) return;
    char line[1024];
    vsnprintf(line, sizeof(line), format, ap);
    // Said at every first open, before RocksDB makes the folder: not news.
    if (absl::StartsWith(line, "Error when reading") &&
        absl::StrContains(line, " dir")) {
      return;
    }
    if (level >= rocksdb::InfoLogLevel::ERROR_LEVEL) {
      log::Error("rocksdb", "%s", line);
    } else {
      log::Warn("rocksdb", "%s", line);
    }
  }

 private:
  const bool quiet_;
};

}  // namespace

absl::Status RocksStore::OpenDb() {
  rocksdb::Options db_options;
  db_options.info_log = std::make_shared<InfoLog>(options_.read_only);
  // Recovery keeps what the WAL holds in memtables instead of writing it
  // out at open: a start on a nearly full disk writes as little as it can.
  db_options.avoid_flush_during_recovery = true;
  db_options.create_if_missing = true;
  db_options.create_missing_column_families = true;
  db_options.max_background_jobs = 2;
  db_options.bytes_per_sync = 1 << 20;
  db_options.wal_bytes_per_sync = 0;  // The committer syncs the WAL itself.
  if (options_.env != nullptr) db_options.env = options_.env;
  // Deleted messages make the WAL and memtables churn; cap total WAL size so
  // that column families with few writes are flushed and old logs go away.
  db_options.max_total_wal_size = 256 << 20;
  // No preallocation: RocksDB would fallocate ~1.1 write buffers (70 MiB)
  // for each WAL and 4 MiB for the MANIFEST, more than a small disk has
  // (and an empty data directory should stay small). The WAL is not the
  // durable log here (the spool is) and is synced only at checkpoints, so
  // growing it as it is written costs no extra flush per commit.
  db_options.allow_fallocate = false;
  db_options.manifest_preallocation_size = 64 << 10;
  if (options_.test_lose_unsynced_rocksdb_writes) {
    db_options.avoid_flush_during_shutdown = true;
  }

  cache_ = rocksdb::NewLRUCache(options_.block_cache_bytes);
  rocksdb::BlockBasedTableOptions table;
  table.block_cache = cache_;
  table.cache_index_and_filter_blocks = true;

  rocksdb::ColumnFamilyOptions small;
  small.table_factory.reset(rocksdb::NewBlockBasedTableFactory(table));
  small.write_buffer_size = 32 << 20;

  rocksdb::ColumnFamilyOptions bodies = small;
  bodies.write_buffer_size = 64 << 20;
  if (options_.body_blob_files) {
    bodies.enable_blob_files = true;
    bodies.min_blob_size = 512;
    bodies.blob_file_size = 256 << 20;
    bodies.enable_blob_garbage_collection = true;
  }

  // New keys arrive in increasing order (message ids grow; the schedule
  // grows in time per shard): a memtable insert starts from where the last
  // one went instead of searching the whole skip list.
  rocksdb::ColumnFamilyOptions by_id = small;
  by_id.memtable_insert_with_hint_prefix_extractor.reset(
      rocksdb::NewFixedPrefixTransform(0));
  rocksdb::ColumnFamilyOptions by_shard = small;
  by_shard.memtable_insert_with_hint_prefix_extractor.reset(
      rocksdb::NewFixedPrefixTransform(2));

  std::vector<rocksdb::ColumnFamilyDescriptor> families = {
      {rocksdb::kDefaultColumnFamilyName, small},
      {"bodies", bodies},
      {"envelopes", by_id},
      {"recipients", by_id},
      {"schedule", by_shard},
      {"spooled", by_id},
      // Recipients finish in any order: no insert hint here.
      {"finished", small},
  };
  rocksdb::DB* db = nullptr;
  rocksdb::Status s;
  if (options_.read_only) {
    // A queue made before a family existed has none to open read-only.
    std::vector<std::string> present;
    if (rocksdb::DB::ListColumnFamilies(db_options, options_.path, &present)
            .ok()) {
      std::erase_if(families, [&](const rocksdb::ColumnFamilyDescriptor& f) {
        return std::find(present.begin(), present.end(), f.name) ==
               present.end();
      });
    }
    // A secondary instance would keep its info log here; it has none (the
    // InfoLog above), so the folder is only made when it can be, and
    // nothing is written on a full disk.
    // secondary_dir_ is only what we made: the destructor removes it.
    char dir[] = "/tmp/peregrine-queue-view.XXXXXX";
    if (mkdtemp(dir) != nullptr) secondary_dir_ = dir;
    // Without one, the queue's own path: read, never written (no info log).
    std::string secondary = secondary_dir_.empty() ? options_.path : dir;
    db_options.max_open_files = -1;  // Required by secondary mode.
    s = rocksdb::DB::OpenAsSecondary(db_options, options_.path, secondary,
                                     families, &handles_, &db);
    if (s.ok()) s = db->TryCatchUpWithPrimary();
  } else {
    s = rocksdb::DB::Open(db_options, options_.path, families, &handles_, &db);
  }
  if (!s.ok()) {
    std::string hint;
    if (s.IsIOError() && absl::StrContains(s.ToString(), "lock")) {
      hint = " (is another peregrine using this data directory?)";
    }
    return absl::UnavailableError(absl::StrCat(
        "cannot open queue at ", options_.path, ": ", s.ToString(), hint));
  }
  db_.reset(db);
  meta_ = handles_[0];
  bodies_ = handles_[1];
  envelopes_ = handles_[2];
  recipients_ = handles_[3];
  schedule_ = handles_[4];
  spooled_ = handles_[5];
  finished_ = handles_.size() > 6 ? handles_[6] : nullptr;
  return absl::OkStatus();
}

RocksStore::~RocksStore() {
  if (committer_.joinable()) {
    {
      absl::MutexLock lock(&mu_);
      stopping_ = true;
      work_.Signal();
    }
    committer_.join();
  }
  absl::MutexLock lock(&db_mu_);
  CloseDb();
  if (!secondary_dir_.empty()) {
    std::error_code ignored;
    std::filesystem::remove_all(secondary_dir_, ignored);
  }
}

void RocksStore::CloseDb() {
  if (!db_) return;
  for (auto* h : handles_) db_->DestroyColumnFamilyHandle(h);
  handles_.clear();
  meta_ = bodies_ = envelopes_ = recipients_ = schedule_ = spooled_ =
      finished_ = nullptr;
  db_->Close();
  db_.reset();
}

absl::Status RocksStore::Down() {
  return absl::UnavailableError(
      "queue unavailable after a storage error; retrying (see the log)");
}

bool RocksStore::Reopen() {
  {
    absl::MutexLock lock(&db_mu_);
    CloseDb();
    if (absl::Status s = OpenDb(); !s.ok()) {
      log::Error(kLog, "reopen after write error failed: %s", s.message());
      return false;
    }
  }
  log::Info(kLog, "queue reopened after a write error; writing again");
  return true;
}

// --- Recovery ---------------------------------------------------------------

absl::Status RocksStore::RebuildLive() {
  absl::ReaderMutexLock db_lock(&db_mu_);
  absl::flat_hash_map<MessageId, Live> live;
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
      live_.erase(l++);
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

void RocksStore::Enqueue(NewMessage message, EnqueueDone done) {
  auto fail = [&](absl::Status status) {
    Refuse(std::move(status),
           [done = std::move(done)](absl::Status s) mutable { done(s); });
  };
  if (options_.read_only) {  // No committer thread: answer here.
    return done(absl::FailedPreconditionError("queue: opened read-only"));
  }
  if (message.recipients.empty()) {
    return fail(absl::InvalidArgumentError("queue: message has no recipients"));
  }
  if (message.recipients.size() > kMaxRecipients) {
    return fail(absl::InvalidArgumentError(
        absl::StrCat("queue: more than ", kMaxRecipients, " recipients")));
  }
  for (const RecipientSpec& r : message.recipients) {
    if (r.shard >= options_.shards) {
      return fail(absl::InvalidArgumentError(absl::StrCat(
          "queue: recipient shard ", r.shard, " >= shards ", options_.shards)));
    }
  }
  // What the message takes on disk: its body in the spool, and roughly its
  // envelope and recipients in RocksDB. Admitted only when that leaves the
  // floor free, counting messages admitted before and not written yet.
  const uint64_t need =
      message.body.size() + 1024 + 256 * message.recipients.size();
  if (!AcceptingNewMail() || !HasRoomFor(need)) {
    return fail(absl::ResourceExhaustedError(absl::StrCat(
        "queue: ", need >> 10,
        " KiB more would take free disk space on the "
        "device holding ",
        options_.path, " (",
        free_at_check_.load(std::memory_order_relaxed) >> 20,
        " MiB free) under the floor (queue.min_free_space, ", Floor() >> 20,
        " MiB); new mail is refused until "
        "space is freed")));
  }

  // Encode outside the lock; only keys need the id.
  absl::Time now = absl::Now();
  message.envelope.recipient_count =
      static_cast<uint32_t>(message.recipients.size());
  message.envelope.body_bytes = message.body.size();
  std::string envelope = codec::EncodeEnvelope(message.envelope);
  BodyRef ref;
  ref.length = static_cast<uint32_t>(message.body.size());
  ref.crc =
      rocksdb::crc32c::Extend(0, message.body.data(), message.body.size());
  std::vector<std::string> records;
  records.reserve(message.recipients.size());
  for (RecipientSpec& spec : message.recipients) {
    RecipientRecord rec;
    rec.spec = std::move(spec);
    rec.next_attempt = now;
    records.push_back(codec::EncodeRecipient(rec));
    spec = std::move(rec.spec);
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
  if (!HasRoomFor(need)) {
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
  MessageId id = NextId();
  std::string key = codec::MessageKey(id);
  admitted_.fetch_add(need, std::memory_order_relaxed);
  group_admitted_ += need;
  // The reference holds the body's offset within the record; the committer
  // adds where the record goes.
  ref.offset = group_.AddBody(message.body, ref.crc);
  char encoded_ref[kBodyRefBytes];
  EncodeBodyRef(ref, encoded_ref);
  batch_.Put(spooled_, key, rocksdb::Slice(encoded_ref, kBodyRefBytes));
  patches_.push_back({batch_.GetDataSize() - kBodyRefBytes, ref.offset});
  group_ids_.push_back(id);
  batch_.Put(envelopes_, key, envelope);
  for (uint32_t i = 0; i < records.size(); ++i) {
    batch_.Put(recipients_, codec::RecipientKey(id, i), records[i]);
    uint16_t shard = message.recipients[i].shard;
    batch_.Put(schedule_, codec::ScheduleKey(shard, now, id, i), "");
    NoteScheduled(shard, now);
  }
  Live& l = live_[id];
  l.total = l.pending = static_cast<uint32_t>(records.size());
  l.body_bytes = ref.length;
  batch_undo_.push_back({id, 0, true, nullptr});
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

void RocksStore::Update(RecipientUpdate update, Done done) {
  const RecipientRecord& before = update.before;
  if (options_.read_only) {  // No committer thread: answer here.
    return done(absl::FailedPreconditionError("queue: opened read-only"));
  }
  if (update.state == RecipientState::kQueued) {
    return Refuse(absl::InvalidArgumentError(
                      "queue: an attempt cannot make a recipient 'queued'"),
                  std::move(done));
  }
  RecipientRecord after = before;
  after.state = update.state;
  after.attempts = before.attempts + (update.attempted ? 1 : 0);
  after.held = before.held + update.held_more;
  after.last_reply = std::move(update.reply);
  if (update.state == RecipientState::kDeferred) {
    // The queue keeps microseconds; round here so that the record, its
    // schedule key and what Due() returns agree.
    after.next_attempt =
        absl::FromUnixMicros(absl::ToUnixMicros(update.next_attempt));
  }
  std::string record = codec::EncodeRecipient(after);

  absl::ReaderMutexLock db_lock(&db_mu_);  // Column family handles.
  absl::MutexLock lock(&mu_);
  if (!db_) {
    waiters_.push_back({std::move(done), Down()});
    work_.Signal();
    return;
  }
  auto it = live_.find(before.message);
  if (it == live_.end() || before.index >= it->second.total ||
      it->second.IsFinal(before.index)) {
    waiters_.push_back(
        {std::move(done),
         absl::FailedPreconditionError(absl::StrCat(
             "queue: recipient ", before.index, " of message ",
             FormatMessageId(before.message), " is final or unknown"))});
    work_.Signal();
    return;
  }
  // The claim goes once this batch is on disk (or failed): until then a
  // scan would still find the old schedule entry and the old record, and
  // hand the recipient out a second time.
  done = [this, shard = before.spec.shard, id = before.message,
          index = before.index,
          done = std::move(done)](absl::Status s) mutable {
    {
      absl::MutexLock claims_lock(&floor_mu_);
      auto c = claims_.find(shard);
      if (c != claims_.end()) c->second.claimed.erase({id, index});
    }
    done(std::move(s));
  };
  Live& l = it->second;
  batch_.Delete(schedule_,
                codec::ScheduleKey(before.spec.shard, before.next_attempt,
                                   before.message, before.index));
  if (IsFinal(after.state)) {
    l.SetFinal(before.index);
    batch_undo_.push_back({before.message, before.index, false, nullptr});
    ++totals_[static_cast<int>(after.state)];
    totals_dirty_ = true;
    const bool keep =
        finished_ != nullptr && options_.keep_finished > absl::ZeroDuration();
    if (keep) {
      batch_.Put(finished_, codec::RecipientKey(before.message, before.index),
                 record);
    }
    if (--l.pending == 0) {
      // The last recipient: the message is done everywhere.
      std::string key = codec::MessageKey(before.message);
      if (keep) {
        // Its envelope goes with the finished record (committed long ago:
        // delivery starts only after the enqueue is on disk).
        std::string envelope;
        if (db_->Get(rocksdb::ReadOptions(), envelopes_, key, &envelope).ok()) {
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
               codec::ScheduleKey(after.spec.shard, after.next_attempt,
                                  after.message, after.index),
               "");
    NoteScheduled(after.spec.shard, after.next_attempt);
  }
  waiters_.push_back({std::move(done), absl::OkStatus()});
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
      scheduled.swap(batch_min_);
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
        status = Commit(batch, group, patches, ids, relocated, &rocks_failed);
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
        CheckFreeSpace();
      } else {
        failed_before = false;
        for (const Undo& u : undo) {
          if (u.erased && u.erased->segment != 0) {
            spool_->Unref(u.erased->segment, 1, u.erased->body_bytes);
          }
        }
        absl::MutexLock lock(&floor_mu_);
        for (auto [shard, when] : scheduled) {
          auto [it, inserted] = scheduled_min_.try_emplace(shard, when);
          if (!inserted) it->second = std::min(it->second, when);
          Claims& c = claims_[shard];
          c.rewind = std::min(c.rewind, when);
        }
      }
    }
    for (Waiter& w : waiters) {
      w.done(w.preset.ok() ? status : w.preset);
    }
  }
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

// --- Reads ------------------------------------------------------------------

absl::StatusOr<uint16_t> RocksStore::ScheduleShard(int shard) const {
  if (!db_) return Down();
  if (shard < 0 || shard >= options_.shards) {
    return absl::InvalidArgumentError("queue: no such shard");
  }
  return static_cast<uint16_t>(shard);
}

absl::Status RocksStore::ForEachScheduled(
    uint16_t shard, absl::Time from, absl::Time now,
    absl::FunctionRef<absl::StatusOr<bool>(absl::Time, MessageId, uint32_t)>
        visit) {
  std::string upper = codec::ScheduleSeek(shard, now + absl::Microseconds(1));
  rocksdb::Slice upper_slice(upper);
  rocksdb::ReadOptions ro;
  ro.iterate_upper_bound = &upper_slice;
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(ro, schedule_));
  for (it->Seek(codec::ScheduleSeek(shard, from)); it->Valid(); it->Next()) {
    uint16_t key_shard;
    absl::Time when;
    MessageId id;
    uint32_t index;
    if (!codec::ParseScheduleKey(Sv(it->key()), &key_shard, &when, &id,
                                 &index) ||
        key_shard != shard) {
      break;
    }
    absl::StatusOr<bool> more = visit(when, id, index);
    if (!more.ok()) return more.status();
    if (!*more) break;
  }
  if (!it->status().ok()) return FromRocks(it->status(), "scan");
  return absl::OkStatus();
}

absl::StatusOr<std::optional<RecipientRecord>> RocksStore::LiveRecordAt(
    MessageId id, uint32_t index, absl::Time when) {
  std::string value;
  rocksdb::Status st = db_->Get(rocksdb::ReadOptions(), recipients_,
                                codec::RecipientKey(id, index), &value);
  if (st.IsNotFound()) return std::nullopt;  // Finished since the scan.
  if (!st.ok()) return FromRocks(st, "read");
  auto rec = codec::DecodeRecipient(id, index, value);
  if (!rec.ok()) return rec.status();
  // A stale entry (the record moved on) is skipped, not returned twice.
  if (IsFinal(rec->state) || rec->next_attempt != when) return std::nullopt;
  return *std::move(rec);
}

absl::StatusOr<std::vector<RecipientRecord>> RocksStore::Due(int shard,
                                                             absl::Time now,
                                                             size_t limit) {
  absl::ReaderMutexLock db_lock(&db_mu_);
  absl::StatusOr<uint16_t> checked = ScheduleShard(shard);
  if (!checked.ok()) return checked.status();
  uint16_t s = *checked;
  absl::Time from = absl::InfinitePast();
  {
    absl::MutexLock lock(&floor_mu_);
    auto f = floor_.find(s);
    if (f != floor_.end()) from = f->second;
    auto m = scheduled_min_.find(s);
    if (m != scheduled_min_.end()) {
      from = std::min(from, m->second);
      scheduled_min_.erase(m);
    }
  }
  std::vector<RecipientRecord> out;
  absl::Time first_live = now;
  absl::Status scanned =
      ForEachScheduled(s, from, now,
                       [&](absl::Time when, MessageId id,
                           uint32_t index) -> absl::StatusOr<bool> {
                         if (out.size() >= limit) return false;
                         auto rec = LiveRecordAt(id, index, when);
                         if (!rec.ok()) return rec.status();
                         if (!rec->has_value()) return true;
                         if (out.empty()) first_live = when;
                         out.push_back(**std::move(rec));
                         return true;
                       });
  if (!scanned.ok()) return scanned;
  {
    // Nothing before `first_live` is due; entries written meanwhile went to
    // scheduled_min_, which the next call folds in.
    absl::MutexLock lock(&floor_mu_);
    floor_[s] = first_live;
  }
  return out;
}

absl::StatusOr<std::vector<RecipientRecord>> RocksStore::Claim(int shard,
                                                               absl::Time now,
                                                               size_t limit) {
  absl::ReaderMutexLock db_lock(&db_mu_);
  absl::StatusOr<uint16_t> checked = ScheduleShard(shard);
  if (!checked.ok()) return checked.status();
  uint16_t s = *checked;
  absl::Time from;
  {
    absl::MutexLock lock(&floor_mu_);
    Claims& c = claims_[s];
    from = std::min(c.from, c.rewind);
    c.rewind = absl::InfiniteFuture();
  }
  std::vector<RecipientRecord> out;
  absl::Time next_from = now;  // Unless the limit stops the scan early.
  absl::Status scanned =
      ForEachScheduled(s, from, now,
                       [&](absl::Time when, MessageId id,
                           uint32_t index) -> absl::StatusOr<bool> {
                         if (out.size() >= limit) {
                           next_from = when;
                           return false;
                         }
                         {
                           absl::MutexLock lock(&floor_mu_);
                           if (claims_[s].claimed.contains({id, index}))
                             return true;
                         }
                         auto rec = LiveRecordAt(id, index, when);
                         if (!rec.ok()) return rec.status();
                         if (rec->has_value()) out.push_back(**std::move(rec));
                         return true;
                       });
  if (!scanned.ok()) return scanned;
  absl::MutexLock lock(&floor_mu_);
  Claims& c = claims_[s];
  c.from = next_from;
  for (const RecipientRecord& r : out) c.claimed.insert({r.message, r.index});
  return out;
}

void RocksStore::Unclaim(const RecipientRecord& record) {
  absl::MutexLock lock(&floor_mu_);
  Claims& c = claims_[record.spec.shard];
  c.claimed.erase({record.message, record.index});
  c.rewind = std::min(c.rewind, record.next_attempt);
}

absl::StatusOr<StoredMessage> RocksStore::Read(MessageId id, bool with_body) {
  absl::ReaderMutexLock db_lock(&db_mu_);
  if (!db_) return Down();
  return ReadLocked(id, with_body);
}

absl::StatusOr<StoredMessage> RocksStore::Lookup(MessageId id) {
  absl::ReaderMutexLock db_lock(&db_mu_);
  if (!db_) return Down();
  auto m = ReadLocked(id, false);
  if (absl::IsNotFound(m.status())) return ReadFinished(id);
  return m;
}

absl::StatusOr<StoredMessage> RocksStore::ReadLocked(MessageId id,
                                                     bool with_body) {
  StoredMessage m;
  m.id = id;
  std::string key = codec::MessageKey(id), value;
  rocksdb::Status s = db_->Get(rocksdb::ReadOptions(), envelopes_, key, &value);
  if (s.IsNotFound()) {
    return absl::NotFoundError(
        absl::StrCat("no message ", FormatMessageId(id), " in the queue"));
  }
  if (!s.ok()) return FromRocks(s, "read");
  auto envelope = codec::DecodeEnvelope(value);
  if (!envelope.ok()) return envelope.status();
  m.envelope = *std::move(envelope);
  if (with_body) {
    s = db_->Get(rocksdb::ReadOptions(), spooled_, key, &value);
    if (s.ok()) {
      BodyRef ref;
      if (!DecodeBodyRef(value, &ref)) {
        return absl::DataLossError(
            absl::StrCat("the body reference of message ", FormatMessageId(id),
                         " is garbled"));
      }
      auto body = spool_->ReadBody(ref);
      if (!body.ok()) return body.status();
      m.body = *std::move(body);
    } else if (s.IsNotFound()) {  // Written before the spool.
      s = db_->Get(rocksdb::ReadOptions(), bodies_, key, &m.body);
      if (!s.ok()) return FromRocks(s, "read body");
    } else {
      return FromRocks(s, "read body");
    }
  }
  for (uint32_t i = 0; i < m.envelope.recipient_count; ++i) {
    s = db_->Get(rocksdb::ReadOptions(), recipients_,
                 codec::RecipientKey(id, i), &value);
    if (!s.ok()) return FromRocks(s, "read recipient");
    auto rec = codec::DecodeRecipient(id, i, value);
    if (!rec.ok()) return rec.status();
    m.recipients.push_back(*std::move(rec));
  }
  return m;
}

absl::StatusOr<QueueCounts> RocksStore::Counts() {
  absl::ReaderMutexLock db_lock(&db_mu_);
  if (!db_) return Down();
  QueueCounts c;
  std::string totals;
  if (db_->Get(rocksdb::ReadOptions(), meta_, kTotalsKey, &totals).ok()) {
    DecodeTotals(totals, c.totals);
  }
  std::map<std::string, uint64_t> sites, domains;
  rocksdb::ReadOptions ro;
  ro.fill_cache = false;
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(ro, recipients_));
  MessageId previous = 0;
  for (it->SeekToFirst(); it->Valid(); it->Next()) {
    MessageId id;
    uint32_t index;
    if (!codec::ParseRecipientKey(Sv(it->key()), &id, &index)) continue;
    auto rec = codec::DecodeRecipient(id, index, Sv(it->value()));
    if (!rec.ok()) return rec.status();
    if (id != previous || c.messages == 0) ++c.messages;
    previous = id;
    ++c.recipients;
    ++c.by_state[static_cast<int>(rec->state)];
    if (!IsFinal(rec->state)) {
      ++sites[rec->spec.site];
      ++domains[absl::AsciiStrToLower(rec->domain())];
    }
  }
  if (!it->status().ok()) return FromRocks(it->status(), "scan");
  c.by_site.assign(sites.begin(), sites.end());
  c.by_domain.assign(domains.begin(), domains.end());
  return c;
}

absl::StatusOr<std::vector<StoredMessage>> RocksStore::List(
    const ListFilter& filter) {
  absl::ReaderMutexLock db_lock(&db_mu_);
  if (!db_) return Down();
  std::vector<StoredMessage> out;
  rocksdb::ReadOptions ro;
  ro.fill_cache = false;
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(ro, envelopes_));
  for (it->SeekToFirst(); it->Valid() && out.size() < filter.limit;
       it->Next()) {
    MessageId id;
    if (!codec::ParseMessageKey(Sv(it->key()), &id)) continue;
    auto m = ReadLocked(id, false);
    if (!m.ok()) {
      if (absl::IsNotFound(m.status())) continue;
      return m.status();
    }
    if (!filter.sender.empty() &&
        !absl::StrContains(absl::AsciiStrToLower(m->envelope.sender),
                           absl::AsciiStrToLower(filter.sender))) {
      continue;
    }
    bool match = false;
    for (const RecipientRecord& r : m->recipients) {
      if (filter.has_state && r.state != filter.state) continue;
      if (!filter.domain.empty() &&
          !absl::EqualsIgnoreCase(r.domain(), filter.domain)) {
        continue;
      }
      if (!filter.site.empty() && r.spec.site != filter.site) continue;
      match = true;
      break;
    }
    if (match) out.push_back(*std::move(m));
  }
  if (!it->status().ok()) return FromRocks(it->status(), "scan");
  return out;
}

absl::Status RocksStore::Flush() {
  absl::ReaderMutexLock db_lock(&db_mu_);
  if (!db_) return Down();
  rocksdb::FlushOptions fo;
  fo.wait = true;
  return FromRocks(db_->Flush(fo, handles_), "flush");
}

size_t RocksStore::LiveMessages() const {
  absl::MutexLock lock(&mu_);
  return live_.size();
}

uint64_t RocksStore::RocksMemoryBytes() const {
  absl::ReaderMutexLock db_lock(&db_mu_);
  if (!db_) return 0;
  uint64_t total = cache_ ? cache_->GetUsage() : 0;
  for (auto* h : handles_) {
    uint64_t v = 0;
    if (db_->GetIntProperty(h, rocksdb::DB::Properties::kCurSizeAllMemTables,
                            &v)) {
      total += v;
    }
  }
  return total;
}

}  // namespace peregrine::queue
