// SharedSlots (connection leases) with a fake clock and a fake store that
// follows the script's rules; the script itself run by a real
// redis-server.
#include "mta/cluster/shared_slots.h"

#include <fstream>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "gtest/gtest.h"
#include "tests/mta/cluster/redis_server.h"

namespace peregrine::cluster {
namespace {

const absl::Time kStart = absl::FromUnixSeconds(1795000000);

int Ask(SharedSlots& s, int wanted, absl::Time now) {
  absl::Time wake = absl::InfiniteFuture();
  return s.Slots(wanted, now, &wake);
}

TEST(SharedSlots, OneHolderGetsWhatItWantsUpToTheMaximum) {
  absl::Time clock = kStart;
  FakeSlotStore store(&clock);
  SharedSlots a("site", "a", 10, 3, &store);
  EXPECT_EQ(Ask(a, 4, clock), 4);
  EXPECT_EQ(Ask(a, 50, clock), 10);
  // Steady: asked again only to renew, once a second.
  uint64_t before = store.calls;
  for (int i = 0; i < 1000; ++i) Ask(a, 10, clock + absl::Milliseconds(i / 2));
  EXPECT_EQ(store.calls, before + 0);
  Ask(a, 10, clock + absl::Seconds(2));
  EXPECT_EQ(store.calls, before + 1);
}

TEST(SharedSlots, AHolderAboveItsPartGivesBackWhileAnotherWaits) {
  absl::Time clock = kStart;
  FakeSlotStore store(&clock);
  SharedSlots a("site", "a", 4, 2, &store);
  SharedSlots b("site", "b", 4, 2, &store);
  EXPECT_EQ(Ask(a, 4, clock), 4);
  EXPECT_EQ(Ask(b, 2, clock), 0);  // Nothing left; b says it waits.
  // Within the next renewal a is down to half, and b gets the rest.
  clock += SharedSlots::kRenew;
  EXPECT_EQ(Ask(a, 4, clock), 2);
  clock += SharedSlots::kShort;
  EXPECT_EQ(Ask(b, 2, clock), 2);
  // Together never more than the maximum.
  EXPECT_LE(a.held() + b.held(), 4);
  // b is done: a takes everything again.
  clock += SharedSlots::kRenew;
  EXPECT_EQ(Ask(b, 0, clock), 0);
  clock += SharedSlots::kRenew;
  EXPECT_EQ(Ask(a, 4, clock), 4);
}

TEST(SharedSlots, ACrashedHoldersLeasesLapse) {
  absl::Time clock = kStart;
  FakeSlotStore store(&clock);
  auto a = std::make_unique<SharedSlots>("site", "a", 4, 2, &store,
                                         absl::Seconds(15));
  EXPECT_EQ(Ask(*a, 4, clock), 4);
  a.reset();  // Gone without a word (kill -9).
  SharedSlots b("site", "b", 4, 2, &store, absl::Seconds(15));
  EXPECT_EQ(Ask(b, 4, clock), 0);
  clock += absl::Seconds(16);
  EXPECT_EQ(Ask(b, 4, clock), 4);
}

TEST(SharedSlots, StoreDownKeepsToTheLocalShareThenShares) {
  absl::Time clock = kStart;
  FakeSlotStore store(&clock);
  store.fail = true;
  SharedSlots a("site", "a", 10, 3, &store);
  Ask(a, 10, clock);  // The failure comes back.
  EXPECT_FALSE(a.sharing());
  EXPECT_EQ(Ask(a, 10, clock), 3);  // 10 / 3 nodes.
  absl::Time wake = absl::InfiniteFuture();
  a.Slots(10, clock, &wake);
  EXPECT_EQ(wake, clock + absl::Seconds(1));  // When it asks again.
  store.fail = false;
  clock += absl::Seconds(1);
  EXPECT_EQ(Ask(a, 10, clock), 10);
  EXPECT_TRUE(a.sharing());
}

TEST(SharedSlots, AnAnswerAfterTheHolderIsGoneDoesNothing) {
  absl::Time clock = kStart;
  FakeSlotStore store(&clock);
  store.hold = true;
  {
    SharedSlots a("site", "a", 4, 2, &store);
    EXPECT_EQ(Ask(a, 4, clock), 0);  // Asked; no answer yet.
    EXPECT_EQ(Ask(a, 4, clock), 0);  // One request at a time.
    EXPECT_EQ(a.requests(), 1u);
  }
  store.Release();  // ASan would see a use after free.
}

// The script run by Redis: the same rules.
TEST(LeaseScript, GrantsFairlyAndLapses) {
  if (!testing::RedisServer::Installed()) {
    GTEST_SKIP() << "redis-server is missing (scripts/install-deps.sh)";
  }
  testing::RedisServer server;
  ASSERT_TRUE(server.Start());
  std::string script = server.dir() + "/lease.lua";
  std::ofstream(script) << kLeaseScript;
  auto hold = [&](const std::string& holder, int want, int ttl_ms) {
    std::string out =
        server.Cli(absl::StrCat("--eval ", script, " s:exp s:held s:wanted , ",
                                holder, " ", want, " 4 ", ttl_ms));
    int n = -1;
    EXPECT_TRUE(absl::SimpleAtoi(absl::StripAsciiWhitespace(out), &n)) << out;
    return n;
  };
  EXPECT_EQ(hold("a", 4, 60000), 4);
  EXPECT_EQ(hold("b", 2, 60000), 0);  // b waits: registered.
  EXPECT_EQ(hold("a", 4, 60000), 2);  // a renews: half, b waiting.
  EXPECT_EQ(hold("b", 2, 60000), 2);
  EXPECT_EQ(hold("c", 1, 60000), 0);  // Full.
  // A short lease lapses.
  EXPECT_EQ(hold("b", 0, 60000), 0);  // b gives back.
  EXPECT_EQ(hold("a", 4, 100), 2);    // c waits: a gets its part, 4/2.
  usleep(200000);
  EXPECT_EQ(hold("c", 4, 60000), 4);  // a's lease lapsed.
  std::string ttl = server.Cli("PTTL s:held");
  int pttl = 0;
  ASSERT_TRUE(absl::SimpleAtoi(absl::StripAsciiWhitespace(ttl), &pttl));
  EXPECT_GT(pttl, 0);  // Keys expire: no litter after the last holder.
}

}  // namespace
}  // namespace peregrine::cluster
