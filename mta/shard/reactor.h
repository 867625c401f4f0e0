// Reactor: the event loop of one shard.
//
// Lives on exactly one thread (its shard's) from Run() until it returns;
// everything but Post(), Stop() and Wake() must be called on that thread.
// One loop iteration: run due timers, run deferred callbacks, run every
// poller (cross-shard queues are one), then hand queued I/O to the backend
// and collect completions. When an iteration found no work the reactor
// sleeps in the backend until an I/O completion, the next timer, or a
// Wake() from another thread (an eventfd, so both backends can wait on it).
// The thread's log lines are buffered while Run() runs and written once per
// iteration (base/log.h).
//
// Sleep protocol (no lost wake-ups): the reactor stores sleeping_ = true
// (seq_cst) and then asks each poller whether work arrived; a producer
// publishes its item, issues a seq_cst fence and then reads sleeping_. One
// of the two always sees the other. The producer that finds it true also
// clears it, so only one of many writes the eventfd (a committer finishing
// a group posts dozens of completions to a sleeping shard).
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/functional/any_invocable.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "mta/shard/io_backend.h"

namespace peregrine::shard {

// Work the reactor checks on every iteration (a cross-shard inbox, a queue
// of completions from another thread, ...).
class Poller {
 public:
  virtual ~Poller() = default;
  // Does what is pending; returns how many items it handled.
  virtual int Poll() = 0;
  // Called after the reactor said it will sleep: how long it may sleep as
  // far as this poller knows (zero: work is waiting).
  virtual absl::Duration SleepBudget() = 0;
};

class Reactor {
 public:
  using TimerId = uint64_t;

  // After its last piece of work a reactor keeps polling for `idle_spin`
  // before it sleeps: a burst of cross-shard traffic then costs no wake-up
  // syscalls, and an idle shard still sleeps (zero disables spinning).
  static constexpr absl::Duration kDefaultIdleSpin = absl::Microseconds(50);

  // Where the loop reads the time: absl::Now, or a fake one in tests and
  // fuzz targets (a plain function pointer: no cost on the hot path).
  using Clock = absl::Time (*)();

  Reactor(int id, std::unique_ptr<IoBackend> io,
          absl::Duration idle_spin = kDefaultIdleSpin,
          Clock clock = &absl::Now);
  ~Reactor();
  Reactor(const Reactor&) = delete;
  Reactor& operator=(const Reactor&) = delete;

  // The reactor whose Run() is on the calling thread, or nullptr.
  static Reactor* Current();

  int id() const { return id_; }
  IoBackend& io() { return *io_; }
  // The time at the start of this loop iteration.
  absl::Time Now() const { return now_; }

  // Runs `fn` once, `delay` from now. Cancel before it ran: CancelTimer.
  TimerId AddTimer(absl::Duration delay, absl::AnyInvocable<void()> fn);
  TimerId AddTimerAt(absl::Time when, absl::AnyInvocable<void()> fn);
  // True if the timer was pending (and now never runs).
  bool CancelTimer(TimerId id);
  size_t PendingTimers() const { return timers_.size(); }
  // Entries in the timer heap, cancelled ones included. A cancelled entry
  // stays until it comes up or until cancelled ones are more than half of
  // the heap, when they are swept: a connection that rearms its idle timer
  // on every command must not grow the heap by one entry per command for
  // the length of the timeout.
  size_t TimerHeapEntries() const { return timer_heap_.size(); }

  // Runs `fn` on the next iteration, on this thread.
  void Defer(absl::AnyInvocable<void()> fn);
  // Adds work to check on every iteration; not owned, must outlive Run().
  void AddPoller(Poller* poller);

  // Thread-safe: runs `fn` on this reactor's thread soon. For threads that
  // are not shards (the queue committer, the main thread); shards talk to
  // each other through ShardGroup::SubmitTo, which takes no lock.
  void Post(absl::AnyInvocable<void()> fn);

  // Runs the loop on the calling thread until Stop().
  void Run();
  // One iteration of the loop, never sleeping, on the calling thread: a
  // test or fuzz target drives the reactor step by step with it (with a
  // fake clock and backend). Returns how much work it found.
  int RunOnce();
  // Thread-safe: Run() returns after the current iteration.
  void Stop();
  // Thread-safe: if the reactor sleeps, wakes it. Cheap when it does not.
  void Wake();
  bool stopping() const { return stop_.load(std::memory_order_relaxed); }
  // Time Run() spent in iterations that found work (any thread): its rate
  // is the loop's utilisation. Spinning and sleeping while idle do not
  // count. From the clock reads the loop makes anyway: no extra cost.
  absl::Duration busy() const {
    return absl::Nanoseconds(busy_ns_.load(std::memory_order_relaxed));
  }

 private:
  struct TimerEntry {
    absl::Time when;
    TimerId id;
    bool operator>(const TimerEntry& other) const {
      return when > other.when || (when == other.when && id > other.id);
    }
  };

  int RunTimers();
  int RunDeferred();
  int RunPosted();
  absl::Duration SleepBudget();
  void ArmWakeFd();

  const int id_;
  std::unique_ptr<IoBackend> io_;
  const absl::Duration idle_spin_;
  const Clock clock_;
  absl::Time now_;
  std::atomic<int64_t> busy_ns_{0};  // Written by the loop's thread alone.

  void SweepCancelledTimers();
  void PopTimer();

  // A min-heap on `when` (std::push_heap with std::greater).
  std::vector<TimerEntry> timer_heap_;
  absl::flat_hash_map<TimerId, absl::AnyInvocable<void()>> timers_;
  TimerId next_timer_id_ = 1;

  std::vector<absl::AnyInvocable<void()>> deferred_;
  std::vector<absl::AnyInvocable<void()>> running_;
  std::vector<Poller*> pollers_;

  absl::Mutex post_mu_;
  std::vector<absl::AnyInvocable<void()>> posted_ ABSL_GUARDED_BY(post_mu_);
  std::atomic<bool> has_posted_{false};

  int wake_fd_ = -1;
  uint64_t wake_buf_ = 0;
  std::atomic<bool> sleeping_{false};
  std::atomic<bool> stop_{false};
};

}  // namespace peregrine::shard
