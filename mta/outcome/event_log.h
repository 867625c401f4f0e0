// EventLog: the JSON event log, one object per line per outcome.
//
// Every record has the same fields, null where one does not apply:
//   time (RFC 3339 UTC, milliseconds), type, id, sender, recipient,
//   recipients, site, mx, ip, source, tls {version, cipher, verified},
//   tls_policy, tls_failure, code, enhanced, reply, reason, category,
//   attempt, next_attempt, queue_time_ms, size, tags {tenant, campaign},
//   client, helo, auth_user, listener.
// Lines are built with nlohmann-json (strings that are not UTF-8 get U+FFFD
// for the bad bytes, so every line parses).
//
// Off the shards' hot path: OnOutcome() formats the line and appends it to
// its shard's buffer (a mutex only the writer thread also takes, once per
// batch); the writer thread takes every buffer each 100 ms (or sooner when
// one passes 256 KiB) and writes them with one write() each. A buffer that
// reaches kMaxBuffered while the writer is stuck drops new events.
//
// Where: a file, appended to, rotated when it passes max_size (FILE ->
// FILE.1 -> ... -> FILE.keep, the oldest removed), or stdout for
// containers. Reopen() (SIGHUP) reopens the file, for logrotate. When a
// write fails (a full disk, an I/O error) that batch is dropped and counted,
// the file is cut back to its last whole line, a warning says so at most
// once a minute, and the next batch tries again. Mail is never held back.
//
// Lifetime: made before the shards start, destroyed after they stopped;
// the destructor writes what is buffered and joins the writer.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "mta/outcome/outcome.h"

namespace peregrine::outcome {

struct EventLogOptions {
  std::string path;  // The file; ignored with `to_stdout`.
  bool to_stdout = false;
  uint64_t max_size = 100ull << 20;  // Rotate past this; 0: never.
  int keep = 10;                     // Rotated files kept.
  int shards = 1;                    // One buffer each (and one for others).
  absl::Duration flush_every = absl::Milliseconds(100);
};

class EventLog : public Consumer {
 public:
  // Opens (creates) the file; an error names the path and the reason.
  static absl::StatusOr<std::unique_ptr<EventLog>> Open(
      EventLogOptions options);
  ~EventLog() override;
  EventLog(const EventLog&) = delete;
  EventLog& operator=(const EventLog&) = delete;

  void OnOutcome(const Outcome& outcome) override;
  // The file is reopened by the writer before its next batch (any thread).
  void Reopen();
  // Blocks until everything published before the call is written (or
  // dropped). For tests and the end of a drain.
  void Flush();

  uint64_t written() const { return written_.load(); }
  uint64_t dropped() const { return dropped_.load(); }

  // One record, without the newline.
  static std::string ToJson(const Outcome& outcome);

  static constexpr size_t kMaxBuffered = 8u << 20;
  static constexpr size_t kWakeAt = 256u << 10;

 private:
  explicit EventLog(EventLogOptions options);
  absl::Status OpenFile();
  // Cuts a last line without its end (a crash mid-write).
  void CutTornLine();
  void Run();
  // Writes one batch of `lines` lines; what cannot be written is dropped
  // and counted.
  void WriteBatch(const std::string& batch, uint64_t lines);
  void Rotate();
  void NoteDropped(uint64_t lines, const std::string& why);

  struct Buffer {
    absl::Mutex mu;
    std::string lines ABSL_GUARDED_BY(mu);
    uint64_t count ABSL_GUARDED_BY(mu) = 0;
  };

  const EventLogOptions options_;
  std::vector<std::unique_ptr<Buffer>> buffers_;  // shards + 1.

  absl::Mutex mu_;  // The writer's wake-ups and flush handshakes.
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  bool wake_ ABSL_GUARDED_BY(mu_) = false;
  bool reopen_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t flush_asked_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t flush_done_ ABSL_GUARDED_BY(mu_) = 0;

  // The writer thread's own.
  int fd_ = -1;
  uint64_t size_ = 0;  // Of the file, to its last whole line.
  uint64_t dropped_unreported_ = 0;
  std::string last_error_;
  absl::Time last_warning_ = absl::InfinitePast();

  std::atomic<uint64_t> written_{0};
  std::atomic<uint64_t> dropped_{0};
  std::atomic<uint64_t> behind_{0};  // Dropped by OnOutcome: buffer full.
  std::thread writer_;
};

}  // namespace peregrine::outcome
