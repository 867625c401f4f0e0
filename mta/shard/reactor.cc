#include "mta/shard/reactor.h"

#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <functional>
#include <vector>

#include "absl/time/clock.h"
#include "base/log.h"

namespace peregrine::shard {
namespace {
thread_local Reactor* tls_current = nullptr;
}  // namespace

Reactor::Reactor(int id, std::unique_ptr<IoBackend> io,
                 absl::Duration idle_spin, Clock clock)
    : id_(id),
      io_(std::move(io)),
      idle_spin_(idle_spin),
      clock_(clock),
      now_(clock()) {
  wake_fd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
}

Reactor::~Reactor() {
  // The backend may hold an operation on wake_fd_; drop it first.
  io_.reset();
  if (wake_fd_ >= 0) ::close(wake_fd_);
}

Reactor* Reactor::Current() { return tls_current; }

Reactor::TimerId Reactor::AddTimer(absl::Duration delay,
                                   absl::AnyInvocable<void()> fn) {
  return AddTimerAt(now_ + delay, std::move(fn));
}

Reactor::TimerId Reactor::AddTimerAt(absl::Time when,
                                     absl::AnyInvocable<void()> fn) {
  TimerId id = next_timer_id_++;
  timers_.emplace(id, std::move(fn));
  timer_heap_.push_back({when, id});
  std::push_heap(timer_heap_.begin(), timer_heap_.end(),
                 std::greater<TimerEntry>());
  return id;
}

bool Reactor::CancelTimer(TimerId id) {
  // The heap entry stays and is skipped when it comes up, unless the
  // cancelled entries are most of the heap; sweeping then costs one pass
  // per at least as many cancellations as the heap has live entries.
  if (timers_.erase(id) == 0) return false;
  if (timer_heap_.size() > 1024 + 2 * timers_.size()) SweepCancelledTimers();
  return true;
}

void Reactor::SweepCancelledTimers() {
  std::erase_if(timer_heap_, [this](const TimerEntry& e) {
    return !timers_.contains(e.id);
  });
  std::make_heap(timer_heap_.begin(), timer_heap_.end(),
                 std::greater<TimerEntry>());
  if (timer_heap_.capacity() > 2 * timer_heap_.size() + 1024) {
    timer_heap_.shrink_to_fit();
  }
}

void Reactor::PopTimer() {
  std::pop_heap(timer_heap_.begin(), timer_heap_.end(),
                std::greater<TimerEntry>());
  timer_heap_.pop_back();
}

void Reactor::Defer(absl::AnyInvocable<void()> fn) {
  deferred_.push_back(std::move(fn));
}

void Reactor::AddPoller(Poller* poller) { pollers_.push_back(poller); }

void Reactor::Post(absl::AnyInvocable<void()> fn) {
  {
    absl::MutexLock lock(&post_mu_);
    posted_.push_back(std::move(fn));
    has_posted_.store(true, std::memory_order_relaxed);
  }
  std::atomic_thread_fence(std::memory_order_seq_cst);
  Wake();
}

void Reactor::Stop() {
  stop_.store(true, std::memory_order_seq_cst);
  if (wake_fd_ >= 0) {
    uint64_t one = 1;
    (void)!::write(wake_fd_, &one, sizeof(one));
  }
}

void Reactor::Wake() {
  // The eventfd stays readable until the reactor reads it: one write is
  // enough for every producer until the reactor sleeps again.
  if (sleeping_.load(std::memory_order_seq_cst) &&
      sleeping_.exchange(false, std::memory_order_seq_cst)) {
    uint64_t one = 1;
    (void)!::write(wake_fd_, &one, sizeof(one));
  }
}

void Reactor::ArmWakeFd() {
  io_->PollIn(wake_fd_, [this](int result) {
    if (result == -ECANCELED) return;
    while (::read(wake_fd_, &wake_buf_, sizeof(wake_buf_)) > 0) {
    }
    if (!stopping()) ArmWakeFd();
  });
}

int Reactor::RunTimers() {
  int ran = 0;
  while (!timer_heap_.empty() && timer_heap_.front().when <= now_) {
    TimerId id = timer_heap_.front().id;
    PopTimer();
    auto it = timers_.find(id);
    if (it == timers_.end()) continue;  // Cancelled.
    absl::AnyInvocable<void()> fn = std::move(it->second);
    timers_.erase(it);
    fn();
    ++ran;
  }
  return ran;
}

int Reactor::RunDeferred() {
  if (deferred_.empty()) return 0;
  running_.clear();
  running_.swap(deferred_);
  for (auto& fn : running_) fn();
  return static_cast<int>(running_.size());
}

int Reactor::RunPosted() {
  if (!has_posted_.load(std::memory_order_acquire)) return 0;
  std::vector<absl::AnyInvocable<void()>> batch;
  {
    absl::MutexLock lock(&post_mu_);
    batch.swap(posted_);
    has_posted_.store(false, std::memory_order_relaxed);
  }
  for (auto& fn : batch) fn();
  return static_cast<int>(batch.size());
}

absl::Duration Reactor::SleepBudget() {
  if (!deferred_.empty() || has_posted_.load(std::memory_order_seq_cst) ||
      stopping()) {
    return absl::ZeroDuration();
  }
  absl::Duration budget = absl::InfiniteDuration();
  for (Poller* p : pollers_) budget = std::min(budget, p->SleepBudget());
  // Skip cancelled timers at the top so they do not cut sleeps short.
  while (!timer_heap_.empty() && !timers_.contains(timer_heap_.front().id)) {
    PopTimer();
  }
  if (!timer_heap_.empty()) {
    budget = std::min(budget, timer_heap_.front().when - clock_());
  }
  return std::max(budget, absl::ZeroDuration());
}

int Reactor::RunOnce() {
  Reactor* previous = tls_current;
  tls_current = this;
  now_ = clock_();
  int work = RunTimers();
  work += RunPosted();
  work += RunDeferred();
  for (Poller* p : pollers_) work += p->Poll();
  work += io_->Poll(absl::ZeroDuration(), [this] { now_ = clock_(); });
  tls_current = previous;
  return work;
}

void Reactor::Run() {
  tls_current = this;
  log::BufferThisThread(true);
  ArmWakeFd();
  absl::Time last_work = clock_();
  // When the previous iteration began doing work (after its sleep, if it
  // slept); InfinitePast: it found none.
  absl::Time busy_from = absl::InfinitePast();
  while (!stopping()) {
    now_ = clock_();
    if (busy_from != absl::InfinitePast()) {
      busy_ns_.store(busy_ns_.load(std::memory_order_relaxed) +
                         absl::ToInt64Nanoseconds(now_ - busy_from),
                     std::memory_order_relaxed);
    }
    const absl::Time began = now_;
    int work = RunTimers();
    work += RunPosted();
    work += RunDeferred();
    for (Poller* p : pollers_) work += p->Poll();
    absl::Duration wait = absl::ZeroDuration();
    if (work > 0) {
      last_work = now_;
    } else if (now_ - last_work >= idle_spin_) {
      sleeping_.store(true, std::memory_order_seq_cst);
      wait = SleepBudget();
    }
    // After a sleep the clock moves on before the completions run: a
    // timer armed by them (a new connection's command timeout) counts from
    // now, not from when the sleep began.
    auto woke = [this, wait] {
      if (wait > absl::ZeroDuration()) now_ = clock_();
    };
    // This iteration's log lines, in one write, before a sleep.
    log::FlushThisThread();
    int completed = io_->Poll(wait, woke);
    if (completed > 0) last_work = now_;
    sleeping_.store(false, std::memory_order_relaxed);
    // After a sleep now_ is the time it woke (woke()).
    busy_from = work > 0 || completed > 0
                    ? (wait > absl::ZeroDuration() ? now_ : began)
                    : absl::InfinitePast();
  }
  log::BufferThisThread(false);
  tls_current = nullptr;
}

}  // namespace peregrine::shard
