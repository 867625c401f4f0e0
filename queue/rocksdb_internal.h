// Internal to the RocksDB store (queue/rocksdb_*.cc): the constants,
// keys and small conversions its files share.
#pragma once

#include <sys/statvfs.h>

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "rocksdb/slice.h"
#include "rocksdb/status.h"

namespace peregrine::queue::rocks_internal {

inline constexpr const char* kLog = "queue";
constexpr absl::Duration kSpaceCheckInterval = absl::Seconds(1);
constexpr uint32_t kMaxRecipients = 100000;
inline constexpr const char* kShardsKey = "shards";
// Where spool replay starts: everything before is in RocksDB, synced.
inline constexpr const char* kCheckpointKey = "spool_checkpoint";
inline constexpr const char* kTotalsKey = "totals";
// In the finished family, the envelope sorts after every recipient.
constexpr uint32_t kEnvelopeIndex = UINT32_MAX;
constexpr absl::Duration kFinishedSweepInterval = absl::Minutes(1);

inline std::string EncodeTotals(const uint64_t (&totals)[5]) {
  std::string out;
  for (uint64_t t : totals) absl::StrAppend(&out, t, " ");
  return out;
}

inline void DecodeTotals(absl::string_view text, uint64_t (&totals)[5]) {
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

inline absl::string_view Sv(const rocksdb::Slice& s) {
  return {s.data(), s.size()};
}

inline absl::Status FromRocks(const rocksdb::Status& s,
                              absl::string_view what) {
  if (s.ok()) return absl::OkStatus();
  std::string message = absl::StrCat("queue ", what, ": ", s.ToString());
  if (s.IsNoSpace()) {
    return absl::ResourceExhaustedError(message);
  }
  if (s.IsCorruption()) return absl::DataLossError(message);
  return absl::UnavailableError(message);
}

inline uint64_t StatvfsFree(const std::string& path) {
  struct statvfs st;
  if (statvfs(path.c_str(), &st) != 0) return UINT64_MAX;
  return static_cast<uint64_t>(st.f_bavail) * st.f_frsize;
}

}  // namespace peregrine::queue::rocks_internal
