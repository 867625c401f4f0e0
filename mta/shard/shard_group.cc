#include "mta/shard/shard_group.h"

#include <pthread.h>
#include <sched.h>

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "base/log.h"

namespace peregrine::shard {
namespace {
thread_local const ShardGroup* tls_group = nullptr;
thread_local int tls_shard = -1;

// Items drained from one inbound queue per iteration, so that one busy
// neighbour cannot starve the others or the shard's own I/O.
constexpr size_t kDrainBatch = 512;

std::vector<int> AllowedCpus() {
  cpu_set_t set;
  CPU_ZERO(&set);
  std::vector<int> cpus;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) {
    for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu) {
      if (CPU_ISSET(cpu, &set)) cpus.push_back(cpu);
    }
  }
  return cpus;
}
}  // namespace

absl::Duration AutoIdleSpin(int shards) {
  return static_cast<int>(AllowedCpus().size()) > shards
             ? Reactor::kDefaultIdleSpin
             : absl::ZeroDuration();
}

// Drains the queues into one shard, moves its backlogs on, and wakes the
// shards it sent to during the last iteration.
class ShardGroup::CrossShardPoller final : public Poller {
 public:
  CrossShardPoller(ShardGroup* group, int self) : group_(group), self_(self) {}

  int Poll() override {
    int work = 0;
    int n = group_->size();
    for (int from = 0; from < n; ++from) {
      if (from == self_) continue;
      work += static_cast<int>(
          group_->Queue(from, self_).Drain(kDrainBatch, [](Task& task) {
            task();
          }));
    }
    Shard& me = *group_->shards_[self_];
    for (int to = 0; to < n; ++to) {
      auto& backlog = me.backlog[to];
      if (backlog.empty()) continue;
      SpscQueue<Task>& q = group_->Queue(self_, to);
      while (!backlog.empty() && q.TryPush(std::move(backlog.front()))) {
        backlog.pop_front();
        group_->NoteTouched(me, to);
      }
    }
    FlushWakes(me);
    return work;
  }

  absl::Duration SleepBudget() override {
    Shard& me = *group_->shards_[self_];
    FlushWakes(me);
    int n = group_->size();
    for (int from = 0; from < n; ++from) {
      if (from != self_ && !group_->Queue(from, self_).Empty()) {
        return absl::ZeroDuration();
      }
    }
    for (int to = 0; to < n; ++to) {
      // A full queue drains fast; look again soon rather than spin.
      if (!me.backlog[to].empty()) return absl::Microseconds(50);
    }
    return absl::InfiniteDuration();
  }

 private:
  void FlushWakes(Shard& me) {
    if (me.touched.empty()) return;
    std::atomic_thread_fence(std::memory_order_seq_cst);
    for (int to : me.touched) {
      me.needs_wake[to] = 0;
      group_->reactor(to).Wake();
    }
    me.touched.clear();
  }

  ShardGroup* group_;
  int self_;
};

ShardGroup::ShardGroup(Options options) : options_(options) {
  int n = std::max(1, options_.shards);
  for (int i = 0; i < n; ++i) {
    auto shard = std::make_unique<Shard>();
    shard->backlog.resize(n);
    shard->needs_wake.assign(n, 0);
    shards_.push_back(std::move(shard));
  }
  for (int i = 0; i < n * n; ++i) {
    queues_.push_back(
        std::make_unique<SpscQueue<Task>>(options_.queue_capacity));
  }
}

ShardGroup::~ShardGroup() {
  Stop();
  Join();
}

absl::Status ShardGroup::Start(std::function<void(Reactor&)> init) {
  joined_ = false;
  for (int i = 0; i < size(); ++i) {
    shards_[i]->thread = std::thread([this, i, init] { ThreadMain(i, init); });
  }
  absl::Status status;
  {
    absl::MutexLock lock(&start_mu_);
    auto all_started = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(start_mu_) {
      return started_ == size();
    };
    start_mu_.Await(absl::Condition(&all_started));
    status = start_status_;
    go_ = true;
  }
  if (!status.ok()) {
    Join();
    return status;
  }
  return absl::OkStatus();
}

void ShardGroup::ThreadMain(int index, std::function<void(Reactor&)> init) {
  Shard& me = *shards_[index];
  if (options_.pin_threads) {
    std::vector<int> cpus = AllowedCpus();
    if (!cpus.empty()) {
      cpu_set_t set;
      CPU_ZERO(&set);
      CPU_SET(cpus[index % cpus.size()], &set);
      pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
    }
    pthread_setname_np(pthread_self(),
                       absl::StrCat("shard-", index).substr(0, 15).c_str());
  }
  auto backend = MakeIoBackend(options_.backend);
  bool ok = backend.ok();
  {
    absl::MutexLock lock(&start_mu_);
    if (ok) {
      me.reactor = std::make_unique<Reactor>(
          index, std::move(*backend),
          options_.idle_spin.value_or(AutoIdleSpin(options_.shards)));
      me.poller = std::make_unique<CrossShardPoller>(this, index);
      me.reactor->AddPoller(me.poller.get());
      if (backend_name_.empty()) {
        backend_name_ = std::string(me.reactor->io().name());
      }
    } else if (start_status_.ok()) {
      start_status_ = absl::UnavailableError(absl::StrCat(
          "shard ", index,
          ": cannot start I/O backend: ", backend.status().message()));
    }
    ++started_;
    start_mu_.Await(absl::Condition(&go_));
    if (!start_status_.ok()) return;
  }
  tls_group = this;
  tls_shard = index;
  if (init) init(*me.reactor);
  me.reactor->Run();
  tls_group = nullptr;
  tls_shard = -1;
}

void ShardGroup::Stop() {
  for (auto& shard : shards_) {
    if (shard->reactor) shard->reactor->Stop();
  }
}

void ShardGroup::Join() {
  if (joined_) return;
  for (auto& shard : shards_) {
    if (shard->thread.joinable()) shard->thread.join();
  }
  joined_ = true;
}

int ShardGroup::CurrentShard() const {
  return tls_group == this ? tls_shard : -1;
}

void ShardGroup::NoteTouched(Shard& self, int to) {
  if (!self.needs_wake[to]) {
    self.needs_wake[to] = 1;
    self.touched.push_back(to);
  }
}

void ShardGroup::SubmitTo(int to, Task fn) {
  int from = CurrentShard();
  if (from < 0) {
    reactor(to).Post(std::move(fn));
    return;
  }
  if (from == to) {
    fn();
    return;
  }
  Shard& me = *shards_[from];
  auto& backlog = me.backlog[to];
  // Once something waits in the backlog, later tasks queue behind it so
  // that tasks from one shard to another keep their order.
  if (backlog.empty() && Queue(from, to).TryPush(std::move(fn))) {
    NoteTouched(me, to);
    return;
  }
  backlog.push_back(std::move(fn));
}

bool ShardGroup::TrySubmitTo(int to, Task& fn) {
  int from = CurrentShard();
  if (from < 0) return false;
  if (from == to) {
    fn();
    return true;
  }
  Shard& me = *shards_[from];
  if (!me.backlog[to].empty() || !Queue(from, to).TryPush(std::move(fn))) {
    return false;
  }
  NoteTouched(me, to);
  return true;
}

size_t ShardGroup::Backlog(int to) const {
  int from = CurrentShard();
  if (from < 0) return 0;
  return shards_[from]->backlog[to].size();
}

}  // namespace peregrine::shard
