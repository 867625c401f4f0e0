// Crash test: a child enqueues with fsync and reports each acknowledgement;
// we SIGKILL it at random moments, reopen the queue, and check that every
// acknowledged message is there exactly once, whole, with all its
// recipients, and that no message is there half-written.
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <filesystem>
#include <map>
#include <random>
#include <set>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "queue/rocksdb_store.h"

namespace peregrine::queue {
namespace {

constexpr int kCycles = 25;

uint64_t SeqOf(const std::string& body, bool* whole) {
  // Mirrors crash_child's Body(): "X-Seq: N", then lines, then "X-Sum: S".
  *whole = false;
  size_t sum_at = body.rfind("X-Sum: ");
  if (body.rfind("X-Seq: ", 0) != 0 || sum_at == std::string::npos) return 0;
  uint32_t sum = 0;
  for (size_t i = 0; i < sum_at; ++i) {
    sum = sum * 131 + static_cast<unsigned char>(body[i]);
  }
  uint32_t recorded = 0;
  absl::string_view tail = absl::string_view(body).substr(sum_at + 7);
  tail = tail.substr(0, tail.find('\r'));
  if (!absl::SimpleAtoi(tail, &recorded) || recorded != sum) return 0;
  uint64_t seq = 0;
  absl::string_view head = absl::string_view(body).substr(7);
  head = head.substr(0, head.find('\r'));
  if (!absl::SimpleAtoi(head, &seq)) return 0;
  *whole = true;
  return seq;
}

struct Child {
  pid_t pid;
  int out;
};

Child Spawn(const std::string& path, uint64_t first_seq, bool lose_rocksdb) {
  int fds[2];
  EXPECT_EQ(pipe(fds), 0);
  pid_t pid = fork();
  if (pid == 0) {
    dup2(fds[1], STDOUT_FILENO);
    close(fds[0]);
    close(fds[1]);
    std::string seq = std::to_string(first_seq);
    execl("tests/queue/crash_child", "crash_child", path.c_str(), seq.c_str(),
          lose_rocksdb ? "lose-rocksdb" : nullptr, nullptr);
    _exit(127);
  }
  close(fds[1]);
  return {pid, fds[0]};
}

TEST(CrashTest, AcknowledgedMessagesSurviveKillNine) {
  std::string path = absl::StrCat(getenv("TEST_TMPDIR"), "/crash-queue");
  std::filesystem::remove_all(path);
  std::mt19937 rng(20261122);
  std::map<uint64_t, MessageId> acked;  // seq -> id, over all cycles.
  absl::Time deadline = absl::Now() + absl::Seconds(120);
  int cycles = 0;
  uint64_t replayed = 0;

  for (; cycles < kCycles && absl::Now() < deadline; ++cycles) {
    // Every other cycle, RocksDB also loses what it had not synced (a
    // power failure): the spool's replay must bring it back.
    Child child = Spawn(path, static_cast<uint64_t>(cycles) * 1000000,
                        /*lose_rocksdb=*/cycles % 2 == 1);
    // Let it run for a random while: in one cycle of three from its first
    // acknowledgement on (however slow its start, e.g. under a sanitizer),
    // in the others from its start, so that it is sometimes killed while it
    // is opening.
    std::string text;
    char buf[65536];
    ssize_t n;
    if (cycles % 3 == 1) {
      absl::Time until = absl::Now() + absl::Seconds(30);
      while (text.find('\n') == std::string::npos && absl::Now() < until) {
        pollfd p{child.out, POLLIN, 0};
        if (poll(&p, 1, 100) <= 0) continue;
        if ((n = read(child.out, buf, sizeof(buf))) <= 0) break;
        text.append(buf, n);
      }
    }
    int run_ms = std::uniform_int_distribution<int>(5, 150)(rng);
    absl::SleepFor(absl::Milliseconds(run_ms));
    ASSERT_EQ(kill(child.pid, SIGKILL), 0);
    int status = 0;
    waitpid(child.pid, &status, 0);
    ASSERT_TRUE(WIFSIGNALED(status)) << "child exited by itself: " << status;

    // Everything it printed before dying was acknowledged.
    while ((n = read(child.out, buf, sizeof(buf))) > 0) text.append(buf, n);
    close(child.out);
    for (absl::string_view line :
         absl::StrSplit(text, '\n', absl::SkipEmpty())) {
      std::vector<absl::string_view> parts = absl::StrSplit(line, ' ');
      ASSERT_EQ(parts.size(), 2u) << line;
      uint64_t seq;
      MessageId id;
      ASSERT_TRUE(absl::SimpleAtoi(parts[0], &seq));
      ASSERT_TRUE(absl::SimpleAtoi(parts[1], &id));
      ASSERT_TRUE(acked.emplace(seq, id).second) << "seq acknowledged twice";
    }

    // Reopen (recovery) and check the whole queue.
    RocksStoreOptions options;
    options.path = path;
    options.shards = 2;
    RecoveryStats stats;
    auto store = RocksStore::Open(options, &stats);
    ASSERT_TRUE(store.ok()) << store.status();
    ListFilter all;
    all.limit = 10000000;
    auto messages = (*store)->List(all);
    ASSERT_TRUE(messages.ok()) << messages.status();
    std::map<uint64_t, MessageId> present;
    for (const StoredMessage& listed : *messages) {
      auto m = (*store)->Read(listed.id, true);
      ASSERT_TRUE(m.ok()) << "listed but unreadable: " << m.status();
      bool whole;
      uint64_t seq = SeqOf(m->body, &whole);
      ASSERT_TRUE(whole) << "torn body in message " << FormatMessageId(m->id);
      ASSERT_EQ(m->recipients.size(), 1 + seq % 3) << "recipients missing";
      ASSERT_EQ(m->envelope.recipient_count, m->recipients.size());
      ASSERT_TRUE(present.emplace(seq, m->id).second)
          << "seq " << seq << " stored twice";
    }
    for (const auto& [seq, id] : acked) {
      auto it = present.find(seq);
      ASSERT_NE(it, present.end()) << "acknowledged seq " << seq << " lost";
      ASSERT_EQ(it->second, id);
    }
    EXPECT_EQ(stats.messages, present.size());
    replayed += stats.replayed;
  }
  EXPECT_EQ(cycles, kCycles) << "ran out of time";
  EXPECT_GT(acked.size(), 100u) << "too few acknowledgements to mean much";
  EXPECT_GT(replayed, 0u) << "the spool's replay was never needed";
  std::printf(
      "%d kill cycles, %zu acknowledged messages checked, %llu groups "
      "replayed from the spool\n",
      cycles, acked.size(), static_cast<unsigned long long>(replayed));
}

}  // namespace
}  // namespace peregrine::queue
