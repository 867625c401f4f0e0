// RocksStore: the Store on RocksDB.
//
// Bodies are in the spool (queue/spool.h): written once, with O_DIRECT.
// Column families: "spooled" (where each body is), "envelopes",
// "recipients" (small, rewritten per attempt), "schedule" (per-shard time
// index: due work is a range scan) and "bodies" (bodies of queues written
// before the spool; read, never written). A committer thread owns the write
// path: Enqueue/Update append to one pending group (bodies and a WriteBatch)
// under a mutex; the committer swaps it out, writes it to the spool as one
// record with one fdatasync (fsync mode), then applies the batch to RocksDB
// without a sync of its own. So one fsync serves everything that arrived
// meanwhile, and a group is visible to readers only once it is durable.
// About once a second the committer syncs RocksDB's WAL and records a
// checkpoint; Open() replays the spool from the last one.
//
// It also keeps, per non-final message, how many recipients are still
// pending and which are final (about 40 bytes a message): that is what makes
// "delete the body after the last recipient" exact without a read on the
// write path. Open() rebuilds it from disk (recovery).
//
// Thread safety: every method may be called from any thread.
#pragma once

#include <atomic>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/container/btree_map.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/functional/function_ref.h"
#include "absl/synchronization/mutex.h"
#include "base/histogram.h"
#include "queue/spool.h"
#include "queue/store.h"
#include "queue/table.h"
#include "rocksdb/db.h"
#include "rocksdb/env.h"

namespace peregrine::queue {

struct RocksStoreOptions {
  std::string path;
  // true: fsync before completing (durable across power loss). false: the
  // write reaches the OS only; a power failure can lose acknowledged mail.
  bool sync = true;
  // Enqueue is refused while the file system has less free space.
  uint64_t min_free_bytes = 0;
  // Bodies written by versions before the spool: in blob files.
  bool body_blob_files = true;
  // The spool's directory; default `path`/spool.
  std::string spool_dir;
  uint64_t spool_segment_bytes = 64 << 20;
  // Spare segments kept written and ready (Spool's reserve), prepared at
  // open and when the committer has been idle a while.
  int spool_reserve_segments = 4;
  // How often the committer looks for an old segment kept on disk by a few
  // live bodies (deferred mail) and moves them to the current segment, and
  // how long a segment must have been closed first (a queue being drained
  // fast empties its segments by itself).
  absl::Duration spool_relocate_interval = absl::Seconds(10);
  absl::Duration spool_relocate_after = absl::Minutes(10);
  // Tests: RocksDB writes skip its WAL and are not flushed at close, as if
  // the machine lost power before RocksDB synced them; only the spool
  // brings them back.
  bool test_lose_unsynced_rocksdb_writes = false;
  // Tests: spool writes fail while it returns true (Spool::Options).
  std::function<bool()> test_fail_spool_write;
  size_t block_cache_bytes = 32 << 20;
  // Shards of this run. Recipients recorded under a shard that no longer
  // exists (or, with `shard_of`, that no longer owns their site) are moved.
  int shards = 1;
  std::function<int(absl::string_view site)> shard_of;
  // Free bytes of the queue's file system; default statvfs(path). Tests
  // replace it.
  std::function<uint64_t()> free_bytes;
  // How long a short record of a finished message (its envelope, and each
  // recipient's outcome and last reply; no body) is kept for `queue show`.
  // Zero: none.
  absl::Duration keep_finished = absl::Hours(72);
  // Fresh mail kept in memory after its write, up to this many bytes
  // (bodies and envelopes), for delivery to take without reading it back:
  // its recipients are handed to Claim() at once (no scan), and
  // ReadForSend() answers from memory (no RocksDB read, no pread). 0: off.
  size_t fresh_bytes = 16 << 20;
  // A file of this size kept in the queue folder while there is room, and
  // deleted when a start finds the disk too full for RocksDB to open, so
  // that a daemon restarted on a full disk can still deliver what it holds.
  // 0: none.
  uint64_t emergency_space_bytes = 16 << 20;
  // Inspection of a queue another process (a running daemon) has open:
  // RocksDB's secondary mode, caught up once at open. Nothing is written;
  // Enqueue and Update are refused.
  bool read_only = false;
  // Tests inject storage faults through a custom Env.
  rocksdb::Env* env = nullptr;
};

class RocksStore final : public Store {
 public:
  static absl::StatusOr<std::unique_ptr<RocksStore>> Open(
      RocksStoreOptions options, RecoveryStats* stats = nullptr);
  // Writes what is pending, then closes.
  ~RocksStore() override;

  void Enqueue(NewMessage message, EnqueueDone done) override;
  void Update(RecipientUpdate update, Done done) override;
  void UpdateWithNotice(std::vector<RecipientUpdate> updates,
                        std::optional<NewMessage> notice,
                        EnqueueDone done) override;
  absl::StatusOr<std::vector<RecipientRecord>> Due(int shard, absl::Time now,
                                                   size_t limit) override;
  absl::StatusOr<std::vector<RecipientRecord>> Claim(int shard, absl::Time now,
                                                     size_t limit) override;
  void Unclaim(const RecipientRecord& record) override;
  absl::StatusOr<StoredMessage> Read(MessageId id, bool with_body) override;
  absl::StatusOr<OutgoingMessage> ReadForSend(MessageId id) override;
  absl::StatusOr<StoredMessage> Lookup(MessageId id) override;
  absl::StatusOr<std::optional<RecipientRecord>> ClaimOne(
      MessageId id, uint32_t index) override;
  absl::StatusOr<QueueCounts> Counts() override;
  absl::StatusOr<std::vector<StoredMessage>> List(
      const ListFilter& filter) override;
  bool AcceptingNewMail() const override {
    return accepting_.load(std::memory_order_relaxed);
  }
  bool HasRoomFor(uint64_t bytes) const override;

  // The side table (table.h), for the suppression list; lives as long as
  // the store.
  Table* SideTable();

  // Joint writes done so far (each one fsync in sync mode).
  uint64_t commits() const { return commits_.load(std::memory_order_relaxed); }
  // Each group commit's time to disk (spool write and sync, RocksDB write)
  // and how many writes (enqueues, updates) it carried.
  const Histogram& commit_seconds() const { return commit_seconds_; }
  const Histogram& commit_writes() const { return commit_writes_; }
  // Messages not yet final, as the in-memory table counts them.
  size_t LiveMessages() const;
  // RocksDB's memory: block cache and memtables.
  uint64_t RocksMemoryBytes() const;
  // Writes memtables out to table and blob files and waits for it.
  absl::Status Flush();
  // Waits (up to `timeout`) until every Enqueue/Update handed over so far
  // has been answered: its `done` has returned. False at the timeout. The
  // daemon calls it before its shards' reactors go, which those answers
  // post to.
  bool WaitAnswered(absl::Duration timeout);
  // Spool segment files on disk.
  size_t SpoolSegments() const { return spool_ ? spool_->SegmentCount() : 0; }
  Spool::DiskUse SpoolUsage() const {
    return spool_ ? spool_->Usage() : Spool::DiskUse{};
  }
  // Re-reads free space now instead of at the next periodic check.
  void CheckFreeSpace();
  // The emergency space (RocksStoreOptions::emergency_space_bytes).
  std::string EmergencyPath() const;

 private:
  // Before RocksDB opens: deletes the emergency space if the disk is full.
  void ReleaseEmergencySpaceIfFull();
  // With `free` bytes free: makes the emergency space again if missing.
  void KeepEmergencySpace(uint64_t free);
  // Free bytes new mail must leave: min_free_bytes, plus the emergency
  // space while it is released.
  uint64_t Floor() const;
  // Writes up to `max_bytes` of the spool's reserve while it is short and
  // the disk has room above the free-space floor. A failure is logged and
  // pauses preparation for a minute.
  void PrepareReserve(uint64_t max_bytes);

  // One per message in the queue: 24 bytes, so that a backlog of a million
  // costs about 30 MB in `live_` (a B-tree: ids grow, so it fills its
  // nodes; a hash table at a million entries is half empty slots).
  struct Live {
    Live() = default;
    Live(Live&& other) noexcept;
    Live& operator=(Live&& other) noexcept;
    ~Live();
    uint32_t total = 0;  // Set once, before the first SetFinal.
    uint32_t pending = 0;
    uint32_t segment = 0;     // The body's spool segment; 0: in "bodies".
    uint32_t body_bytes = 0;  // Fits beside `segment`: no larger entry.
    bool IsFinal(uint32_t i) const;
    void SetFinal(uint32_t i);
    void ClearFinal(uint32_t i);

   private:
    bool Wide() const { return total > 64; }
    uint64_t* Words() const { return reinterpret_cast<uint64_t*>(bits_); }
    // Which recipients are final: the bits themselves for up to 64; for
    // more, the address of ceil(total / 64) words, made at the first
    // SetFinal (0 until then).
    uint64_t bits_ = 0;
  };
  using LiveMap = absl::btree_map<MessageId, Live>;
  // How to take back what one append did to `live_`, should its batch fail.
  struct Undo {
    MessageId id;
    uint32_t index;                // For a final update.
    bool enqueued;                 // Else: a recipient became final.
    std::unique_ptr<Live> erased;  // The entry, if the update removed it.
  };
  // A body copied to the pending group from an old, sparse segment.
  struct Relocated {
    MessageId id;
    uint32_t from;  // Its segment before.
  };
  struct Patch {
    size_t at;     // Of the encoded reference in the batch's data.
    uint64_t rel;  // The body's offset within the record.
  };
  struct Waiter {
    absl::AnyInvocable<void(absl::Status)> done;
    absl::Status preset;  // Non-OK: refused before writing; reported as is.
  };

  explicit RocksStore(RocksStoreOptions options);
  absl::Status OpenDb() ABSL_EXCLUSIVE_LOCKS_REQUIRED(db_mu_);
  void CloseDb() ABSL_EXCLUSIVE_LOCKS_REQUIRED(db_mu_);
  // After a failed write: RocksDB treats most I/O errors as fatal and stays
  // read-only, so close and open the database again (the WAL tells it what
  // was written). Retried before each later write while it fails.
  bool Reopen();
  static absl::Status Down();
  absl::Status Recover(RecoveryStats* stats);
  absl::Status RebuildLive();
  absl::StatusOr<StoredMessage> ReadLocked(MessageId id, bool with_body)
      ABSL_SHARED_LOCKS_REQUIRED(db_mu_);
  // `shard` as a schedule key prefix, if the queue is up and has it.
  absl::StatusOr<uint16_t> ScheduleShard(int shard) const
      ABSL_SHARED_LOCKS_REQUIRED(db_mu_);
  // Walks `shard`'s schedule from `from` through `now` in time order until
  // `visit` returns false.
  absl::Status ForEachScheduled(
      uint16_t shard, absl::Time from, absl::Time now,
      absl::FunctionRef<absl::StatusOr<bool>(absl::Time, MessageId, uint32_t)>
          visit) ABSL_SHARED_LOCKS_REQUIRED(db_mu_);
  // The record a schedule entry points at, unless it is final or has moved
  // on to another time (a stale entry).
  absl::StatusOr<std::optional<RecipientRecord>> LiveRecordAt(MessageId id,
                                                              uint32_t index,
                                                              absl::Time when)
      ABSL_SHARED_LOCKS_REQUIRED(db_mu_);
  void CommitterMain();
  // Writes one group: its spool record, then the batch to RocksDB.
  absl::Status Commit(const rocksdb::WriteBatch& batch, SpoolGroup& group,
                      const std::vector<Patch>& patches,
                      const std::vector<MessageId>& ids,
                      const std::vector<Relocated>& relocated,
                      bool* rocks_failed) ABSL_SHARED_LOCKS_REQUIRED(db_mu_);
  // Syncs RocksDB's WAL and records that the spool need not be replayed
  // before the next record.
  absl::Status Checkpoint() ABSL_SHARED_LOCKS_REQUIRED(db_mu_);
  // Moves the bodies out of a sparse segment (Spool::SparseSegment) into
  // the pending group; the committer writes them with the next group.
  void Relocate();
  void UndoBatch(std::vector<Undo>& undo);
  void Refuse(absl::Status status, absl::AnyInvocable<void(absl::Status)> done);
  // A message checked and encoded outside the lock, then added to the
  // pending group under it.
  struct PreparedMessage {
    std::string body;
    std::string envelope;
    BodyRef ref;
    std::vector<std::string> records;
    std::vector<uint16_t> shards;
    uint64_t need = 0;  // Bytes it takes on disk, roughly.
    absl::Time now;
    // For the fresh cache: the message as values.
    Envelope envelope_value;
    std::vector<RecipientRecord> records_value;
  };
  absl::Status PrepareMessage(NewMessage& message, PreparedMessage* out);
  MessageId AddMessageLocked(PreparedMessage& m)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) ABSL_SHARED_LOCKS_REQUIRED(db_mu_);
  absl::Status CheckUpdate(const RecipientUpdate& update) const;
  // The record after `update`; rounds update.next_attempt as stored.
  static std::string EncodeUpdated(RecipientUpdate& update);
  absl::Status AddUpdateLocked(const RecipientUpdate& update,
                               const std::string& record)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) ABSL_SHARED_LOCKS_REQUIRED(db_mu_);
  void ReleaseClaim(uint16_t shard, MessageId id, uint32_t index);

  // Fresh mail (RocksStoreOptions::fresh_bytes; rocksdb_fresh.cc). A
  // message added to a group takes room in the budget at once; once the
  // group is on disk its envelope and body go to `fresh_` and each
  // recipient, claimed at that moment, to its shard's `fresh_due_`, where
  // Claim() takes it first. The scan never sees them (they are claimed);
  // Unclaim() hands one back to it. An entry leaves `fresh_` when each of
  // its recipients has had one attempt recorded.
  struct FreshCandidate {
    MessageId id = 0;
    Envelope envelope;
    std::string envelope_value;  // As stored, for the finished record.
    std::shared_ptr<const std::string> body;
    std::vector<RecipientRecord> records;
    size_t bytes = 0;
  };
  struct Fresh {
    Envelope envelope;
    std::string envelope_value;
    std::shared_ptr<const std::string> body;
    std::vector<bool> attempted;
    uint32_t unattempted = 0;
    size_t bytes = 0;
  };
  // Under mu_, after its body went to the group: room for `m` (its body
  // is moved into the candidate then).
  bool ReserveFresh(PreparedMessage& m, MessageId id)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Before the group becomes visible (so no scan hands its recipients out
  // too), once it is on disk, or when it failed.
  void PreclaimFresh(const std::vector<FreshCandidate>& candidates);
  void PublishFresh(std::vector<FreshCandidate>& candidates);
  void DropFresh(std::vector<FreshCandidate>& candidates);
  // An attempt was recorded for recipient `index` of `id`.
  // When that was its last recipient, the entry goes, and `envelope_value`
  // (if not null) gets the envelope as stored: the finished record needs
  // it, and a RocksDB read costs more.
  void FreshAttempted(MessageId id, uint32_t index,
                      std::string* envelope_value = nullptr);
  void TakeFresh(uint16_t shard, size_t limit,
                 std::vector<RecipientRecord>* out);
  void NoteClaimScheduled(uint16_t shard, absl::Time when)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void NoteScheduled(uint16_t shard, absl::Time when)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  MessageId NextId() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  RocksStoreOptions options_;
  // Readers hold it shared; only the committer's Reopen() holds it alone.
  mutable absl::Mutex db_mu_;
  std::unique_ptr<rocksdb::DB> db_;
  std::vector<rocksdb::ColumnFamilyHandle*> handles_;
  rocksdb::ColumnFamilyHandle* bodies_ = nullptr;
  rocksdb::ColumnFamilyHandle* envelopes_ = nullptr;
  rocksdb::ColumnFamilyHandle* recipients_ = nullptr;
  rocksdb::ColumnFamilyHandle* schedule_ = nullptr;
  rocksdb::ColumnFamilyHandle* meta_ = nullptr;
  rocksdb::ColumnFamilyHandle* spooled_ = nullptr;
  // Finished messages (keep_finished): key RecipientKey(id, i) for each
  // recipient's final record, RecipientKey(id, kEnvelopeIndex) for the
  // envelope. Ids grow with time, so old ones go in one range delete.
  // Null in a read-only view of a queue made before it existed.
  rocksdb::ColumnFamilyHandle* finished_ = nullptr;
  // The side table's entries; null in a read-only view of an older queue.
  rocksdb::ColumnFamilyHandle* side_ = nullptr;
  class Side;
  absl::Mutex side_mu_;
  std::unique_ptr<Table> side_table_ ABSL_GUARDED_BY(side_mu_);
  std::vector<FreshCandidate> batch_fresh_ ABSL_GUARDED_BY(mu_);
  // Earliest schedule time per shard in `batch_` of entries the claim scan
  // must see (all but fresh mail's).
  absl::flat_hash_map<uint16_t, absl::Time> batch_claim_min_
      ABSL_GUARDED_BY(mu_);
  std::atomic<size_t> fresh_reserved_{0};
  absl::Mutex fresh_mu_;  // After mu_ when both are held.
  absl::flat_hash_map<MessageId, Fresh> fresh_ ABSL_GUARDED_BY(fresh_mu_);
  // Recipients that reached each final state, ever (meta key "totals");
  // written with each group that changed them.
  uint64_t totals_[5] ABSL_GUARDED_BY(mu_) = {};
  bool totals_dirty_ ABSL_GUARDED_BY(mu_) = false;
  absl::Time last_finished_sweep_ = absl::InfinitePast();  // Committer.
  void SweepFinished();  // Committer: drops records past keep_finished.
  absl::StatusOr<StoredMessage> ReadFinished(MessageId id);
  std::unique_ptr<Spool> spool_;
  std::shared_ptr<rocksdb::Cache> cache_;

  mutable absl::Mutex mu_;
  absl::CondVar work_;
  rocksdb::WriteBatch batch_ ABSL_GUARDED_BY(mu_);
  // The pending group's bodies, where their references sit in `batch_`
  // (to add the record's place at commit) and whose they are.
  SpoolGroup group_ ABSL_GUARDED_BY(mu_);
  std::vector<Patch> patches_ ABSL_GUARDED_BY(mu_);
  std::vector<MessageId> group_ids_ ABSL_GUARDED_BY(mu_);
  // Bytes the messages of the group being formed will take on disk.
  uint64_t group_admitted_ ABSL_GUARDED_BY(mu_) = 0;
  // Free bytes at the last check (after each group commit, and once a
  // second), and bytes admitted since but not written: a new message is
  // refused when it would take the disk under the floor, so the floor is
  // never crossed by a burst between two checks.
  std::atomic<uint64_t> free_at_check_{UINT64_MAX};
  // The emergency space was freed at this start: it is no room for new mail
  // (the floor counts it) until it could be made again.
  std::atomic<bool> emergency_released_{false};
  std::atomic<uint64_t> admitted_{0};
  std::vector<Relocated> relocated_ ABSL_GUARDED_BY(mu_);
  std::vector<Waiter> waiters_ ABSL_GUARDED_BY(mu_);
  // Taken by the committer and not yet all answered (WaitAnswered()).
  size_t answering_ ABSL_GUARDED_BY(mu_) = 0;
  // Earliest schedule time per shard in `batch_`; published to
  // `scheduled_min_` once the batch is on disk.
  absl::flat_hash_map<uint16_t, absl::Time> batch_min_ ABSL_GUARDED_BY(mu_);
  std::vector<Undo> batch_undo_ ABSL_GUARDED_BY(mu_);
  LiveMap live_ ABSL_GUARDED_BY(mu_);
  MessageId last_id_ ABSL_GUARDED_BY(mu_) = 0;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;

  // Due() scans each shard from a floor below which nothing is due, so it
  // does not walk over the tombstones of recipients already handled.
  absl::Mutex floor_mu_;
  absl::flat_hash_map<uint16_t, absl::Time> floor_ ABSL_GUARDED_BY(floor_mu_);
  absl::flat_hash_map<uint16_t, absl::Time> scheduled_min_
      ABSL_GUARDED_BY(floor_mu_);

  // Claim(): per shard, where the next scan starts (everything before it
  // was claimed or is stale), an earlier point to go back to when entries
  // were written there since, and what is claimed.
  struct Claims {
    absl::Time from = absl::InfinitePast();
    absl::Time rewind = absl::InfiniteFuture();
    absl::flat_hash_set<std::pair<MessageId, uint32_t>> claimed;
  };
  absl::flat_hash_map<uint16_t, Claims> claims_ ABSL_GUARDED_BY(floor_mu_);
  // Fresh recipients per shard, claimed already, for Claim() to hand out.
  absl::flat_hash_map<uint16_t, std::deque<RecipientRecord>> fresh_due_
      ABSL_GUARDED_BY(floor_mu_);

  std::string secondary_dir_;  // read_only: the secondary's own files.
  std::atomic<bool> accepting_{true};
  std::atomic<uint64_t> commits_{0};
  Histogram commit_seconds_{
      {0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5}};
  Histogram commit_writes_{
      {1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096}};
  absl::Time last_space_check_;
  absl::Time prepare_after_ = absl::InfinitePast();  // Committer only.
  // The spool has held mail, before this open or since: only then is the
  // reserve written (a new, idle instance keeps its disk). Committer only
  // once it runs.
  bool spool_used_ = false;
  std::thread committer_;
};

}  // namespace peregrine::queue
