// Shard runtime benchmarks.
//
//   bazel run -c opt //bench/mta/shard:shard_bench -- --benchmark_format=json
//
// BM_CrossShardThroughput: one shard sends batches of tasks to another;
//   items_per_second is tasks run on the target per second (one way).
// BM_CrossShardRoundTrip: a task goes to shard 1 and back to shard 0;
//   time per iteration is one round trip, sleeping reactors included.
// BM_Echo/<backend>/<bytes>: 64 loopback connections echo messages between
//   a server shard and a client shard. items_per_second = echoes/s.
// BM_EchoCompare/<bytes>: io_uring and epoll alternately in one run;
//   counter ratio_uring_vs_epoll = io_uring echoes/s over epoll echoes/s.
#include <atomic>
#include <memory>

#include "absl/synchronization/notification.h"
#include "benchmark/benchmark.h"
#include "mta/shard/shard_group.h"
#include "tests/mta/shard/echo_harness.h"

namespace peregrine::shard {
namespace {

// Two shards (one sends, one receives), or nullptr with the error reported.
std::unique_ptr<ShardGroup> StartTwoShards(benchmark::State& state) {
  ShardGroup::Options options;
  options.shards = 2;
  auto group = std::make_unique<ShardGroup>(options);
  if (!group->Start().ok()) {
    state.SkipWithError("cannot start shards");
    return nullptr;
  }
  return group;
}

void BM_CrossShardThroughput(benchmark::State& state) {
  const int batch = static_cast<int>(state.range(0));
  auto started = StartTwoShards(state);
  if (started == nullptr) return;
  ShardGroup& group = *started;
  constexpr int kPerIteration = 1 << 20;
  uint64_t received = 0;  // Touched only on shard 1.
  for (auto _ : state) {
    absl::Notification done;
    group.SubmitTo(0, [&] {
      // Sends in bursts of `batch`, yielding to the loop between bursts so
      // that wake-ups and backlog moves happen as they would in the daemon.
      struct Sender {
        ShardGroup& group;
        int batch;
        int left;
        uint64_t* received;
        absl::Notification* done;
        void Burst() {
          int n = std::min(batch, left);
          for (int i = 0; i < n; ++i) {
            bool last = (left - i == 1);
            group.SubmitTo(1, [r = received, last, d = done] {
              ++*r;
              if (last) d->Notify();
            });
          }
          left -= n;
          if (left > 0) {
            group.reactor(0).Defer([this] { Burst(); });
          } else {
            delete this;
          }
        }
      };
      (new Sender{group, batch, kPerIteration, &received, &done})->Burst();
    });
    done.WaitForNotification();
  }
  group.Stop();
  group.Join();
  state.SetItemsProcessed(state.iterations() * kPerIteration);
  state.counters["received"] = static_cast<double>(received);
}
BENCHMARK(BM_CrossShardThroughput)
    ->Arg(64)
    ->Arg(512)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

void BM_CrossShardRoundTrip(benchmark::State& state) {
  auto started = StartTwoShards(state);
  if (started == nullptr) return;
  ShardGroup& group = *started;
  constexpr int kTrips = 10000;
  for (auto _ : state) {
    absl::Notification done;
    struct Pinger {
      ShardGroup& group;
      int left;
      absl::Notification* done;
      void Ping() {
        group.SubmitTo(1, [this] { group.SubmitTo(0, [this] { Pong(); }); });
      }
      void Pong() {
        if (--left == 0) {
          done->Notify();
          delete this;
        } else {
          Ping();
        }
      }
    };
    group.SubmitTo(0, [&] { (new Pinger{group, kTrips, &done})->Ping(); });
    done.WaitForNotification();
  }
  group.Stop();
  group.Join();
  state.SetItemsProcessed(state.iterations() * kTrips);
  // kIsRate | kInvert turns trips/s into seconds per trip.
  state.counters["seconds_per_round_trip"] = benchmark::Counter(
      static_cast<double>(state.iterations() * kTrips),
      benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
}
BENCHMARK(BM_CrossShardRoundTrip)->UseRealTime()->Unit(benchmark::kMillisecond);

testing::EchoOptions EchoFor(BackendKind backend, int64_t bytes) {
  testing::EchoOptions options;
  options.backend = backend;
  options.connections = 64;
  options.message_bytes = static_cast<size_t>(bytes);
  // About 16 MiB each way per run, whatever the message size.
  options.rounds = static_cast<int>(
      std::max<int64_t>(10, (int64_t{16} << 20) / (64 * bytes)));
  return options;
}

void BM_Echo(benchmark::State& state) {
  BackendKind backend =
      state.range(0) == 0 ? BackendKind::kIoUring : BackendKind::kEpoll;
  testing::EchoOptions options = EchoFor(backend, state.range(1));
  uint64_t messages = 0;
  for (auto _ : state) {
    auto result = testing::RunEcho(options);
    if (!result.ok()) {
      state.SkipWithError(std::string(result.status().message()).c_str());
      return;
    }
    state.SetIterationTime(absl::ToDoubleSeconds(result->elapsed));
    messages += result->messages;
    state.SetLabel(result->backend);
  }
  state.SetItemsProcessed(static_cast<int64_t>(messages));
  state.SetBytesProcessed(static_cast<int64_t>(messages) * state.range(1));
}
BENCHMARK(BM_Echo)
    ->ArgNames({"epoll", "bytes"})
    ->Args({0, 1024})
    ->Args({1, 1024})
    ->Args({0, 16384})
    ->Args({1, 16384})
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond);

void BM_EchoCompare(benchmark::State& state) {
  double uring_s = 0, epoll_s = 0;
  uint64_t uring_msgs = 0, epoll_msgs = 0;
  for (auto _ : state) {
    for (BackendKind backend : {BackendKind::kIoUring, BackendKind::kEpoll}) {
      auto result = testing::RunEcho(EchoFor(backend, state.range(0)));
      if (!result.ok()) {
        state.SkipWithError(std::string(result.status().message()).c_str());
        return;
      }
      double s = absl::ToDoubleSeconds(result->elapsed);
      if (backend == BackendKind::kIoUring) {
        uring_s += s;
        uring_msgs += result->messages;
      } else {
        epoll_s += s;
        epoll_msgs += result->messages;
      }
    }
  }
  double uring_rate = uring_msgs / uring_s;
  double epoll_rate = epoll_msgs / epoll_s;
  state.counters["uring_msgs_per_s"] = uring_rate;
  state.counters["epoll_msgs_per_s"] = epoll_rate;
  state.counters["ratio_uring_vs_epoll"] = uring_rate / epoll_rate;
}
BENCHMARK(BM_EchoCompare)
    ->Arg(1024)
    ->Arg(16384)
    ->Iterations(3)
    ->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace peregrine::shard
