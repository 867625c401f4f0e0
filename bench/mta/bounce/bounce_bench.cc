// What bounce handling costs: classifying a reply (every failure and
// deferral, on the shard), building a DSN and reading one back (the
// notifier's and the inbox's threads), and a VERP token (every
// transaction when VERP is on), and the suppression check of every RCPT
// against a list of 100,000 addresses (almost always a miss).
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "benchmark/benchmark.h"
#include "mta/bounce/classifier.h"
#include "mta/bounce/dsn.h"
#include "mta/bounce/report.h"
#include "mta/bounce/suppression.h"
#include "mta/bounce/verp.h"
#include "queue/rocksdb_store.h"

namespace peregrine::bounce {
namespace {

const Classifier& Rules() {
  static const std::shared_ptr<const Classifier> rules = *Classifier::Create();
  return *rules;
}

DsnInput Input() {
  DsnInput in;
  in.reporting_mta = "mx.peregrine.test";
  in.sender = "news@shop.example";
  in.arrival = absl::FromUnixSeconds(1795000000);
  in.now = absl::FromUnixSeconds(1795000600);
  in.message_id = "<dsn.1@mx.peregrine.test>";
  in.boundary = "=_1/mx.peregrine.test";
  in.original =
      "From: news@shop.example\r\nTo: a@dest.example\r\n"
      "Subject: news\r\n\r\n" +
      std::string(4000, 'x') + "\r\n";
  DsnRecipient r;
  r.address = "a@dest.example";
  r.reply = Reply{550, "5.1.1",
                  "<a@dest.example>: Recipient address "
                  "rejected: User unknown in local recipient "
                  "table"};
  r.remote = true;
  r.remote_mta = "mx.dest.example";
  r.category = Category::kInvalidRecipient;
  in.recipients = {r};
  return in;
}

void BM_Classify(benchmark::State& state) {
  Reply reply{550, "5.7.1",
              "Service unavailable; Client host [203.0.113.9] blocked using "
              "zen.spamhaus.org"};
  for (auto _ : state) benchmark::DoNotOptimize(Rules().Classify(reply));
}
BENCHMARK(BM_Classify);

void BM_ClassifyUnknownText(benchmark::State& state) {
  // No rule matches until the bare-code ones: the longest path.
  Reply reply{554, "", "transaction failed for reasons of its own"};
  for (auto _ : state) benchmark::DoNotOptimize(Rules().Classify(reply));
}
BENCHMARK(BM_ClassifyUnknownText);

void BM_BuildDsn(benchmark::State& state) {
  DsnInput in = Input();
  for (auto _ : state) benchmark::DoNotOptimize(BuildDsn(in));
}
BENCHMARK(BM_BuildDsn);

void BM_ParseDsn(benchmark::State& state) {
  std::string dsn = BuildDsn(Input());
  for (auto _ : state) benchmark::DoNotOptimize(ParseReport(dsn, &Rules()));
}
BENCHMARK(BM_ParseDsn);

void BM_VerpAddress(benchmark::State& state) {
  VerpOptions o;
  o.domain = "bounces.shop.example";
  o.secret = "0123456789abcdef0123456789abcdef";
  for (auto _ : state) {
    benchmark::DoNotOptimize(
        VerpAddress(o, 0x066141EB688B7500, 0, "alice@dest.example"));
  }
}
BENCHMARK(BM_VerpAddress);

// A queue in a temporary folder with 100,000 suppressed addresses, made
// once for the process and removed at its end.
struct BigListFixture {
  BigListFixture() {
    const char* tmp = getenv("TEST_TMPDIR");
    dir =
        absl::StrCat(tmp != nullptr ? tmp : "/tmp", "/peregrine-bench-XXXXXX");
    if (mkdtemp(dir.data()) == nullptr) abort();
    queue::RocksStoreOptions o;
    o.path = dir;
    o.sync = false;
    store = *queue::RocksStore::Open(o);
    list = std::make_unique<SuppressionList>(store->SideTable());
    for (int i = 0; i < 100000; ++i) {
      SuppressionEntry e;
      e.address = absl::StrCat("gone", i, "@list.example");
      e.category = "invalid_recipient";
      e.source = "bench";
      if (!list->Add(e).ok()) abort();
    }
  }
  ~BigListFixture() {
    list.reset();
    store.reset();
    std::filesystem::remove_all(dir);
  }
  std::string dir;
  std::unique_ptr<queue::RocksStore> store;
  std::unique_ptr<SuppressionList> list;
};

SuppressionList& BigList() {
  static BigListFixture fixture;
  return *fixture.list;
}

// Looks up "PREFIX<n>@list.example" for n cycling below `count`.
void Lookups(benchmark::State& state, const char* prefix, int count) {
  SuppressionList& list = BigList();
  absl::Time now = absl::Now();
  int i = 0;
  for (auto _ : state) {
    auto found = list.Find(absl::StrCat(prefix, i++ % count, "@list.example"),
                           "", "", now);
    benchmark::DoNotOptimize(found);
  }
}

void BM_SuppressionMiss(benchmark::State& state) {
  Lookups(state, "live", 50000);
}
BENCHMARK(BM_SuppressionMiss);

void BM_SuppressionHit(benchmark::State& state) {
  Lookups(state, "gone", 100000);
}
BENCHMARK(BM_SuppressionHit);

}  // namespace
}  // namespace peregrine::bounce
