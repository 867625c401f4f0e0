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

// A loopback port nothing listens on now (the kernel's pick).
int FreePort() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(a);
  int port = -1;
  if (bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0 &&
      getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0) {
    port = ntohs(a.sin_port);
  }
  close(fd);
  return port;
}

// The script, run by a real redis-server on a loopback port.
class RedisScript : public ::testing::Test {
 protected:
  void SetUp() override {
    if (access("/usr/bin/redis-server", X_OK) != 0) {
      GTEST_SKIP() << "redis-server is missing (scripts/install-deps.sh)";
    }
    port_ = FreePort();
    ASSERT_GT(port_, 0);
    dir_ = ::testing::TempDir();
    pid_ = fork();
    if (pid_ == 0) {
      std::string port = std::to_string(port_);
      execl("/usr/bin/redis-server", "redis-server", "--port", port.c_str(),
            "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir",
            dir_.c_str(), "--loglevel", "warning", static_cast<char*>(nullptr));
      _exit(127);
    }
    script_ = dir_ + "/gcra.lua";
    std::ofstream(script_) << kGcraScript;
    for (int i = 0; i < 100; ++i) {
      if (Cli("PING") == "PONG\n") return;
      usleep(50000);
    }
    FAIL() << "redis-server did not answer";
  }
  void TearDown() override {
    if (pid_ > 0) {
      kill(pid_, SIGTERM);
      waitpid(pid_, nullptr, 0);
    }
  }
  std::string Cli(const std::string& args) {
    std::string cmd = absl::StrCat("/usr/bin/redis-cli -h 127.0.0.1 -p ", port_,
                                   " ", args, " 2>&1");
    FILE* p = popen(cmd.c_str(), "r");
    std::string out;
    char buf[256];
    while (p != nullptr && fgets(buf, sizeof(buf), p) != nullptr) out += buf;
    if (p != nullptr) pclose(p);
    return out;
  }
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
  int port_ = 0;
  pid_t pid_ = -1;
  std::string dir_;
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
