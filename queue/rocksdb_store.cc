// Over 800 lines, one concern: the store's data model and its reads;
// splitting the reads from the open would spread the live state they share.
// The store's data model: opening and closing RocksDB, the per-message
// live state, and the reads (due recipients, claims, messages, counts).
// Recovery is in rocksdb_recovery.cc, the write path and its committer
// thread in rocksdb_committer.cc.

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
#include "queue/rocksdb_internal.h"
#include "rocksdb/cache.h"
#include "rocksdb/filter_policy.h"
#include "rocksdb/slice_transform.h"
#include "rocksdb/table.h"
#include "rocksdb/write_batch.h"

namespace peregrine::queue {

using namespace rocks_internal;  // NOLINT: the store's own helpers.

RocksStore::Live::Live(Live&& other) noexcept {
  static_assert(sizeof(Live) == 24, "one per queued message");
  *this = std::move(other);
}

RocksStore::Live& RocksStore::Live::operator=(Live&& other) noexcept {
  if (this == &other) return *this;
  if (Wide()) delete[] Words();
  total = other.total;
  pending = other.pending;
  segment = other.segment;
  body_bytes = other.body_bytes;
  bits_ = other.bits_;
  other.bits_ = 0;
  other.total = 0;
  return *this;
}

RocksStore::Live::~Live() {
  if (Wide()) delete[] Words();
}

bool RocksStore::Live::IsFinal(uint32_t i) const {
  if (!Wide()) return i < 64 && (bits_ & (uint64_t{1} << i));
  return bits_ != 0 && i < total &&
         (Words()[i / 64] & (uint64_t{1} << (i % 64)));
}

void RocksStore::Live::SetFinal(uint32_t i) {
  if (!Wide()) {
    if (i < 64) bits_ |= uint64_t{1} << i;
    return;
  }
  if (i >= total) return;
  if (bits_ == 0) {
    uint64_t* words = new uint64_t[(total + 63) / 64]();  // Zeroed.
    bits_ = reinterpret_cast<uint64_t>(words);
  }
  Words()[i / 64] |= uint64_t{1} << (i % 64);
}

void RocksStore::Live::ClearFinal(uint32_t i) {
  if (!Wide()) {
    if (i < 64) bits_ &= ~(uint64_t{1} << i);
  } else if (bits_ != 0 && i < total) {
    Words()[i / 64] &= ~(uint64_t{1} << (i % 64));
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
  // Every column family's memtables together: a backlog of a million
  // messages would otherwise keep up to two 32 MiB memtables per family in
  // memory (about 250 MiB); past 64 MiB the largest is flushed (at 32 MiB
  // draining a 200,000 backlog took a third more CPU, reading back more).
  db_options.db_write_buffer_size = 64 << 20;
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
  // The side table is read once per recipient at RCPT (is the address
  // suppressed?) and almost every answer is no: bloom filters, in the
  // memtable and in each table file, answer most of those without a search.
  rocksdb::BlockBasedTableOptions filtered = table;
  filtered.filter_policy.reset(rocksdb::NewBloomFilterPolicy(10));
  rocksdb::ColumnFamilyOptions side = small;
  side.table_factory.reset(rocksdb::NewBlockBasedTableFactory(filtered));
  side.memtable_whole_key_filtering = true;
  side.memtable_prefix_bloom_size_ratio = 0.02;
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
      // RocksStore::SideTable(): the suppression list.
      {"side", side},
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
  finished_ = nullptr;
  side_ = nullptr;
  for (size_t i = 6; i < handles_.size(); ++i) {
    if (handles_[i]->GetName() == "finished") finished_ = handles_[i];
    if (handles_[i]->GetName() == "side") side_ = handles_[i];
  }
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
      finished_ = side_ = nullptr;
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
  std::vector<RecipientRecord> out;
  // Fresh mail first: claimed already, handed out without a scan. A
  // quarter of the limit stays for the scan, so that retries and
  // recovered mail are not starved by a steady stream of new mail.
  TakeFresh(s, limit > 1 ? limit - limit / 4 : limit, &out);
  if (out.size() >= limit) return out;
  const size_t fresh = out.size();
  absl::Time from;
  {
    absl::MutexLock lock(&floor_mu_);
    Claims& c = claims_[s];
    from = std::min(c.from, c.rewind);
    c.rewind = absl::InfiniteFuture();
  }
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
  // Fresh records were claimed already; a scanned one an operator's
  // action took meanwhile (ClaimOne) is left to it.
  size_t kept = fresh;
  for (size_t i = fresh; i < out.size(); ++i) {
    if (!c.claimed.insert({out[i].message, out[i].index}).second) continue;
    if (kept != i) out[kept] = std::move(out[i]);
    ++kept;
  }
  out.resize(kept);
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

// --- The side table ---------------------------------------------------------

class RocksStore::Side final : public Table {
 public:
  explicit Side(RocksStore& store) : store_(store) {}

  absl::Status Put(absl::string_view key, absl::string_view value) override {
    absl::ReaderMutexLock db_lock(&store_.db_mu_);
    if (absl::Status s = Usable(true); !s.ok()) return s;
    rocksdb::WriteOptions w;
    w.sync = store_.options_.sync;
    return FromRocks(store_.db_->Put(w, store_.side_, Slice(key), Slice(value)),
                     "write");
  }
  absl::StatusOr<std::optional<std::string>> Get(
      absl::string_view key) override {
    absl::ReaderMutexLock db_lock(&store_.db_mu_);
    if (absl::Status s = Usable(false); !s.ok()) return s;
    if (store_.side_ == nullptr) return std::nullopt;
    std::string value;
    rocksdb::Status s = store_.db_->Get(rocksdb::ReadOptions(), store_.side_,
                                        Slice(key), &value);
    if (s.IsNotFound()) return std::nullopt;
    if (!s.ok()) return FromRocks(s, "read");
    return value;
  }
  absl::Status Delete(absl::string_view key) override {
    absl::ReaderMutexLock db_lock(&store_.db_mu_);
    if (absl::Status s = Usable(true); !s.ok()) return s;
    rocksdb::WriteOptions w;
    w.sync = store_.options_.sync;
    return FromRocks(store_.db_->Delete(w, store_.side_, Slice(key)), "write");
  }
  absl::Status Scan(
      absl::string_view prefix,
      absl::FunctionRef<bool(absl::string_view, absl::string_view)> visit)
      override {
    absl::ReaderMutexLock db_lock(&store_.db_mu_);
    if (absl::Status s = Usable(false); !s.ok()) return s;
    if (store_.side_ == nullptr) return absl::OkStatus();
    std::unique_ptr<rocksdb::Iterator> it(
        store_.db_->NewIterator(rocksdb::ReadOptions(), store_.side_));
    for (it->Seek(Slice(prefix)); it->Valid(); it->Next()) {
      absl::string_view k(it->key().data(), it->key().size());
      if (!absl::StartsWith(k, prefix)) break;
      if (!visit(k, absl::string_view(it->value().data(), it->value().size())))
        break;
    }
    return FromRocks(it->status(), "read");
  }

 private:
  static rocksdb::Slice Slice(absl::string_view s) {
    return rocksdb::Slice(s.data(), s.size());
  }
  absl::Status Usable(bool write) const
      ABSL_SHARED_LOCKS_REQUIRED(store_.db_mu_) {
    if (!store_.db_) return store_.Down();
    if (write && store_.options_.read_only) {
      return absl::FailedPreconditionError("queue: opened read-only");
    }
    if (write && store_.side_ == nullptr) {
      return absl::FailedPreconditionError("queue: no side table");
    }
    return absl::OkStatus();
  }
  RocksStore& store_;
};

Table* RocksStore::SideTable() {
  absl::MutexLock lock(&side_mu_);
  if (side_table_ == nullptr) side_table_ = std::make_unique<Side>(*this);
  return side_table_.get();
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
    if (s.IsNotFound()) {
      // Its last recipient finished between the envelope's read and this
      // one (the envelope and records go in one write): it is gone.
      return absl::NotFoundError(absl::StrCat("message ", FormatMessageId(id),
                                              " finished while being read"));
    }
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
  using Groups = std::map<std::string, QueueCounts::Group>;
  Groups sites, domains, campaigns, tenants;
  auto add = [](QueueCounts::Group& g, int age) {
    ++g.recipients;
    ++g.ages[age];
  };
  rocksdb::ReadOptions ro;
  ro.fill_cache = false;
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(ro, recipients_));
  const absl::Time now = absl::Now();
  MessageId previous = 0;
  // The message's envelope, read once for its first recipient not final.
  std::optional<Envelope> envelope;
  for (it->SeekToFirst(); it->Valid(); it->Next()) {
    MessageId id;
    uint32_t index;
    if (!codec::ParseRecipientKey(Sv(it->key()), &id, &index)) continue;
    auto rec = codec::DecodeRecipient(id, index, Sv(it->value()));
    if (!rec.ok()) return rec.status();
    if (id != previous || c.messages == 0) {
      ++c.messages;
      envelope.reset();
    }
    previous = id;
    ++c.recipients;
    ++c.by_state[static_cast<int>(rec->state)];
    if (IsFinal(rec->state)) continue;
    if (!envelope.has_value()) {
      std::string value;
      envelope.emplace();
      if (db_->Get(ro, envelopes_, codec::MessageKey(id), &value).ok()) {
        auto e = codec::DecodeEnvelope(value);
        if (e.ok()) *envelope = *std::move(e);
      }
    }
    // Time held by a suspended site does not age mail (as for expiry).
    int age = AgeBucket(now - envelope->received - rec->held);
    add(c.all, age);
    add(sites[rec->spec.site], age);
    add(domains[absl::AsciiStrToLower(rec->domain())], age);
    add(campaigns[envelope->campaign], age);
    add(tenants[envelope->tenant], age);
  }
  if (!it->status().ok()) return FromRocks(it->status(), "scan");
  c.by_site.assign(sites.begin(), sites.end());
  c.by_domain.assign(domains.begin(), domains.end());
  c.by_campaign.assign(campaigns.begin(), campaigns.end());
  c.by_tenant.assign(tenants.begin(), tenants.end());
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
  // Keys sort by id: start at the message asked for, or past the cursor.
  MessageId start = std::max(filter.id, filter.after + 1);
  for (it->Seek(codec::MessageKey(start));
       it->Valid() && out.size() < filter.limit; it->Next()) {
    MessageId id;
    if (!codec::ParseMessageKey(Sv(it->key()), &id)) continue;
    if (filter.id != 0 && id != filter.id) break;
    auto e = codec::DecodeEnvelope(Sv(it->value()));
    if (!e.ok() || !filter.MatchesMessage(id, *e)) continue;
    auto m = ReadLocked(id, false);
    if (!m.ok()) {
      if (absl::IsNotFound(m.status())) continue;
      return m.status();
    }
    bool match = false;
    for (const RecipientRecord& r : m->recipients) {
      if (filter.MatchesRecipient(r)) {
        match = true;
        break;
      }
    }
    if (match) out.push_back(*std::move(m));
  }
  if (!it->status().ok()) return FromRocks(it->status(), "scan");
  return out;
}

absl::StatusOr<std::optional<RecipientRecord>> RocksStore::ClaimOne(
    MessageId id, uint32_t index) {
  if (options_.read_only) {
    return absl::FailedPreconditionError("queue: opened read-only");
  }
  absl::ReaderMutexLock db_lock(&db_mu_);
  if (!db_) return Down();
  auto read = [&]() -> absl::StatusOr<RecipientRecord> {
    std::string value;
    rocksdb::Status st = db_->Get(rocksdb::ReadOptions(), recipients_,
                                  codec::RecipientKey(id, index), &value);
    if (st.IsNotFound() || (st.ok() && value.empty())) {
      return absl::NotFoundError("final or unknown");
    }
    if (!st.ok()) return FromRocks(st, "read");
    auto rec = codec::DecodeRecipient(id, index, value);
    if (!rec.ok()) return rec.status();
    if (IsFinal(rec->state)) return absl::NotFoundError("final");
    return rec;
  };
  auto before = read();
  if (!before.ok()) return before.status();
  const uint16_t shard = before->spec.shard;
  {
    absl::MutexLock lock(&floor_mu_);
    if (!claims_[shard].claimed.insert({id, index}).second) {
      return std::nullopt;  // Delivery has it.
    }
  }
  // Claims are released only once an update is on disk: with the claim
  // held, this read sees the latest record.
  auto now = read();
  if (!now.ok()) ReleaseClaim(shard, id, index);
  if (!now.ok()) return now.status();
  return *std::move(now);
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
