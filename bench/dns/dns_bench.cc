// DNS benchmarks.
//
//   bazel run -c opt //bench/dns:dns_bench -- --benchmark_format=json
//
// BM_CacheHit: MX look-ups answered from a shard's cache (the mail rules
//   applied each time). Counter lookups_per_s.
// BM_CacheMemory: bytes of heap per cached answer (one A record each), from
//   mallinfo2 before and after caching 100,000 names. Counter
//   bytes_per_entry.
// BM_LocalServer: look-ups of distinct names through c-ares on a shard
//   against NSD on loopback, cache off, 64 in flight. Counter lookups_per_s.
#include <malloc.h>

#include <deque>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "benchmark/benchmark.h"
#include "dns/cares_transport.h"
#include "mta/shard/shard_group.h"
#include "tests/dns/nsd_fixture.h"
#include "tests/dns/packet_builder.h"

namespace peregrine::dns {
namespace {

using testing::PacketBuilder;

// Answers at once: an MX set for "multi.test", one A record for anything.
class InstantTransport : public Transport {
 public:
  void Query(const std::string& name, uint16_t type, Done done) override {
    PacketBuilder p;
    if (type == kMx) {
      p.Answer(name, kMx, 3600, PacketBuilder::Mx(10, "mx1." + name))
          .Answer(name, kMx, 3600, PacketBuilder::Mx(20, "mx2." + name));
    } else {
      p.Answer(name, kA, 3600, PacketBuilder::A("192.0.2.1"));
    }
    done(p.Build());
  }
};

struct Inline {
  std::deque<absl::AnyInvocable<void()>> queue;
  void Drain() {
    while (!queue.empty()) {
      auto fn = std::move(queue.front());
      queue.pop_front();
      fn();
    }
  }
};

std::unique_ptr<CachingResolver> MakeInstant(Inline& q, size_t entries) {
  CachingResolverOptions o;
  o.cache_entries = entries;
  return std::make_unique<CachingResolver>(
      std::make_unique<InstantTransport>(), [] { return absl::Now(); },
      [&q](absl::AnyInvocable<void()> fn) { q.queue.push_back(std::move(fn)); },
      o);
}

void BM_CacheHit(benchmark::State& state) {
  Inline q;
  auto resolver = MakeInstant(q, 1000);
  size_t hosts = 0;
  resolver->Mx("multi.test", [&](auto r) { hosts = r->size(); });
  q.Drain();
  for (auto _ : state) {
    resolver->Mx("multi.test", [&](auto r) { hosts += r->size(); });
    q.Drain();
  }
  benchmark::DoNotOptimize(hosts);
  state.counters["lookups_per_s"] = benchmark::Counter(
      static_cast<double>(state.iterations()), benchmark::Counter::kIsRate);
  state.counters["queries_sent"] =
      static_cast<double>(resolver->queries_sent());
}
BENCHMARK(BM_CacheHit);

void BM_CacheMemory(benchmark::State& state) {
  constexpr int kNames = 100000;
  for (auto _ : state) {
    Inline q;
    auto resolver = MakeInstant(q, kNames);
    malloc_trim(0);
    size_t before = mallinfo2().uordblks;
    for (int i = 0; i < kNames; ++i) {
      resolver->Lookup(absl::StrCat("host", i, ".example.test"), kA,
                       [](auto) {});
      q.Drain();
    }
    size_t after = mallinfo2().uordblks;
    state.counters["bytes_per_entry"] =
        static_cast<double>(after - before) / kNames;
    state.counters["entries"] = static_cast<double>(resolver->cache().size());
  }
}
BENCHMARK(BM_CacheMemory)->Iterations(1)->Unit(benchmark::kMillisecond);

void BM_LocalServer(benchmark::State& state) {
  auto nsd = testing::NsdServer::Start(testing::TestZones());
  if (!nsd.ok()) {
    state.SkipWithError(std::string(nsd.status().message()).c_str());
    return;
  }
  shard::ShardGroup::Options options;
  options.shards = 1;
  shard::ShardGroup group(options);
  if (!group.Start().ok()) return;
  std::unique_ptr<CachingResolver> resolver;
  absl::Notification ready;
  group.SubmitTo(0, [&] {
    CaresOptions cares;
    cares.servers = {(*nsd)->address()};
    CachingResolverOptions cache;
    cache.cache_entries = 0;  // Every look-up goes to the server.
    resolver = *MakeCaresResolver(group.reactor(0), cares, cache);
    ready.Notify();
  });
  ready.WaitForNotification();
  constexpr int kPerIteration = 2000, kInFlight = 64;
  int failures = 0;
  for (auto _ : state) {
    absl::Notification done;
    group.SubmitTo(0, [&] {
      struct Run {
        CachingResolver& r;
        int started = 0, finished = 0;
        int& failures;
        absl::Notification& done;
        void Next() {
          if (started == kPerIteration) return;
          // Distinct names, so that no two look-ups in flight coalesce:
          // each is a round trip to the server (NXDOMAIN answers).
          r.Lookup(absl::StrCat("n", started++, ".test"), kA,
                   [this](absl::StatusOr<Answer> result) {
                     if (!result.ok() || result->kind != Answer::kNxDomain)
                       ++failures;
                     if (++finished == kPerIteration) {
                       done.Notify();
                       delete this;
                       return;
                     }
                     Next();
                   });
        }
      };
      auto* run = new Run{*resolver, 0, 0, failures, done};
      for (int i = 0; i < kInFlight; ++i) run->Next();
    });
    done.WaitForNotification();
  }
  absl::Notification closed;
  group.SubmitTo(0, [&] {
    resolver.reset();
    closed.Notify();
  });
  closed.WaitForNotification();
  group.Stop();
  group.Join();
  state.counters["lookups_per_s"] = benchmark::Counter(
      static_cast<double>(state.iterations()) * kPerIteration,
      benchmark::Counter::kIsRate);
  state.counters["failures"] = failures;
}
BENCHMARK(BM_LocalServer)->UseRealTime()->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace peregrine::dns
