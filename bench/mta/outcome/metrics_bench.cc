// What a /metrics scrape costs: rendering the outcome counters at their
// largest (kMaxSites sites, each with every outcome and several failure
// categories), and what counting one outcome costs a shard. A scrape every
// second at the rendering's CPU time is that share of one core.
#include "absl/strings/str_cat.h"
#include "benchmark/benchmark.h"
#include "mta/outcome/metrics.h"

namespace peregrine::outcome {
namespace {

void Fill(Metrics& m) {
  Outcome o;
  o.listener = "relay";
  o.kind = Kind::kReceived;
  m.OnOutcome(o);
  for (size_t i = 0; i < Metrics::kMaxSites; ++i) {
    o.site = absl::StrCat("mx", i, ".provider.test");
    for (Kind k :
         {Kind::kDelivered, Kind::kDeferred, Kind::kFailed, Kind::kExpired}) {
      o.kind = k;
      for (bounce::Category c :
           {bounce::Category::kInvalidRecipient, bounce::Category::kRateLimited,
            bounce::Category::kSpamBlock, bounce::Category::kConnection}) {
        o.category = c;
        m.OnOutcome(o);
      }
    }
  }
}

void BM_RenderFull(benchmark::State& state) {
  Metrics m;
  Fill(m);
  size_t bytes = 0;
  for (auto _ : state) {
    std::string text = m.Render();
    bytes = text.size();
    benchmark::DoNotOptimize(text);
  }
  state.counters["bytes"] = static_cast<double>(bytes);
}
BENCHMARK(BM_RenderFull)->Unit(benchmark::kMicrosecond);

void BM_OnOutcomeDelivered(benchmark::State& state) {
  Metrics m;
  Fill(m);
  Outcome o;
  o.kind = Kind::kDelivered;
  o.site = "mx7.provider.test";
  for (auto _ : state) m.OnOutcome(o);
}
BENCHMARK(BM_OnOutcomeDelivered);

}  // namespace
}  // namespace peregrine::outcome
