// ShardGroup: N shard threads, each pinned to a core with its own Reactor,
// and the N x N grid of single-producer/single-consumer queues between them.
//
// Created and started by the main thread; lives until the process drains.
// SubmitTo(to, fn) from a shard runs `fn` on shard `to`: inline when `to` is
// the caller's own shard, otherwise through the queue from the caller to
// `to`. Wake-ups of sleeping targets are sent once per loop iteration, not
// once per message, so bursts cost one eventfd write.
//
// Back-pressure: each queue is bounded. TrySubmitTo fails when the queue is
// full; SubmitTo never fails and never blocks the reactor: it keeps what
// does not fit in the caller's backlog for that target, in order, and moves
// it on as the target drains. Backlog(to) tells producers (an SMTP listener
// deciding whether to accept more work) how far behind a target is.
#pragma once

#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <thread>
#include <vector>

#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "mta/shard/io_backend.h"
#include "mta/shard/reactor.h"
#include "mta/shard/spsc_queue.h"
#include "mta/shard/task.h"

namespace peregrine::shard {

// Spin (Reactor::kDefaultIdleSpin) only where this process may use more
// CPUs than it runs shards: on a machine whose every core has a shard, a
// spinning shard takes the core from the queue's committer, the kernel's
// network and disk work, and the other shards (measured on 2 vCPUs: durable
// SMTP intake 33-37k msgs/s spinning, 38-39k not).
absl::Duration AutoIdleSpin(int shards);

class ShardGroup {
 public:
  using Task = shard::Task;

  struct Options {
    int shards = 1;
    BackendKind backend = BackendKind::kAuto;
    // Pin shard i to the i-th CPU this process may run on (modulo).
    bool pin_threads = true;
    // Slots in each queue of the grid.
    size_t queue_capacity = 4096;
    // See Reactor::kDefaultIdleSpin. Unset: AutoIdleSpin(shards).
    std::optional<absl::Duration> idle_spin;
  };

  explicit ShardGroup(Options options);
  ~ShardGroup();  // Stops and joins.
  ShardGroup(const ShardGroup&) = delete;
  ShardGroup& operator=(const ShardGroup&) = delete;

  // Starts the shard threads. Each creates its backend and reactor on its
  // own thread, then runs `init` there before entering its loop. Fails, with
  // every thread joined, if any shard could not create its backend.
  absl::Status Start(std::function<void(Reactor&)> init = nullptr);
  // Asks every reactor to leave its loop; Join() waits for them.
  void Stop();
  void Join();

  int size() const { return static_cast<int>(shards_.size()); }
  Reactor& reactor(int shard) { return *shards_[shard]->reactor; }
  // The backend every shard uses ("io_uring" or "epoll").
  absl::string_view backend_name() const { return backend_name_; }

  // The calling thread's shard in this group, or -1.
  int CurrentShard() const;

  // Runs `fn` on shard `to`. From a thread that is not one of this group's
  // shards it goes through Reactor::Post (a lock); use that sparingly.
  void SubmitTo(int to, Task fn);
  // Like SubmitTo from a shard, but fails instead of queueing in the
  // backlog when the queue to `to` is full.
  bool TrySubmitTo(int to, Task& fn);
  // Tasks waiting on the calling shard because `to`'s queue was full.
  size_t Backlog(int to) const;

 private:
  class CrossShardPoller;
  struct Shard {
    std::unique_ptr<Reactor> reactor;
    std::unique_ptr<CrossShardPoller> poller;
    std::thread thread;
    // Indexed by target shard; touched only by this shard's thread.
    std::vector<std::deque<Task>> backlog;
    std::vector<char> needs_wake;
    std::vector<int> touched;
  };

  SpscQueue<Task>& Queue(int from, int to) {
    return *queues_[from * size() + to];
  }
  void NoteTouched(Shard& self, int to);
  void ThreadMain(int index, std::function<void(Reactor&)> init);

  Options options_;
  std::vector<std::unique_ptr<Shard>> shards_;
  std::vector<std::unique_ptr<SpscQueue<Task>>> queues_;
  std::string backend_name_;

  absl::Mutex start_mu_;
  int started_ ABSL_GUARDED_BY(start_mu_) = 0;
  bool go_ ABSL_GUARDED_BY(start_mu_) = false;
  absl::Status start_status_ ABSL_GUARDED_BY(start_mu_);
  bool joined_ = true;
};

}  // namespace peregrine::shard
