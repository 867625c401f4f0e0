// The spool: message bodies and the queue's write log, in append-only
// segment files.
//
// RocksDB keeps envelopes, recipients and the schedule; bodies live here,
// written once. Each committed group is one record: its bodies, then the
// RocksDB write batch of the same group, whose body references point into
// the record itself. A group is durable when its record is: one write and
// one fdatasync per group, with O_DIRECT where the file system allows it,
// so the bytes are not copied into the page cache and written back later.
// RocksDB is then written without a sync of its own; every so often the
// store syncs RocksDB's WAL and records a checkpoint, and recovery replays
// the records after the last checkpoint (puts and deletes: replaying one
// RocksDB already has changes nothing).
//
// On disk, in `dir`: segments named by a hex number that only grows
// ("000000000000002a.seg"), and spare segments ("spare-N.seg"). A segment
// whose bodies are all gone and which lies wholly before the checkpoint is
// renamed into a spare (up to `reserve`), or deleted. A new segment is a
// spare renamed when there is one: writing over blocks already written
// changes no file metadata, so each record costs one device write and one
// flush. Appending to a growing file also writes the inode (or commits the
// journal) on every record: on a virtio disk, 270 against 180 us and 85
// against 45 us of CPU per 200 KB record (measured with O_DIRECT|O_DSYNC).
//
// The reserve: in sync mode, Prepare() writes zero-filled spares until
// there are `reserve` of them. The store calls it at open and when it has
// been idle a while, never between the records of a busy spool: measured,
// writing zeros while records are written (every byte twice) cost more than
// the metadata writes it saves. A burst of up to the reserve's size is
// written over ready blocks; beyond it the spool grows its files.
//
// Record layout, 4 KiB aligned: a 64-byte header (magic, segment, offset,
// sequence number, flags, the lengths, a CRC32C), the bodies, the batch, a
// table of each body's length and CRC32C, zero padding. The header's CRC
// covers the header, the batch and the table; the bodies are checked
// against the table, whose CRCs the shards computed as the bodies arrived,
// so the committer checksums only a few KiB per record. A record is valid
// only at the segment and offset its header names, so a spare's old
// contents never read as new records.
//
// Thread safety: Place, Write, Void and the group methods belong to one
// thread (the store's committer) or to recovery; ReadBody, Ref, Unref and
// Checkpointed may be called from any thread.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace peregrine::queue {

struct SpoolPosition {
  uint64_t segment = 0;  // 0: none.
  uint64_t offset = 0;
  uint64_t seq = 0;  // Sequence number of the record that starts here.
};

// Where one body is. Encoded into the "spooled" column family.
struct BodyRef {
  uint64_t segment = 0;
  uint64_t offset = 0;  // Of the body, from the start of the segment file.
  uint32_t length = 0;
  uint32_t crc = 0;  // CRC32C of the body.
};
constexpr size_t kBodyRefBytes = 25;
std::string EncodeBodyRef(const BodyRef& ref);
void EncodeBodyRef(const BodyRef& ref, char* out);  // kBodyRefBytes.
bool DecodeBodyRef(absl::string_view value, BodyRef* ref);
std::string EncodeSpoolPosition(const SpoolPosition& pos);
bool DecodeSpoolPosition(absl::string_view value, SpoolPosition* pos);

// A record being assembled: bodies go in as messages arrive, the batch at
// commit. The buffer is 4 KiB aligned for O_DIRECT.
class SpoolGroup {
 public:
  SpoolGroup() = default;
  SpoolGroup(SpoolGroup&&) noexcept;
  SpoolGroup& operator=(SpoolGroup&&) noexcept;
  ~SpoolGroup();

  // Copies `body` in; returns its offset from the start of the record.
  // `crc` is its CRC32C (the caller has it for the body's reference).
  uint64_t AddBody(absl::string_view body, uint32_t crc);
  // Empties the group; a buffer grown past 16 MiB by large messages is
  // given back rather than kept for good.
  void Clear();

 private:
  friend class Spool;
  void Reserve(size_t bytes);
  // CRC of a record of this group: `header` with its crc field ignored,
  // then the batch of `batch_bytes` and the table, once written in.
  uint32_t RecordCrc(const void* header, size_t batch_bytes) const;

  char* data_ = nullptr;
  size_t capacity_ = 0;
  size_t bodies_ = 0;  // Bytes of bodies after the header.
  std::string table_;  // Per body: length and CRC32C, 4 bytes each.
};

class Spool {
 public:
  struct Options {
    std::string dir;
    bool sync = true;  // fdatasync each record.
    uint64_t segment_bytes = 64 << 20;
    // Spares to keep: freed segments, and in sync mode zero-filled ones
    // that Prepare writes.
    int reserve = 2;
    bool read_only = false;
    // Tests: when it returns true, a record write stops after its first
    // half and fails with EIO, as a failing disk would.
    std::function<bool()> fail_write;
  };
  static absl::StatusOr<std::unique_ptr<Spool>> Open(Options options);
  ~Spool();

  // --- The writer (one thread) ---------------------------------------------

  // Where a record of `group` and a batch of `batch_bytes` goes, opening a
  // new segment when the current one is full. Nothing is written yet.
  absl::StatusOr<SpoolPosition> Place(const SpoolGroup& group,
                                      size_t batch_bytes);
  // Writes the record at `at` (from Place) and syncs it. On success the
  // next Place follows it; on failure the next Place reuses `at`.
  absl::Status Write(const SpoolPosition& at, SpoolGroup& group,
                     absl::string_view batch);
  // Marks the record just written at `at` so that replay skips its batch
  // (its RocksDB write failed and its callers were told so).
  absl::Status Void(const SpoolPosition& at, SpoolGroup& group,
                    absl::string_view batch);
  // Where the next record goes (a checkpoint).
  SpoolPosition Next() const;

  // In sync mode, fewer spares than the reserve.
  bool ReserveShort() const;
  // Writes up to `max_bytes` (rounded up to 4 KiB) of zeros into the spare
  // being prepared; one that reaches a segment's size is synced and becomes
  // a spare. On failure the partial spare is deleted.
  absl::Status Prepare(uint64_t max_bytes);

  // Calls `apply` with the batch of each valid record from `from` on, in
  // order, following into the next segment at a segment's end; stops at
  // the first invalid record (a write cut short by a crash, never
  // acknowledged). Afterwards new records go into a new segment, and Next()
  // says where: call it once before writing, with `from` zero on a new
  // spool.
  absl::Status Replay(
      const SpoolPosition& from,
      const std::function<absl::Status(absl::string_view batch)>& apply,
      uint64_t* records);

  // --- Any thread ----------------------------------------------------------

  absl::StatusOr<std::string> ReadBody(const BodyRef& ref);
  // Live bodies per segment. A segment is freed when it has none and lies
  // wholly before the last checkpoint.
  struct SegmentUse {
    uint32_t bodies = 0;
    uint64_t bytes = 0;
  };
  void Ref(uint64_t segment, uint32_t count, uint64_t bytes);
  void Unref(uint64_t segment, uint32_t count, uint64_t bytes);
  void SetRefs(absl::flat_hash_map<uint64_t, SegmentUse> refs);
  void Checkpointed(const SpoolPosition& pos);
  // A segment no longer written since before `closed_before` whose live
  // bodies fill at most a quarter of a segment (deferred mail keeping the
  // rest of it on disk): its bodies are worth moving to the current one.
  // The first after `after`; 0: none.
  uint64_t SparseSegment(uint64_t after, absl::Time closed_before) const;
  uint64_t LiveBytes(uint64_t segment) const;

  // Segment files on disk (for tests and inspection).
  size_t SegmentCount() const;
  bool HasSegment(uint64_t segment) const;
  const std::string& dir() const { return options_.dir; }
  struct DiskUse {
    size_t segments = 0;
    size_t spares = 0;
    uint64_t bytes = 0;  // Of both.
  };
  DiskUse Usage() const;

 private:
  explicit Spool(Options options);
  absl::Status Scan();
  std::string SegmentPath(uint64_t segment) const;
  // Opens `segment` for writing: a spare renamed, else a new file.
  absl::Status OpenForWrite(uint64_t segment);
  // A number above every segment's.
  uint64_t NewSegmentId();
  void FreeSegmentsLocked();
  struct ReadFile {
    explicit ReadFile(int fd) : fd(fd) {}
    ~ReadFile();
    ReadFile(const ReadFile&) = delete;
    ReadFile& operator=(const ReadFile&) = delete;
    const int fd;
  };
  // Null if the segment cannot be opened (errno says why).
  std::shared_ptr<const ReadFile> ReadFd(uint64_t segment);
  absl::Status SyncDir();

  Options options_;
  bool direct_;  // O_DIRECT: in sync mode, where the file system takes it.

  // Writer state (one thread).
  int write_fd_ = -1;
  int prepare_fd_ = -1;  // The spare being prepared ("spare-N.seg.part").
  std::string prepare_path_;
  uint64_t prepared_ = 0;       // Bytes of it written.
  uint64_t write_segment_ = 0;  // Also read under mu_; written under it.
  SpoolPosition next_;

  mutable std::mutex mu_;
  std::map<uint64_t, SegmentUse> segments_;  // On disk, with live bodies.
  // When each segment stopped being written (found at start: that time).
  absl::flat_hash_map<uint64_t, absl::Time> closed_;
  uint64_t checkpoint_segment_ = 0;  // Segments below it are not replayed.
  std::vector<std::string> spares_;
  int next_spare_ = 0;
  absl::flat_hash_map<uint64_t, std::shared_ptr<const ReadFile>> read_fds_;
};

}  // namespace peregrine::queue
