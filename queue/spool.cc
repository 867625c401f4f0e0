#include "queue/spool.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/strip.h"
#include "base/log.h"
#include "queue/crc32c.h"

namespace peregrine::queue {
namespace {

constexpr const char* kLog = "queue";
constexpr uint64_t kMagic = 0x314C4F4F50534750;  // "PGSPOOL1"
constexpr size_t kHeaderBytes = 64;
constexpr size_t kAlign = 4096;
constexpr uint32_t kVoid = 1;
constexpr char kRefVersion = 1;

struct Header {
  uint64_t magic;
  uint64_t segment;
  uint64_t offset;
  uint64_t seq;
  uint64_t bodies;  // Several messages of up to 2 GiB each may share one.
  uint32_t batch;
  uint32_t flags;
  uint32_t crc;  // Of the header, the batch and the table.
  uint32_t table;
  char reserved[8];
};
static_assert(sizeof(Header) == kHeaderBytes);

size_t RoundUp(size_t n) { return (n + kAlign - 1) & ~(kAlign - 1); }

uint32_t Crc(const char* data, size_t n) {
  return rocksdb::crc32c::Extend(0, data, n);
}

void PutU64(std::string& s, uint64_t v) {
  char b[8];  // Little-endian; one store, then one append.
  for (int i = 0; i < 8; ++i) b[i] = static_cast<char>(v >> (8 * i));
  s.append(b, 8);
}
void PutU32(std::string& s, uint32_t v) {
  char b[4];
  for (int i = 0; i < 4; ++i) b[i] = static_cast<char>(v >> (8 * i));
  s.append(b, 4);
}
uint64_t GetU64(const char* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | static_cast<uint8_t>(p[i]);
  return v;
}
uint32_t GetU32(const char* p) {
  uint32_t v = 0;
  for (int i = 3; i >= 0; --i) v = (v << 8) | static_cast<uint8_t>(p[i]);
  return v;
}

absl::Status Errno(absl::string_view what, const std::string& path) {
  int e = errno;
  std::string message =
      absl::StrCat("spool ", what, " ", path, ": ", strerror(e));
  if (e == ENOSPC || e == EDQUOT) {
    return absl::ResourceExhaustedError(message);
  }
  return absl::UnavailableError(message);
}

// pread or pwrite until all `n` bytes are done; false at an error or at the
// end of the file (errno 0 then).
template <typename Char, typename Op>
bool AllAt(Op op, int fd, Char* buf, size_t n, uint64_t offset) {
  errno = 0;
  while (n > 0) {
    ssize_t r = op(fd, buf, n, static_cast<off_t>(offset));
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return false;
    buf += r;
    n -= static_cast<size_t>(r);
    offset += static_cast<uint64_t>(r);
  }
  return true;
}

bool PreadAll(int fd, char* buf, size_t n, uint64_t offset) {
  return AllAt(::pread, fd, buf, n, offset);
}

bool PwriteAll(int fd, const char* buf, size_t n, uint64_t offset) {
  return AllAt(::pwrite, fd, buf, n, offset);
}

// Opens for writing with O_DIRECT where the file system takes it (tmpfs
// does not).
int OpenWrite(const std::string& path, int flags, bool* direct) {
  if (*direct) {
    int fd = open(path.c_str(), flags | O_WRONLY | O_CLOEXEC | O_DIRECT, 0600);
    if (fd >= 0 || errno != EINVAL) return fd;
    *direct = false;
  }
  return open(path.c_str(), flags | O_WRONLY | O_CLOEXEC, 0600);
}

// The header (its crc field zero), then the batch and the table, which
// follow one another; the bodies are checked against the table.
uint32_t HeaderCrc(Header h, const char* batch_and_table, size_t n) {
  h.crc = 0;
  uint32_t crc = Crc(reinterpret_cast<const char*>(&h), sizeof(h));
  return rocksdb::crc32c::Extend(crc, batch_and_table, n);
}

// A record read back whole: its header and batch as written, and every
// body as the table says (a write cut short can keep some blocks and lose
// others).
bool RecordValid(const Header& h, const std::string& record) {
  const char* tail = record.data() + kHeaderBytes + h.bodies;
  if (HeaderCrc(h, tail, h.batch + h.table) != h.crc) return false;
  const char* table = tail + h.batch;
  uint64_t at = kHeaderBytes;
  for (uint32_t i = 0; i < h.table; i += 8) {
    uint32_t length = GetU32(table + i), crc = GetU32(table + i + 4);
    if (at + length > kHeaderBytes + h.bodies) return false;
    if (Crc(record.data() + at, length) != crc) return false;
    at += length;
  }
  return at == kHeaderBytes + h.bodies;
}

}  // namespace

uint32_t SpoolGroup::RecordCrc(const void* header, size_t batch_bytes) const {
  Header h;
  memcpy(&h, header, sizeof(h));
  return HeaderCrc(h, data_ + kHeaderBytes + bodies_,
                   batch_bytes + table_.size());
}

// --- Encodings ---------------------------------------------------------------

void EncodeBodyRef(const BodyRef& ref, char* out) {
  out[0] = kRefVersion;
  for (int i = 0; i < 8; ++i) {
    out[1 + i] = static_cast<char>(ref.segment >> (8 * i));
    out[9 + i] = static_cast<char>(ref.offset >> (8 * i));
  }
  for (int i = 0; i < 4; ++i) {
    out[17 + i] = static_cast<char>(ref.length >> (8 * i));
    out[21 + i] = static_cast<char>(ref.crc >> (8 * i));
  }
}

std::string EncodeBodyRef(const BodyRef& ref) {
  std::string s(kBodyRefBytes, '\0');
  EncodeBodyRef(ref, s.data());
  return s;
}

bool DecodeBodyRef(absl::string_view v, BodyRef* ref) {
  if (v.size() != kBodyRefBytes || v[0] != kRefVersion) return false;
  ref->segment = GetU64(v.data() + 1);
  ref->offset = GetU64(v.data() + 9);
  ref->length = GetU32(v.data() + 17);
  ref->crc = GetU32(v.data() + 21);
  return true;
}

std::string EncodeSpoolPosition(const SpoolPosition& pos) {
  std::string s;
  PutU64(s, pos.segment);
  PutU64(s, pos.offset);
  PutU64(s, pos.seq);
  return s;
}

bool DecodeSpoolPosition(absl::string_view v, SpoolPosition* pos) {
  if (v.size() != 24) return false;
  pos->segment = GetU64(v.data());
  pos->offset = GetU64(v.data() + 8);
  pos->seq = GetU64(v.data() + 16);
  return true;
}

// --- SpoolGroup --------------------------------------------------------------

SpoolGroup::SpoolGroup(SpoolGroup&& o) noexcept { *this = std::move(o); }

SpoolGroup& SpoolGroup::operator=(SpoolGroup&& o) noexcept {
  if (this != &o) {
    free(data_);
    data_ = std::exchange(o.data_, nullptr);
    capacity_ = std::exchange(o.capacity_, 0);
    bodies_ = std::exchange(o.bodies_, 0);
    table_ = std::move(o.table_);
    o.table_.clear();
  }
  return *this;
}

SpoolGroup::~SpoolGroup() { free(data_); }

void SpoolGroup::Clear() {
  bodies_ = 0;
  table_.clear();
  if (capacity_ > (16 << 20)) {
    free(data_);
    data_ = nullptr;
    capacity_ = 0;
  }
}

void SpoolGroup::Reserve(size_t bytes) {
  if (bytes <= capacity_) return;
  size_t capacity = RoundUp(std::max(bytes, capacity_ * 2));
  char* data = static_cast<char*>(aligned_alloc(kAlign, capacity));
  if (data == nullptr) std::abort();  // As std::string would throw.
  if (data_ != nullptr) memcpy(data, data_, kHeaderBytes + bodies_);
  free(data_);
  data_ = data;
  capacity_ = capacity;
}

uint64_t SpoolGroup::AddBody(absl::string_view body, uint32_t crc) {
  Reserve(kHeaderBytes + bodies_ + body.size());
  uint64_t at = kHeaderBytes + bodies_;
  memcpy(data_ + at, body.data(), body.size());
  bodies_ += body.size();
  PutU32(table_, static_cast<uint32_t>(body.size()));
  PutU32(table_, crc);
  return at;
}

// --- Spool -------------------------------------------------------------------

// Without sync (durability "none") the page cache is the point: writes
// return at once and the kernel writes back later.
Spool::Spool(Options options)
    : options_(std::move(options)), direct_(options_.sync) {}

absl::StatusOr<std::unique_ptr<Spool>> Spool::Open(Options options) {
  std::unique_ptr<Spool> spool(new Spool(std::move(options)));
  if (absl::Status s = spool->Scan(); !s.ok()) return s;
  return spool;
}

Spool::~Spool() {
  if (write_fd_ >= 0) close(write_fd_);
  if (prepare_fd_ >= 0) {
    close(prepare_fd_);
    unlink(prepare_path_.c_str());
  }
}

std::string Spool::SegmentPath(uint64_t segment) const {
  return absl::StrFormat("%s/%016x.seg", options_.dir, segment);
}

absl::Status Spool::Scan() {
  if (!options_.read_only) {
    std::error_code ec;
    std::filesystem::create_directories(options_.dir, ec);
    if (ec) {
      return absl::UnavailableError(
          absl::StrCat("cannot create the spool directory ", options_.dir, ": ",
                       ec.message()));
    }
  }
  DIR* dir = opendir(options_.dir.c_str());
  if (dir == nullptr) {
    if (options_.read_only && errno == ENOENT) return absl::OkStatus();
    return Errno("open directory", options_.dir);
  }
  std::lock_guard<std::mutex> lock(mu_);
  while (dirent* e = readdir(dir)) {
    absl::string_view name = e->d_name;
    std::string path = absl::StrCat(options_.dir, "/", name);
    if (absl::EndsWith(name, ".seg.part")) {  // A spare left half prepared.
      if (!options_.read_only) unlink(path.c_str());
      continue;
    }
    if (!absl::ConsumeSuffix(&name, ".seg")) continue;
    if (absl::ConsumePrefix(&name, "spare-")) {
      int n;
      if (absl::SimpleAtoi(name, &n)) {
        spares_.push_back(path);
        next_spare_ = std::max(next_spare_, n + 1);
      }
      continue;
    }
    uint64_t segment;
    if (name.size() == 16 && absl::SimpleHexAtoi(name, &segment) &&
        segment != 0) {
      segments_[segment] = {};
      closed_[segment] = absl::Now();
    }
  }
  closedir(dir);
  return absl::OkStatus();
}

absl::Status Spool::SyncDir() {
  int fd = open(options_.dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return Errno("open directory", options_.dir);
  int r = fsync(fd);
  close(fd);
  if (r != 0) return Errno("sync directory", options_.dir);
  return absl::OkStatus();
}

absl::Status Spool::OpenForWrite(uint64_t segment) {
  std::string path = SegmentPath(segment);
  std::string spare;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!spares_.empty()) {
      spare = spares_.back();
      spares_.pop_back();
    }
  }
  int fd;
  if (!spare.empty() && rename(spare.c_str(), path.c_str()) == 0) {
    fd = OpenWrite(path, options_.sync ? O_DSYNC : 0, &direct_);
  } else {
    // Not O_EXCL: a file of this number can only be left by an attempt
    // whose directory sync failed, before any record was written to it.
    fd = OpenWrite(path, O_CREAT | (options_.sync ? O_DSYNC : 0), &direct_);
  }
  if (fd < 0) return Errno("create", path);
  if (absl::Status s = SyncDir(); !s.ok()) {
    close(fd);
    return s;
  }
  if (write_fd_ >= 0) close(write_fd_);
  write_fd_ = fd;
  std::lock_guard<std::mutex> lock(mu_);
  if (write_segment_ != 0) closed_[write_segment_] = absl::Now();
  write_segment_ = segment;
  segments_.try_emplace(segment);
  return absl::OkStatus();
}

absl::StatusOr<SpoolPosition> Spool::Place(const SpoolGroup& group,
                                           size_t batch_bytes) {
  size_t total =
      RoundUp(kHeaderBytes + group.bodies_ + batch_bytes + group.table_.size());
  bool full = next_.offset > 0 && next_.offset + total > options_.segment_bytes;
  if (full || next_.segment == 0) {
    next_.segment = NewSegmentId();
    next_.offset = 0;
  }
  if (write_fd_ < 0 || write_segment_ != next_.segment) {
    if (absl::Status s = OpenForWrite(next_.segment); !s.ok()) return s;
  }
  return next_;
}

absl::Status Spool::Write(const SpoolPosition& at, SpoolGroup& group,
                          absl::string_view batch) {
  size_t used =
      kHeaderBytes + group.bodies_ + batch.size() + group.table_.size();
  size_t total = RoundUp(used);
  group.Reserve(total);
  char* tail = group.data_ + kHeaderBytes + group.bodies_;
  memcpy(tail, batch.data(), batch.size());
  memcpy(tail + batch.size(), group.table_.data(), group.table_.size());
  memset(group.data_ + used, 0, total - used);
  Header h{};
  h.magic = kMagic;
  h.segment = at.segment;
  h.offset = at.offset;
  h.seq = at.seq;
  h.bodies = group.bodies_;
  h.batch = static_cast<uint32_t>(batch.size());
  h.table = static_cast<uint32_t>(group.table_.size());
  h.flags = 0;
  h.crc = group.RecordCrc(&h, batch.size());
  memcpy(group.data_, &h, sizeof(h));
  std::string path = SegmentPath(at.segment);
  if (options_.fail_write && options_.fail_write()) {
    size_t half = total / 2 / kAlign * kAlign;
    if (half > 0) (void)PwriteAll(write_fd_, group.data_, half, at.offset);
    errno = EIO;
    return Errno("write", path);
  }
  if (!PwriteAll(write_fd_, group.data_, total, at.offset)) {
    if (errno == 0) errno = EIO;
    return Errno("write", path);
  }
  next_ = {at.segment, at.offset + total, at.seq + 1};
  return absl::OkStatus();
}

absl::Status Spool::Void(const SpoolPosition& at, SpoolGroup& group,
                         absl::string_view batch) {
  Header h;
  memcpy(&h, group.data_, sizeof(h));
  h.flags |= kVoid;
  h.crc = group.RecordCrc(&h, batch.size());
  memcpy(group.data_, &h, sizeof(h));
  // Only the first block changes.
  std::string path = SegmentPath(at.segment);
  if (!PwriteAll(write_fd_, group.data_, kAlign, at.offset)) {
    if (errno == 0) errno = EIO;
    return Errno("write", path);
  }
  if (options_.sync && fdatasync(write_fd_) != 0) return Errno("sync", path);
  return absl::OkStatus();
}

SpoolPosition Spool::Next() const { return next_; }

bool Spool::ReserveShort() const {
  if (!options_.sync || options_.read_only) return false;
  std::lock_guard<std::mutex> lock(mu_);
  return static_cast<int>(spares_.size()) < options_.reserve;
}

absl::Status Spool::Prepare(uint64_t max_bytes) {
  constexpr size_t kZeros = 1 << 20;
  static char* const zeros = [] {
    char* p = static_cast<char*>(std::aligned_alloc(kAlign, kZeros));
    memset(p, 0, kZeros);
    return p;
  }();
  auto fail = [this](absl::string_view what) {
    absl::Status s = Errno(what, prepare_path_);
    close(prepare_fd_);
    unlink(prepare_path_.c_str());
    prepare_fd_ = -1;
    return s;
  };
  if (prepare_fd_ < 0) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      prepare_path_ =
          absl::StrFormat("%s/spare-%d.seg.part", options_.dir, next_spare_++);
    }
    prepare_fd_ = OpenWrite(prepare_path_, O_CREAT | O_TRUNC, &direct_);
    if (prepare_fd_ < 0) return Errno("create", prepare_path_);
    prepared_ = 0;
  }
  const uint64_t size = RoundUp(options_.segment_bytes);
  uint64_t end = std::min(size, prepared_ + RoundUp(max_bytes));
  while (prepared_ < end) {
    size_t n = static_cast<size_t>(std::min<uint64_t>(kZeros, end - prepared_));
    if (!PwriteAll(prepare_fd_, zeros, n, prepared_)) {
      if (errno == 0) errno = EIO;
      return fail("write");
    }
    prepared_ += n;
  }
  if (prepared_ < size) return absl::OkStatus();
  if (fdatasync(prepare_fd_) != 0) return fail("sync");
  std::string spare(absl::StripSuffix(prepare_path_, ".part"));
  if (rename(prepare_path_.c_str(), spare.c_str()) != 0) return fail("rename");
  close(prepare_fd_);
  prepare_fd_ = -1;
  std::lock_guard<std::mutex> lock(mu_);
  spares_.push_back(std::move(spare));
  return absl::OkStatus();
}

absl::Status Spool::Replay(
    const SpoolPosition& from,
    const std::function<absl::Status(absl::string_view batch)>& apply,
    uint64_t* records) {
  *records = 0;
  SpoolPosition pos = from;
  std::string record;
  bool moved_on = false;  // Came to this segment from the previous one.
  while (pos.segment != 0) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (!segments_.contains(pos.segment)) break;
    }
    std::shared_ptr<const ReadFile> file = ReadFd(pos.segment);
    if (!file) return Errno("open", SegmentPath(pos.segment));
    int fd = file->fd;
    char raw[kHeaderBytes];
    Header h;
    bool valid = PreadAll(fd, raw, kHeaderBytes, pos.offset);
    if (valid) {
      memcpy(&h, raw, sizeof(h));
      valid = h.magic == kMagic && h.segment == pos.segment &&
              h.offset == pos.offset && h.seq == pos.seq &&
              h.batch < (1u << 31) && h.table < (1u << 31) && h.table % 8 == 0;
    }
    if (valid) {
      // Lengths from a header not yet checked: the record must fit in the
      // file before any memory is taken for it.
      struct stat st;
      uint64_t size = 0;
      if (fstat(fd, &st) == 0) size = static_cast<uint64_t>(st.st_size);
      uint64_t room = size > pos.offset + kHeaderBytes
                          ? size - pos.offset - kHeaderBytes
                          : 0;
      valid =
          h.bodies <= room && uint64_t{h.batch} + h.table <= room - h.bodies;
    }
    if (valid) {
      size_t used = kHeaderBytes + h.bodies + h.batch + h.table;
      record.resize(used);
      valid = PreadAll(fd, record.data(), used, pos.offset) &&
              RecordValid(h, record);
    }
    if (!valid) {
      // The end of this segment's records. The next record may have gone
      // into the next segment; if it is not there either, this is the end.
      if (moved_on) break;
      pos = {pos.segment + 1, 0, pos.seq};
      moved_on = true;
      continue;
    }
    moved_on = false;
    if ((h.flags & kVoid) == 0) {
      absl::string_view batch(record.data() + kHeaderBytes + h.bodies, h.batch);
      if (absl::Status s = apply(batch); !s.ok()) return s;
      ++*records;
    }
    pos = {pos.segment,
           pos.offset + RoundUp(kHeaderBytes + h.bodies + h.batch + h.table),
           pos.seq + 1};
  }
  // New records start a new segment: never write after a torn record.
  if (write_fd_ >= 0) close(write_fd_);
  write_fd_ = -1;
  next_ = {NewSegmentId(), 0, pos.seq};
  return absl::OkStatus();
}

uint64_t Spool::NewSegmentId() {
  uint64_t segment = std::max(write_segment_, next_.segment) + 1;
  std::lock_guard<std::mutex> lock(mu_);
  if (!segments_.empty()) {
    segment = std::max(segment, segments_.rbegin()->first + 1);
  }
  return segment;
}

Spool::ReadFile::~ReadFile() { close(fd); }

std::shared_ptr<const Spool::ReadFile> Spool::ReadFd(uint64_t segment) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = read_fds_.find(segment);
  if (it != read_fds_.end()) return it->second;
  int fd = open(SegmentPath(segment).c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return nullptr;
  auto file = std::make_shared<const ReadFile>(fd);
  read_fds_[segment] = file;
  return file;
}

absl::StatusOr<std::string> Spool::ReadBody(const BodyRef& ref) {
  std::string path = SegmentPath(ref.segment);
  // Held while reading: a segment freed meanwhile closes on the last use.
  std::shared_ptr<const ReadFile> file = ReadFd(ref.segment);
  if (!file && errno == ENOENT) {
    return absl::DataLossError(
        absl::StrCat("spool segment ", path, " holding this body is missing"));
  }
  if (!file) return Errno("open", path);
  std::string body(ref.length, '\0');
  if (!PreadAll(file->fd, body.data(), body.size(), ref.offset)) {
    if (errno == 0) {
      return absl::DataLossError(absl::StrCat(
          "spool ", path, " ends before the body at offset ", ref.offset));
    }
    return Errno("read", path);
  }
  if (Crc(body.data(), body.size()) != ref.crc) {
    return absl::DataLossError(
        absl::StrCat("spool ", path, ": the body at offset ", ref.offset,
                     " fails its checksum (disk corruption?)"));
  }
  return body;
}

void Spool::Ref(uint64_t segment, uint32_t count, uint64_t bytes) {
  std::lock_guard<std::mutex> lock(mu_);
  SegmentUse& use = segments_[segment];
  use.bodies += count;
  use.bytes += bytes;
}

void Spool::Unref(uint64_t segment, uint32_t count, uint64_t bytes) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = segments_.find(segment);
  if (it == segments_.end() || it->second.bodies == 0) return;
  it->second.bodies -= std::min(it->second.bodies, count);
  it->second.bytes -= std::min(it->second.bytes, bytes);
  if (it->second.bodies == 0) FreeSegmentsLocked();
}

void Spool::SetRefs(absl::flat_hash_map<uint64_t, SegmentUse> refs) {
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& [segment, use] : segments_) use = {};
  for (const auto& [segment, use] : refs) {
    auto it = segments_.find(segment);
    if (it != segments_.end()) it->second = use;
  }
}

uint64_t Spool::SparseSegment(uint64_t after, absl::Time closed_before) const {
  std::lock_guard<std::mutex> lock(mu_);
  for (auto it = segments_.upper_bound(after); it != segments_.end(); ++it) {
    const auto& [segment, use] = *it;
    if (segment >= write_segment_) break;
    auto closed = closed_.find(segment);
    if (closed == closed_.end() || closed->second >= closed_before) continue;
    if (use.bodies > 0 && use.bytes * 4 <= options_.segment_bytes) {
      return segment;
    }
  }
  return 0;
}

uint64_t Spool::LiveBytes(uint64_t segment) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = segments_.find(segment);
  return it == segments_.end() ? 0 : it->second.bytes;
}

void Spool::Checkpointed(const SpoolPosition& pos) {
  std::lock_guard<std::mutex> lock(mu_);
  checkpoint_segment_ = pos.segment;
  FreeSegmentsLocked();
}

void Spool::FreeSegmentsLocked() {
  if (options_.read_only) return;
  for (auto it = segments_.begin();
       it != segments_.end() && it->first < checkpoint_segment_;) {
    if (it->second.bodies != 0 || it->first == write_segment_) {
      ++it;
      continue;
    }
    uint64_t segment = it->first;
    std::string path = SegmentPath(segment);
    read_fds_.erase(segment);
    bool kept = false;
    // A short segment (the last before a restart) saves little: deleted.
    struct stat st;
    if (static_cast<int>(spares_.size()) < options_.reserve &&
        stat(path.c_str(), &st) == 0 &&
        static_cast<uint64_t>(st.st_size) >= options_.segment_bytes / 2) {
      std::string spare =
          absl::StrFormat("%s/spare-%d.seg", options_.dir, next_spare_++);
      if (rename(path.c_str(), spare.c_str()) == 0) {
        spares_.push_back(spare);
        kept = true;
      }
    }
    if (!kept && unlink(path.c_str()) != 0 && errno != ENOENT) {
      log::Warn(kLog, "cannot delete spool segment %s: %s", path,
                strerror(errno));
    }
    closed_.erase(segment);
    it = segments_.erase(it);
  }
}

Spool::DiskUse Spool::Usage() const {
  DiskUse use;
  std::vector<std::string> paths;
  {
    std::lock_guard<std::mutex> lock(mu_);
    use.segments = segments_.size();
    use.spares = spares_.size();
    for (const auto& [segment, s] : segments_) {
      paths.push_back(SegmentPath(segment));
    }
    paths.insert(paths.end(), spares_.begin(), spares_.end());
  }
  for (const std::string& path : paths) {
    struct stat st;
    if (stat(path.c_str(), &st) == 0) use.bytes += st.st_size;
  }
  return use;
}

bool Spool::HasSegment(uint64_t segment) const {
  std::lock_guard<std::mutex> lock(mu_);
  return segments_.contains(segment);
}

size_t Spool::SegmentCount() const {
  std::lock_guard<std::mutex> lock(mu_);
  return segments_.size();
}

}  // namespace peregrine::queue
