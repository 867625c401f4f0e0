#include "base/log.h"

#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <string>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace peregrine::log {
namespace {

std::atomic<int> g_level{static_cast<int>(Level::kInfo)};

constexpr size_t kFlushAt = 64 << 10;

void WriteAll(absl::string_view bytes) {
  const char* p = bytes.data();
  size_t left = bytes.size();
  while (left > 0) {
    ssize_t n = ::write(STDERR_FILENO, p, left);
    if (n <= 0) break;
    p += n;
    left -= static_cast<size_t>(n);
  }
}

// One per thread: its buffer, when it buffers.
struct ThreadState {
  bool buffering = false;
  std::string lines;
  ~ThreadState() {
    if (!lines.empty()) WriteAll(lines);
  }
};

ThreadState& State() {
  thread_local ThreadState state;
  return state;
}

}  // namespace

void AppendTime(absl::Time t, std::string* out) {
  // The text of the second is formatted once per thread and second.
  thread_local int64_t cached_second = INT64_MIN;
  thread_local std::string cached_text;
  int64_t millis = absl::ToUnixMillis(t);
  int64_t second = millis >= 0 ? millis / 1000 : (millis - 999) / 1000;
  if (second != cached_second) {
    cached_second = second;
    cached_text =
        absl::FormatTime("%Y-%m-%dT%H:%M:%S", absl::FromUnixSeconds(second),
                         absl::UTCTimeZone());
  }
  int ms = static_cast<int>(millis - second * 1000);
  char tail[5] = {'.', static_cast<char>('0' + ms / 100),
                  static_cast<char>('0' + ms / 10 % 10),
                  static_cast<char>('0' + ms % 10), 'Z'};
  out->append(cached_text);
  out->append(tail, sizeof(tail));
}

void SetLevel(Level level) {
  g_level.store(static_cast<int>(level), std::memory_order_relaxed);
}

Level GetLevel() {
  return static_cast<Level>(g_level.load(std::memory_order_relaxed));
}

bool ParseLevel(absl::string_view text, Level* level) {
  std::string lower = absl::AsciiStrToLower(text);
  if (lower == "debug") {
    *level = Level::kDebug;
  } else if (lower == "info") {
    *level = Level::kInfo;
  } else if (lower == "warning" || lower == "warn") {
    *level = Level::kWarning;
  } else if (lower == "error") {
    *level = Level::kError;
  } else {
    return false;
  }
  return true;
}

absl::string_view LevelName(Level level) {
  switch (level) {
    case Level::kDebug:
      return "debug";
    case Level::kInfo:
      return "info";
    case Level::kWarning:
      return "warning";
    case Level::kError:
      return "error";
  }
  return "?";
}

void Write(Level level, absl::string_view component,
           absl::string_view message) {
  ThreadState& state = State();
  std::string local;
  std::string& out = state.buffering ? state.lines : local;
  AppendTime(absl::Now(), &out);
  out.push_back(' ');
  absl::string_view name = LevelName(level);
  absl::StrAppend(&out, name);
  out.append(name.size() < 7 ? 8 - name.size() : 1, ' ');
  absl::StrAppend(&out, component, component.empty() ? "" : ": ", message,
                  "\n");
  // One write per batch of whole lines keeps them whole when several
  // shards log at once.
  if (!state.buffering) return WriteAll(local);
  if (level >= Level::kWarning || state.lines.size() >= kFlushAt) {
    FlushThisThread();
  }
}

void BufferThisThread(bool on) {
  ThreadState& state = State();
  if (!on) FlushThisThread();
  state.buffering = on;
}

void FlushThisThread() {
  ThreadState& state = State();
  if (state.lines.empty()) return;
  WriteAll(state.lines);
  state.lines.clear();
  if (state.lines.capacity() > 4 * kFlushAt) state.lines.shrink_to_fit();
}

}  // namespace peregrine::log
