// Operational log: human-readable lines on stderr with a level.
//
// Every component may log; lines are written whole with one write(2), so
// lines from different shards never interleave. The level is a process-wide
// atomic, changed at start and on SIGHUP. Event records for operators (one
// JSON object per delivery event) are a separate stream, not this one.
//
// A thread that runs an event loop (a shard's reactor) buffers its lines:
// BufferThisThread() makes Write() append to the thread's own buffer, and
// FlushThisThread() writes the buffer with one write(2); the reactor calls
// it at the end of every loop iteration, before it may sleep, so a line is
// out within that iteration, and a busy shard pays one system call for
// many lines rather than one each. A warning or an error, or a buffer past
// 64 KiB, is written at once (with what was buffered before it, in order).
// A crash of the thread loses at most its current iteration's info lines.
//
// Format: 2026-11-22T16:20:00.123Z info  shard: message
#pragma once

#include <string>

#include "absl/strings/str_format.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace peregrine::log {

enum class Level { kDebug = 0, kInfo = 1, kWarning = 2, kError = 3 };

void SetLevel(Level level);
Level GetLevel();
inline bool Enabled(Level level) { return level >= GetLevel(); }

// Parses "debug", "info", "warning" (or "warn"), "error".
bool ParseLevel(absl::string_view text, Level* level);
absl::string_view LevelName(Level level);

// "2026-11-22T16:20:00.123Z" (RFC 3339, UTC, milliseconds) appended to
// `out`: the lines' time, and the event log's. Cheap: the text of the
// second is formatted once per thread and second.
void AppendTime(absl::Time t, std::string* out);

// Writes one line. `component` names the part of Peregrine that speaks.
void Write(Level level, absl::string_view component, absl::string_view message);

// From now on the calling thread's lines are buffered (`on`) or written at
// once; turning it off writes what is buffered.
void BufferThisThread(bool on);
// Writes what the calling thread buffered, if anything. Cheap when empty.
void FlushThisThread();

template <typename... Args>
void Logf(Level level, absl::string_view component,
          const absl::FormatSpec<Args...>& format, const Args&... args) {
  if (!Enabled(level)) return;
  Write(level, component, absl::StrFormat(format, args...));
}

template <typename... Args>
void Debug(absl::string_view component, const absl::FormatSpec<Args...>& format,
           const Args&... args) {
  Logf(Level::kDebug, component, format, args...);
}
template <typename... Args>
void Info(absl::string_view component, const absl::FormatSpec<Args...>& format,
          const Args&... args) {
  Logf(Level::kInfo, component, format, args...);
}
template <typename... Args>
void Warn(absl::string_view component, const absl::FormatSpec<Args...>& format,
          const Args&... args) {
  Logf(Level::kWarning, component, format, args...);
}
template <typename... Args>
void Error(absl::string_view component, const absl::FormatSpec<Args...>& format,
           const Args&... args) {
  Logf(Level::kError, component, format, args...);
}

}  // namespace peregrine::log
