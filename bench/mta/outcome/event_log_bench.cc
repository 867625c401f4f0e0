// What the event log costs a shard per outcome: formatting one record
// (ToJson) and handing it to the writer (OnOutcome), and the human log
// line next to it for scale.
#include <unistd.h>

#include "absl/strings/str_cat.h"
#include "benchmark/benchmark.h"
#include "mta/outcome/event_log.h"

namespace peregrine::outcome {
namespace {

Outcome Delivered() {
  Outcome o;
  o.kind = Kind::kDelivered;
  o.time = absl::Now();
  o.shard = 0;
  o.id = 0x6613FBDAF94DD00;
  o.sender = "bench@src.test";
  o.recipient = "user@d26.test";
  o.size = 10240;
  o.site = "mx.d26.test";
  o.mx = "mx.d26.test";
  o.ip = "127.0.0.1";
  o.tls = Tls{"TLSv1.3", "TLS_AES_256_GCM_SHA384", false};
  o.reply = Reply{250, "2.0.0", "Ok: queued as 4Xk2Zr0Qm1z"};
  o.attempt = 1;
  o.queue_time = absl::Milliseconds(59);
  return o;
}

void BM_ToJson(benchmark::State& state) {
  Outcome o = Delivered();
  for (auto _ : state) benchmark::DoNotOptimize(EventLog::ToJson(o));
}
BENCHMARK(BM_ToJson);

void BM_OnOutcome(benchmark::State& state) {
  EventLogOptions options;
  options.path = absl::StrCat("/tmp/event_log_bench.", getpid());
  options.shards = 1;
  auto log = EventLog::Open(options);
  Outcome o = Delivered();
  for (auto _ : state) (*log)->OnOutcome(o);
  (*log)->Flush();
  state.counters["dropped"] = static_cast<double>((*log)->dropped());
  log->reset();
  ::unlink(options.path.c_str());
}
BENCHMARK(BM_OnOutcome);

}  // namespace
}  // namespace peregrine::outcome
