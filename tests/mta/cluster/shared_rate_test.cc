// SharedRate with a fake clock and a fake store (the GCRA arithmetic of
// the script), and the script itself run by a real redis-server.
#include "mta/cluster/shared_rate.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "tests/mta/cluster/redis_server.h"

namespace peregrine::cluster {
namespace {

const absl::Time kStart = absl::FromUnixSeconds(1795000000);

// Three nodes try to send every millisecond for `seconds`; returns how many
// went out in all.
int64_t RunNodes(std::vector<std::unique_ptr<SharedRate>>& nodes,
                 absl::Time* clock, int seconds) {
  int64_t sent = 0;
  for (int ms = 0; ms < seconds * 1000; ++ms) {
    *clock = kStart + absl::Milliseconds(ms);
    for (auto& n : nodes) {
      while (n->TryTake(*clock)) ++sent;
    }
  }
  return sent;
}

std::vector<std::unique_ptr<SharedRate>> Nodes(FakeGcraStore* store,
                                               double rate, double burst) {
  std::vector<std::unique_ptr<SharedRate>> nodes;
  for (int i = 0; i < 3; ++i) {
    nodes.push_back(
        std::make_unique<SharedRate>("site:x", rate, burst, 3, store));
  }
  return nodes;
}

TEST(SharedRate, ThreeNodesTogetherKeepTheRate) {
  absl::Time clock = kStart;
  FakeGcraStore store(&clock);
  auto nodes = Nodes(&store, 50, 1);
  int64_t sent = RunNodes(nodes, &clock, 20);
  // 50/s over 20 s, plus the first batch: 1,000 within 10%.
  EXPECT_GE(sent, 900);
  EXPECT_LE(sent, 1010);
  for (auto& n : nodes) EXPECT_TRUE(n->sharing());
}

TEST(SharedRate, FewStoreRequestsPerMessageAtHighRates) {
  absl::Time clock = kStart;
  FakeGcraStore store(&clock);
  auto nodes = Nodes(&store, 3000, 3000);
  int64_t sent = RunNodes(nodes, &clock, 5);
  EXPECT_GE(sent, 15000 * 9 / 10);
  EXPECT_LE(sent, 15000 + 3000 + 300);
  // Batches of 300: well under the 0.05 commands a message asked.
  EXPECT_LT(static_cast<double>(store.calls) / static_cast<double>(sent), 0.05);
  EXPECT_EQ(SharedRate::BatchFor(3000), 300);
  EXPECT_EQ(SharedRate::BatchFor(5), 1);
  EXPECT_EQ(SharedRate::BatchFor(1e9), 1000);
}

TEST(SharedRate, WithTheStoreDownEachNodeKeepsItsShareThenSharesAgain) {
  absl::Time clock = kStart;
  FakeGcraStore store(&clock);
  store.fail = true;
  auto nodes = Nodes(&store, 60, 3);
  int64_t sent = RunNodes(nodes, &clock, 10);
  // Each node at 20/s alone: the cluster near 60/s, not 180/s.
  EXPECT_GE(sent, 540);
  EXPECT_LE(sent, 620);
  for (auto& n : nodes) EXPECT_FALSE(n->sharing());
  // Asked again once a second, not every try.
  EXPECT_LE(store.calls, 3u * 11u);
  store.fail = false;
  int64_t after = 0;
  for (int ms = 10000; ms < 20000; ++ms) {
    clock = kStart + absl::Milliseconds(ms);
    for (auto& n : nodes) {
      while (n->TryTake(clock)) ++after;
    }
  }
  for (auto& n : nodes) EXPECT_TRUE(n->sharing());
  EXPECT_GE(after, 540);
  EXPECT_LE(after, 620);
}

TEST(SharedRate, AnAnswerAfterTheSiteIsGoneIsDropped) {
  absl::Time clock = kStart;
  FakeGcraStore store(&clock);
  store.hold = true;
  {
    SharedRate r("site:y", 100, 10, 2, &store);
    EXPECT_FALSE(r.TryTake(clock));  // Asked; no answer yet.
    EXPECT_FALSE(r.TryTake(clock));  // One request at a time.
    EXPECT_EQ(r.requests(), 1u);
  }
  store.Release();  // Finds the flag false (ASan would catch a use).
}

class RedisScript : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!testing::RedisServer::Installed()) {
      GTEST_SKIP() << "redis-server is missing (scripts/install-deps.sh)";
    }
    ASSERT_TRUE(server_.Start()) << "redis-server did not answer";
    script_ = server_.dir() + "/gcra.lua";
    std::ofstream(script_) << kGcraScript;
  }
  std::string Cli(const std::string& args) { return server_.Cli(args); }
  // {granted, wait in microseconds}.
  std::pair<int64_t, int64_t> Reserve(int64_t interval_us, int64_t tol_us,
                                      int64_t want) {
    std::string out = Cli(absl::StrCat("--eval ", script_, " site:z , ",
                                       interval_us, " ", tol_us, " ", want));
    std::vector<std::string> lines =
        absl::StrSplit(out, '\n', absl::SkipEmpty());
    int64_t granted = -1, wait = -1;
    if (lines.size() != 2 || !absl::SimpleAtoi(lines[0], &granted) ||
        !absl::SimpleAtoi(lines[1], &wait)) {
      ADD_FAILURE() << "redis-cli said: " << out;
    }
    return {granted, wait};
  }
  testing::RedisServer server_;
  std::string script_;
};

TEST_F(RedisScript, GrantsUpToTheBurstThenSaysWhenTheNextIs) {
  // 10 a second (100,000 us each), a burst of 5.
  auto [a, wait_a] = Reserve(100000, 400000, 3);
  EXPECT_EQ(a, 3);
  EXPECT_EQ(wait_a, 0);
  auto [b, wait_b] = Reserve(100000, 400000, 3);
  EXPECT_EQ(b, 2);  // The rest of the burst.
  auto [c, wait_c] = Reserve(100000, 400000, 3);
  EXPECT_EQ(c, 0);
  EXPECT_GT(wait_c, 0);
  EXPECT_LE(wait_c, 100000);
  usleep(static_cast<useconds_t>(wait_c + 20000));
  auto [d, wait_d] = Reserve(100000, 400000, 3);
  EXPECT_EQ(d, 1);  // One more interval, one more token.
  // The state expires with its relevance.
  std::string ttl = Cli("PTTL site:z");
  int64_t ms = 0;
  ASSERT_TRUE(absl::SimpleAtoi(absl::StripAsciiWhitespace(ttl), &ms)) << ttl;
  EXPECT_GT(ms, 0);
  EXPECT_LE(ms, 1600);
}

}  // namespace
}  // namespace peregrine::cluster
