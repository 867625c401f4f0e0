#include "mta/outcome/event_log.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "base/log.h"
#include "mta/outcome/json_writer.h"

namespace peregrine::outcome {
namespace {

constexpr char kLog[] = "events";

bool IsDelivery(Kind k) {
  return k == Kind::kDelivered || k == Kind::kDeferred || k == Kind::kFailed ||
         k == Kind::kExpired || k == Kind::kBounce;
}

}  // namespace

std::string EventLog::ToJson(const Outcome& o) {
  std::string line;
  line.reserve(512 + o.reply.text.size());
  JsonWriter j(&line);
  j.BeginObject();
  std::string time;
  log::AppendTime(o.time, &time);
  j.Key("time").String(time);
  j.Key("type").String(KindName(o.kind));
  j.Key("id");
  if (o.id == 0) {
    j.Null();
  } else {
    j.String(queue::FormatMessageId(o.id));
  }
  // "" is the null sender <>; unknown (refused before MAIL) is null.
  j.Key("sender");
  if (o.kind == Kind::kRejected && o.sender.empty()) {
    j.Null();
  } else {
    j.String(o.sender);
  }
  j.Key("recipient").StringOrNull(o.recipient);
  j.Key("recipients");
  if (o.kind == Kind::kReceived) {
    j.BeginArray();
    for (const std::string& r : o.recipients) j.String(r);
    j.EndArray();
  } else {
    j.Null();
  }
  j.Key("site").StringOrNull(o.site);
  j.Key("mx").StringOrNull(o.mx);
  j.Key("ip").StringOrNull(o.ip);
  j.Key("source").StringOrNull(o.source);
  j.Key("tls");
  if (o.tls) {
    j.BeginObject()
        .Key("version")
        .String(o.tls->version)
        .Key("cipher")
        .String(o.tls->cipher)
        .Key("verified")
        .Bool(o.tls->verified)
        .EndObject();
  } else {
    j.Null();
  }
  j.Key("tls_policy").StringOrNull(o.tls_policy);
  j.Key("tls_failure").StringOrNull(o.tls_failure);
  j.Key("code").IntOrNull(o.reply.code);
  j.Key("enhanced").StringOrNull(o.reply.enhanced);
  j.Key("reply").StringOrNull(o.reply.text);
  j.Key("reason").StringOrNull(o.reason);
  j.Key("category");
  if (o.category) {
    j.String(bounce::CategoryName(*o.category));
  } else {
    j.Null();
  }
  j.Key("attempt").IntOrNull(o.attempt);
  j.Key("next_attempt");
  if (o.kind == Kind::kDeferred && o.next_attempt != absl::InfinitePast()) {
    std::string next;
    log::AppendTime(o.next_attempt, &next);
    j.String(next);
  } else {
    j.Null();
  }
  j.Key("queue_time_ms");
  if (IsDelivery(o.kind)) {
    j.Int(absl::ToInt64Milliseconds(o.queue_time));
  } else {
    j.Null();
  }
  j.Key("size").IntOrNull(static_cast<int64_t>(o.size));
  j.Key("tags").BeginObject();
  if (!o.tenant.empty()) j.Key("tenant").String(o.tenant);
  if (!o.campaign.empty()) j.Key("campaign").String(o.campaign);
  j.EndObject();
  j.Key("client").StringOrNull(o.client);
  j.Key("helo").StringOrNull(o.helo);
  j.Key("auth_user").StringOrNull(o.auth_user);
  j.Key("listener").StringOrNull(o.listener);
  j.EndObject();
  return line;
}

EventLog::EventLog(EventLogOptions options) : options_(std::move(options)) {
  for (int i = 0; i <= std::max(options_.shards, 1); ++i) {
    buffers_.push_back(std::make_unique<Buffer>());
  }
}

absl::StatusOr<std::unique_ptr<EventLog>> EventLog::Open(
    EventLogOptions options) {
  std::unique_ptr<EventLog> log(new EventLog(std::move(options)));
  if (!log->options_.to_stdout) {
    absl::Status s = log->OpenFile();
    if (!s.ok()) return s;
  }
  log->writer_ = std::thread([raw = log.get()] { raw->Run(); });
  return log;
}

EventLog::~EventLog() {
  {
    absl::MutexLock l(&mu_);
    stop_ = true;
  }
  if (writer_.joinable()) writer_.join();
  if (fd_ >= 0) ::close(fd_);
}

absl::Status EventLog::OpenFile() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = ::open(options_.path.c_str(), O_RDWR | O_APPEND | O_CREAT | O_CLOEXEC,
               0640);
  if (fd_ < 0) {
    return absl::UnavailableError(absl::StrCat(
        "events.path: cannot open ", options_.path, ": ", strerror(errno),
        "; create its folder and let the user peregrine runs as "
        "write there, or set events.stdout = true"));
  }
  struct stat st;
  size_ = ::fstat(fd_, &st) == 0 ? static_cast<uint64_t>(st.st_size) : 0;
  CutTornLine();
  return absl::OkStatus();
}

void EventLog::CutTornLine() {
  // A crash (kill -9, power loss) in the middle of a write leaves the last
  // line without its end: cut it, so that every line stays one JSON object
  // and what comes next does not glue onto it. At most 1 MiB is searched.
  if (size_ == 0) return;
  char last = 0;
  if (::pread(fd_, &last, 1, static_cast<off_t>(size_ - 1)) != 1 ||
      last == '\n') {
    return;
  }
  constexpr uint64_t kChunk = 64 << 10;
  uint64_t end = size_;
  uint64_t keep = 0;
  std::string chunk;
  while (end > 0 && size_ - end < (1 << 20)) {
    uint64_t start = end > kChunk ? end - kChunk : 0;
    chunk.resize(end - start);
    if (::pread(fd_, chunk.data(), chunk.size(), static_cast<off_t>(start)) !=
        static_cast<ssize_t>(chunk.size())) {
      return;
    }
    size_t nl = chunk.rfind('\n');
    if (nl != std::string::npos) {
      keep = start + nl + 1;
      break;
    }
    end = start;
  }
  if (::ftruncate(fd_, static_cast<off_t>(keep)) != 0) return;
  log::Warn("events", "%s: cut a torn last line (%d bytes) left by a crash",
            options_.path, size_ - keep);
  size_ = keep;
}

void EventLog::OnOutcome(const Outcome& outcome) {
  // Held by a suspended site, not attempted: parked again every minute, so
  // a line each would flood the log; the human log counts them per site.
  if (outcome.kind == Kind::kDeferred && !outcome.attempted) return;
  std::string line = ToJson(outcome);
  line += '\n';
  size_t index = outcome.shard >= 0 && outcome.shard < options_.shards
                     ? static_cast<size_t>(outcome.shard)
                     : buffers_.size() - 1;
  Buffer& b = *buffers_[index];
  bool wake = false;
  {
    absl::MutexLock l(&b.mu);
    if (b.lines.size() + line.size() > kMaxBuffered) {
      dropped_.fetch_add(1);
      behind_.fetch_add(1);
      return;
    }
    size_t before = b.lines.size();
    b.lines += line;
    ++b.count;
    wake = before < kWakeAt && b.lines.size() >= kWakeAt;
  }
  if (wake) {
    absl::MutexLock l(&mu_);
    wake_ = true;
  }
}

void EventLog::Reopen() {
  absl::MutexLock l(&mu_);
  reopen_ = true;
}

void EventLog::Flush() {
  absl::MutexLock l(&mu_);
  uint64_t want = ++flush_asked_;
  auto done = [this, want]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return flush_done_ >= want;
  };
  mu_.Await(absl::Condition(&done));
}

void EventLog::Run() {
  for (;;) {
    bool stop;
    bool reopen;
    uint64_t flush_target;
    {
      absl::MutexLock l(&mu_);
      auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return wake_ || stop_ || reopen_ || flush_asked_ > flush_done_;
      };
      mu_.AwaitWithTimeout(absl::Condition(&ready), options_.flush_every);
      wake_ = false;
      stop = stop_;
      reopen = reopen_;
      reopen_ = false;
      flush_target = flush_asked_;
    }
    if (reopen && !options_.to_stdout) {
      absl::Status s = OpenFile();
      if (!s.ok()) last_error_ = std::string(s.message());
    }
    std::string batch;
    uint64_t lines = 0;
    for (auto& b : buffers_) {
      absl::MutexLock l(&b->mu);
      if (b->lines.empty()) continue;
      if (batch.empty()) {
        batch.swap(b->lines);
      } else {
        batch += b->lines;
        b->lines.clear();
      }
      lines += b->count;
      b->count = 0;
    }
    if (!batch.empty()) WriteBatch(batch, lines);
    if (uint64_t n = behind_.exchange(0); n > 0) {
      NoteDropped(n, "events came faster than they could be written");
    }
    absl::Time now = absl::Now();
    if (dropped_unreported_ > 0 && now - last_warning_ >= absl::Minutes(1)) {
      log::Warn(kLog,
                "%d events dropped (%s); mail is delivered as usual, the "
                "event log misses them",
                dropped_unreported_, last_error_);
      dropped_unreported_ = 0;
      last_warning_ = now;
    }
    {
      absl::MutexLock l(&mu_);
      flush_done_ = flush_target;
    }
    if (stop) return;
  }
}

void EventLog::NoteDropped(uint64_t lines, const std::string& why) {
  dropped_unreported_ += lines;
  last_error_ = why;
}

void EventLog::WriteBatch(const std::string& batch, uint64_t lines) {
  int fd = options_.to_stdout ? STDOUT_FILENO : fd_;
  if (fd < 0) {
    absl::Status s = OpenFile();
    if (!s.ok()) {
      dropped_.fetch_add(lines);
      return NoteDropped(lines, std::string(s.message()));
    }
    fd = fd_;
  }
  if (!options_.to_stdout) {
    struct stat st;
    if (::fstat(fd, &st) == 0) size_ = static_cast<uint64_t>(st.st_size);
    if (options_.max_size > 0 && size_ > 0 &&
        size_ + batch.size() > options_.max_size) {
      Rotate();
      fd = fd_;
      if (fd < 0) {
        dropped_.fetch_add(lines);
        return NoteDropped(lines, last_error_);
      }
    }
  }
  size_t done = 0;
  std::string error;
  while (done < batch.size()) {
    ssize_t n = ::write(fd, batch.data() + done, batch.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      error = n < 0 ? strerror(errno) : "nothing written";
      break;
    }
    done += static_cast<size_t>(n);
  }
  if (done == batch.size()) {
    size_ += done;
    written_.fetch_add(lines);
    return;
  }
  // Keep the whole lines written; cut a torn one so every line parses.
  size_t whole = batch.rfind('\n', done == 0 ? 0 : done - 1);
  size_t keep = (whole == std::string::npos || done == 0) ? 0 : whole + 1;
  if (!options_.to_stdout && keep < done) {
    if (::ftruncate(fd, static_cast<off_t>(size_ + keep)) != 0) {
      error += "; and the torn last line could not be cut";
    }
  }
  size_ += keep;
  uint64_t kept_lines = 0;
  for (size_t i = 0; i < keep; ++i) kept_lines += batch[i] == '\n';
  written_.fetch_add(kept_lines);
  dropped_.fetch_add(lines - kept_lines);
  NoteDropped(
      lines - kept_lines,
      absl::StrCat("writing ", options_.to_stdout ? "stdout" : options_.path,
                   ": ", error));
}

void EventLog::Rotate() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
  const std::string& p = options_.path;
  if (options_.keep <= 0) {
    ::unlink(p.c_str());
  } else {
    for (int i = options_.keep - 1; i >= 1; --i) {
      ::rename(absl::StrCat(p, ".", i).c_str(),
               absl::StrCat(p, ".", i + 1).c_str());
    }
    ::rename(p.c_str(), absl::StrCat(p, ".1").c_str());
  }
  absl::Status s = OpenFile();
  if (!s.ok()) last_error_ = std::string(s.message());
}

}  // namespace peregrine::outcome
