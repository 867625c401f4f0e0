#include "queue/spool.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "gtest/gtest.h"
#include "queue/crc32c.h"

namespace peregrine::queue {
namespace {

std::string TempDir(const std::string& name) {
  static std::atomic<int> n{0};
  std::string path = absl::StrCat(getenv("TEST_TMPDIR"), "/", name, "-", n++);
  std::filesystem::remove_all(path);
  return path;
}

std::unique_ptr<Spool> OpenOrDie(const std::string& dir,
                                 uint64_t segment_bytes = 1 << 20) {
  Spool::Options o;
  o.dir = dir;
  o.segment_bytes = segment_bytes;
  auto spool = Spool::Open(o);
  EXPECT_TRUE(spool.ok()) << spool.status();
  return spool.ok() ? *std::move(spool) : nullptr;
}

// Writes one record with `bodies` and batch "batch-<n>"; returns where.
SpoolPosition WriteRecord(Spool& spool, int n,
                          const std::vector<std::string>& bodies = {},
                          std::vector<BodyRef>* refs = nullptr) {
  SpoolGroup group;
  std::vector<uint64_t> rel;
  for (const std::string& b : bodies) {
    rel.push_back(
        group.AddBody(b, rocksdb::crc32c::Extend(0, b.data(), b.size())));
  }
  std::string batch = absl::StrCat("batch-", n);
  auto at = spool.Place(group, batch.size());
  EXPECT_TRUE(at.ok()) << at.status();
  EXPECT_TRUE(spool.Write(*at, group, batch).ok());
  for (size_t i = 0; refs && i < bodies.size(); ++i) {
    refs->push_back({at->segment, at->offset + rel[i],
                     static_cast<uint32_t>(bodies[i].size()), 0});
  }
  return *at;
}

std::vector<std::string> Replayed(Spool& spool, const SpoolPosition& from) {
  std::vector<std::string> out;
  uint64_t records = 0;
  absl::Status s = spool.Replay(
      from,
      [&](absl::string_view batch) {
        out.emplace_back(batch);
        return absl::OkStatus();
      },
      &records);
  EXPECT_TRUE(s.ok()) << s;
  EXPECT_EQ(records, out.size());
  return out;
}

void FlipByte(const std::string& path, uint64_t offset) {
  int fd = open(path.c_str(), O_RDWR);
  ASSERT_GE(fd, 0);
  char c;
  ASSERT_EQ(pread(fd, &c, 1, offset), 1);
  c ^= 0x01;
  ASSERT_EQ(pwrite(fd, &c, 1, offset), 1);
  close(fd);
}

std::string SegmentPath(const std::string& dir, uint64_t segment) {
  return absl::StrFormat("%s/%016x.seg", dir, segment);
}

TEST(SpoolTest, ReplayGivesEveryRecordInOrderAcrossSegments) {
  std::string dir = TempDir("order");
  SpoolPosition start;
  {
    auto spool = OpenOrDie(dir, 16 << 10);  // Four 4 KiB records a segment.
    Replayed(*spool, {});                   // A new spool: nothing.
    start = spool->Next();
    for (int i = 0; i < 10; ++i) WriteRecord(*spool, i);
    EXPECT_GE(spool->SegmentCount(), 3u);
  }
  auto spool = OpenOrDie(dir, 16 << 10);
  auto got = Replayed(*spool, start);
  ASSERT_EQ(got.size(), 10u);
  for (int i = 0; i < 10; ++i) EXPECT_EQ(got[i], absl::StrCat("batch-", i));
}

TEST(SpoolTest, ReplayStopsAtATornRecord) {
  std::string dir = TempDir("torn");
  SpoolPosition start, third;
  {
    auto spool = OpenOrDie(dir);
    Replayed(*spool, {});
    start = spool->Next();
    WriteRecord(*spool, 0, {"body zero"});
    WriteRecord(*spool, 1, {"body one"});
    third = WriteRecord(*spool, 2, {"body two"});
  }
  // A write cut short: one bit of the last record's batch differs.
  FlipByte(SegmentPath(dir, third.segment), third.offset + 64 + 8 + 2);
  auto spool = OpenOrDie(dir);
  auto got = Replayed(*spool, start);
  EXPECT_EQ(got, (std::vector<std::string>{"batch-0", "batch-1"}));
  // New records go to a new segment, never after the torn one.
  SpoolPosition next = spool->Next();
  EXPECT_GT(next.segment, third.segment);
  EXPECT_EQ(next.offset, 0u);
}

TEST(SpoolTest, ReplayStopsAtARecordWhoseBodyIsTorn) {
  // Only the header, batch and table are under the header's CRC; a body
  // block that never reached the disk is caught by the table.
  std::string dir = TempDir("tornbody");
  SpoolPosition start, second;
  {
    auto spool = OpenOrDie(dir);
    Replayed(*spool, {});
    start = spool->Next();
    WriteRecord(*spool, 0, {"body zero"});
    second = WriteRecord(*spool, 1, {"first", std::string(10000, 'z')});
  }
  FlipByte(SegmentPath(dir, second.segment), second.offset + 64 + 5 + 6000);
  auto spool = OpenOrDie(dir);
  EXPECT_EQ(Replayed(*spool, start), (std::vector<std::string>{"batch-0"}));
}

TEST(SpoolTest, HeaderWithImpossibleLengthsEndsTheReplay) {
  // A torn header can keep its magic and place and carry garbage lengths:
  // replay must stop there without trying to read (or allocate) them.
  std::string dir = TempDir("lengths");
  SpoolPosition start, second;
  {
    auto spool = OpenOrDie(dir);
    Replayed(*spool, {});
    start = spool->Next();
    WriteRecord(*spool, 0, {"body zero"});
    second = WriteRecord(*spool, 1, {"body one"});
  }
  int fd = open(SegmentPath(dir, second.segment).c_str(), O_RDWR);
  ASSERT_GE(fd, 0);
  uint64_t huge = uint64_t{1} << 62;  // The bodies field, at byte 32.
  ASSERT_EQ(pwrite(fd, &huge, sizeof(huge), second.offset + 32), 8);
  close(fd);
  auto spool = OpenOrDie(dir);
  EXPECT_EQ(Replayed(*spool, start), (std::vector<std::string>{"batch-0"}));
}

TEST(SpoolTest, VoidedRecordIsSkippedAndTheRestReplayed) {
  std::string dir = TempDir("void");
  SpoolPosition start;
  {
    auto spool = OpenOrDie(dir);
    Replayed(*spool, {});
    start = spool->Next();
    WriteRecord(*spool, 0);
    SpoolGroup group;
    std::string batch = "batch-1";
    auto at = spool->Place(group, batch.size());
    ASSERT_TRUE(at.ok());
    ASSERT_TRUE(spool->Write(*at, group, batch).ok());
    ASSERT_TRUE(spool->Void(*at, group, batch).ok());
    WriteRecord(*spool, 2);
  }
  auto spool = OpenOrDie(dir);
  EXPECT_EQ(Replayed(*spool, start),
            (std::vector<std::string>{"batch-0", "batch-2"}));
}

TEST(SpoolTest, BodiesReadBackAndCorruptionIsDetected) {
  std::string dir = TempDir("bodies");
  auto spool = OpenOrDie(dir);
  Replayed(*spool, {});
  std::vector<BodyRef> refs;
  std::vector<std::string> bodies = {"first body", std::string(9000, 'b'),
                                     "third"};
  WriteRecord(*spool, 0, bodies, &refs);
  for (size_t i = 0; i < refs.size(); ++i) {
    refs[i].crc =
        rocksdb::crc32c::Extend(0, bodies[i].data(), bodies[i].size());
    auto body = spool->ReadBody(refs[i]);
    ASSERT_TRUE(body.ok()) << body.status();
    EXPECT_EQ(*body, bodies[i]);
  }
  FlipByte(SegmentPath(dir, refs[1].segment), refs[1].offset + 4000);
  auto bad = spool->ReadBody(refs[1]);
  EXPECT_TRUE(absl::IsDataLoss(bad.status())) << bad.status();
  EXPECT_TRUE(spool->ReadBody(refs[2]).ok());
  BodyRef beyond = refs[2];
  beyond.offset += 1 << 20;
  EXPECT_FALSE(spool->ReadBody(beyond).ok());
}

TEST(SpoolTest, RecycledSegmentsOldRecordsAreNeverReplayed) {
  std::string dir = TempDir("recycle");
  SpoolPosition second_start;
  {
    auto spool = OpenOrDie(dir, 16 << 10);
    Replayed(*spool, {});
    for (int i = 0; i < 4; ++i) WriteRecord(*spool, i);  // Segment 1, full.
    WriteRecord(*spool, 4);                              // Segment 2.
    // Segment 1 has no live bodies and lies before the checkpoint: it
    // becomes a spare, with its old records still inside.
    spool->Checkpointed(spool->Next());
    EXPECT_EQ(spool->SegmentCount(), 1u);
    for (int i = 5; i < 8; ++i) WriteRecord(*spool, i);  // Fills segment 2.
    second_start = spool->Next();
    WriteRecord(*spool, 100);  // Segment 3: the spare, renamed.
  }
  EXPECT_TRUE(std::filesystem::exists(SegmentPath(dir, 3)));
  auto spool = OpenOrDie(dir, 16 << 10);
  // Only the new record: the old ones name segment 1 in their headers.
  EXPECT_EQ(Replayed(*spool, second_start),
            (std::vector<std::string>{"batch-100"}));
}

TEST(SpoolTest, LiveSegmentsStayAndFreeOnesGo) {
  std::string dir = TempDir("refs");
  auto spool = OpenOrDie(dir, 16 << 10);
  Replayed(*spool, {});
  for (int i = 0; i < 12; ++i) WriteRecord(*spool, i);  // Segments 1..3.
  spool->Ref(1, 2, 4000);
  absl::Time later = absl::Now() + absl::Seconds(1);
  EXPECT_EQ(spool->SparseSegment(0, later), 1u);  // 4000 bytes of 16 KiB.
  EXPECT_EQ(spool->SparseSegment(1, later), 0u);
  // Not before it has been closed a while.
  EXPECT_EQ(spool->SparseSegment(0, absl::Now() - absl::Seconds(60)), 0u);
  spool->Checkpointed(spool->Next());
  EXPECT_TRUE(std::filesystem::exists(SegmentPath(dir, 1)));
  EXPECT_FALSE(std::filesystem::exists(SegmentPath(dir, 2)));
  spool->Unref(1, 1, 2000);
  EXPECT_TRUE(std::filesystem::exists(SegmentPath(dir, 1)));
  spool->Unref(1, 1, 2000);
  EXPECT_FALSE(std::filesystem::exists(SegmentPath(dir, 1)));
}

std::vector<std::string> SpareFiles(const std::string& dir) {
  std::vector<std::string> out;
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    std::string name = e.path().filename();
    if (name.rfind("spare-", 0) == 0) out.push_back(name);
  }
  std::sort(out.begin(), out.end());
  return out;
}

TEST(SpoolTest, ReserveIsPreparedZeroFilledAndRecordsGoIntoIt) {
  std::string dir = TempDir("reserve");
  constexpr uint64_t kSegment = 64 << 10;
  Spool::Options o;
  o.dir = dir;
  o.segment_bytes = kSegment;
  o.reserve = 2;
  SpoolPosition first;
  {
    auto spool = Spool::Open(o);
    ASSERT_TRUE(spool.ok()) << spool.status();
    Replayed(**spool, {});
    EXPECT_TRUE((*spool)->ReserveShort());
    // A part at a time: half a spare is not one yet.
    ASSERT_TRUE((*spool)->Prepare(kSegment / 2).ok());
    EXPECT_EQ(SpareFiles(dir), (std::vector<std::string>{"spare-0.seg.part"}));
    EXPECT_EQ((*spool)->Usage().spares, 0u);
    ASSERT_TRUE((*spool)->Prepare(kSegment).ok());
    ASSERT_TRUE((*spool)->Prepare(kSegment).ok());
    EXPECT_FALSE((*spool)->ReserveShort());
    EXPECT_EQ(SpareFiles(dir),
              (std::vector<std::string>{"spare-0.seg", "spare-1.seg"}));
    EXPECT_EQ((*spool)->Usage().bytes, 2 * kSegment);
    std::string zeros(kSegment, '\0');
    std::string content(kSegment, 'x');
    int fd = open((dir + "/spare-0.seg").c_str(), O_RDONLY);
    ASSERT_GE(fd, 0);
    EXPECT_EQ(pread(fd, content.data(), kSegment, 0),
              static_cast<ssize_t>(kSegment));
    close(fd);
    EXPECT_TRUE(content == zeros);

    // The first segment is a spare renamed; its size stays.
    std::vector<BodyRef> refs;
    first = WriteRecord(**spool, 1, {"a body"}, &refs);
    EXPECT_EQ((*spool)->Usage().spares, 1u);
    EXPECT_TRUE((*spool)->ReserveShort());
    EXPECT_EQ(std::filesystem::file_size(SegmentPath(dir, first.segment)),
              kSegment);
    WriteRecord(**spool, 2);
    refs[0].crc = rocksdb::crc32c::Extend(0, "a body", 6);
    auto body = (*spool)->ReadBody(refs[0]);
    ASSERT_TRUE(body.ok()) << body.status();
    EXPECT_EQ(*body, "a body");
  }
  // Replay stops at the zeros after the last record.
  auto spool = Spool::Open(o);
  ASSERT_TRUE(spool.ok()) << spool.status();
  EXPECT_EQ(Replayed(**spool, first),
            (std::vector<std::string>{"batch-1", "batch-2"}));
  EXPECT_EQ((*spool)->Usage().spares, 1u);
}

TEST(SpoolTest, HalfPreparedSpareIsDeletedAtOpen) {
  std::string dir = TempDir("part");
  std::filesystem::create_directories(dir);
  {
    int fd =
        open((dir + "/spare-3.seg.part").c_str(), O_CREAT | O_WRONLY, 0600);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(write(fd, "0000", 4), 4);
    close(fd);
  }
  auto spool = OpenOrDie(dir, 64 << 10);
  EXPECT_TRUE(SpareFiles(dir).empty());
  EXPECT_EQ(spool->Usage().spares, 0u);
}

TEST(SpoolTest, NoReserveWithoutSync) {
  Spool::Options o;
  o.dir = TempDir("nosync");
  o.sync = false;
  o.reserve = 4;
  auto spool = Spool::Open(o);
  ASSERT_TRUE(spool.ok()) << spool.status();
  EXPECT_FALSE((*spool)->ReserveShort());
}

TEST(SpoolTest, ShortFreedSegmentIsDeletedNotKept) {
  // The last segment before a restart holds a record or two: as a spare it
  // would save almost nothing.
  std::string dir = TempDir("short");
  SpoolPosition at;
  {
    auto spool = OpenOrDie(dir, 64 << 10);
    Replayed(*spool, {});
    at = WriteRecord(*spool, 1);
  }
  auto spool = OpenOrDie(dir, 64 << 10);
  Replayed(*spool, at);
  WriteRecord(*spool, 2);  // Into segment 2.
  spool->Checkpointed(spool->Next());
  EXPECT_FALSE(std::filesystem::exists(SegmentPath(dir, at.segment)));
  EXPECT_TRUE(SpareFiles(dir).empty());
}

TEST(SpoolTest, EncodingsRoundTripAndRejectGarbage) {
  BodyRef ref{7, 123456789012, 10240, 0xdeadbeef}, back;
  ASSERT_TRUE(DecodeBodyRef(EncodeBodyRef(ref), &back));
  EXPECT_EQ(back.segment, 7u);
  EXPECT_EQ(back.offset, 123456789012u);
  EXPECT_EQ(back.length, 10240u);
  EXPECT_EQ(back.crc, 0xdeadbeefu);
  EXPECT_FALSE(DecodeBodyRef("short", &back));
  EXPECT_FALSE(DecodeBodyRef(std::string(kBodyRefBytes, '\x09'), &back));
  SpoolPosition pos{3, 8192, 42}, p;
  ASSERT_TRUE(DecodeSpoolPosition(EncodeSpoolPosition(pos), &p));
  EXPECT_EQ(p.segment, 3u);
  EXPECT_EQ(p.offset, 8192u);
  EXPECT_EQ(p.seq, 42u);
  EXPECT_FALSE(DecodeSpoolPosition("x", &p));
}

}  // namespace
}  // namespace peregrine::queue
