#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <vector>

#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "mta/shard/io_backend.h"
#include "mta/shard/reactor.h"
#include "mta/shard/shard_group.h"
#include "tests/mta/shard/echo_harness.h"

namespace peregrine::shard {
namespace {

using ::testing::ElementsAre;

class BackendTest : public ::testing::TestWithParam<BackendKind> {};

TEST_P(BackendTest, TimersFireInDeadlineOrderAndCancelledOnesNever) {
  ShardGroup::Options options;
  options.shards = 1;
  options.backend = GetParam();
  ShardGroup group(options);
  ASSERT_TRUE(group.Start().ok());

  std::vector<int> fired;
  absl::Notification done;
  absl::Time start = absl::Now();
  absl::Duration last_elapsed;
  group.SubmitTo(0, [&] {
    Reactor& r = group.reactor(0);
    r.AddTimer(absl::Milliseconds(30), [&] { fired.push_back(30); });
    r.AddTimer(absl::Milliseconds(10), [&] { fired.push_back(10); });
    Reactor::TimerId cancelled =
        r.AddTimer(absl::Milliseconds(15), [&] { fired.push_back(15); });
    r.AddTimer(absl::Milliseconds(20), [&] { fired.push_back(20); });
    r.AddTimer(absl::Milliseconds(60), [&] {
      last_elapsed = absl::Now() - start;
      done.Notify();
    });
    EXPECT_TRUE(r.CancelTimer(cancelled));
    EXPECT_FALSE(r.CancelTimer(cancelled));
  });
  ASSERT_TRUE(done.WaitForNotificationWithTimeout(absl::Seconds(10)));
  group.Stop();
  group.Join();
  EXPECT_THAT(fired, ElementsAre(10, 20, 30));
  EXPECT_GE(last_elapsed, absl::Milliseconds(60));
}

// busy(): the time the loop worked, not the time it waited.
TEST_P(BackendTest, BusyCountsWorkNotIdleTime) {
  ShardGroup::Options options;
  options.shards = 1;
  options.backend = GetParam();
  ShardGroup group(options);
  ASSERT_TRUE(group.Start().ok());
  absl::Notification done;
  group.SubmitTo(0, [&] {
    absl::Time until = absl::Now() + absl::Milliseconds(80);
    while (absl::Now() < until) {  // Work, on the loop.
    }
    done.Notify();
  });
  ASSERT_TRUE(done.WaitForNotificationWithTimeout(absl::Seconds(10)));
  absl::SleepFor(absl::Milliseconds(300));  // Idle.
  absl::Notification turned;
  group.SubmitTo(0, [&] { turned.Notify(); });
  turned.WaitForNotification();
  absl::SleepFor(absl::Milliseconds(20));
  absl::Duration busy = group.reactor(0).busy();
  group.Stop();
  group.Join();
  EXPECT_GE(busy, absl::Milliseconds(80));
  EXPECT_LT(busy, absl::Milliseconds(250));  // Not the 300 ms idle.
}

// A connection rearms its idle timer on every command: cancel, then add
// one five minutes ahead. The cancelled entries are swept, so the heap
// stays near the live count, and the live timers still fire in order.
TEST_P(BackendTest, RearmedTimersDoNotGrowTheHeapAndStillFireInOrder) {
  ShardGroup::Options options;
  options.shards = 1;
  options.backend = GetParam();
  ShardGroup group(options);
  ASSERT_TRUE(group.Start().ok());

  std::vector<int> fired;
  size_t most_entries = 0;
  size_t pending_after = 0;
  absl::Notification done;
  std::vector<Reactor::TimerId> idle(100);
  group.SubmitTo(0, [&] {
    Reactor& r = group.reactor(0);
    for (auto& id : idle) id = r.AddTimer(absl::Minutes(5), [] {});
    for (int round = 0; round < 2000; ++round) {
      for (auto& id : idle) {
        EXPECT_TRUE(r.CancelTimer(id));
        id = r.AddTimer(absl::Minutes(5), [] {});
      }
      most_entries = std::max(most_entries, r.TimerHeapEntries());
    }
    r.AddTimer(absl::Milliseconds(20), [&] { fired.push_back(20); });
    r.AddTimer(absl::Milliseconds(10), [&] { fired.push_back(10); });
    r.AddTimer(absl::Milliseconds(30), [&] {
      fired.push_back(30);
      for (auto id : idle) r.CancelTimer(id);
      pending_after = r.PendingTimers();
      done.Notify();
    });
  });
  ASSERT_TRUE(done.WaitForNotificationWithTimeout(absl::Seconds(10)));
  group.Stop();
  group.Join();
  EXPECT_THAT(fired, ElementsAre(10, 20, 30));
  // 200,000 cancellations; without sweeping the heap would hold them all.
  EXPECT_LE(most_entries, 1024u + 2 * 100 + 1);
  EXPECT_EQ(pending_after, 0u);
}

// A completion that arrives after a long sleep arms its timer from the time
// it runs at: a new connection's command timeout used to count from when
// the reactor fell asleep, so it fired at once after an idle spell.
TEST_P(BackendTest, TimersArmedByACompletionAfterASleepCountFromNow) {
  ShardGroup::Options options;
  options.shards = 1;
  options.backend = GetParam();
  options.idle_spin = absl::ZeroDuration();  // Sleep in the backend at once.
  ShardGroup group(options);
  ASSERT_TRUE(group.Start().ok());
  int fds[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, fds), 0);
  char buf[16];
  absl::Notification fired;
  absl::Time woken, fired_at;
  group.SubmitTo(0, [&] {
    Reactor& r = group.reactor(0);
    r.io().Recv(fds[0], buf, sizeof(buf), [&](int) {
      woken = absl::Now();
      r.AddTimer(absl::Milliseconds(200), [&] {
        fired_at = absl::Now();
        fired.Notify();
      });
    });
  });
  absl::SleepFor(absl::Milliseconds(400));  // The reactor sleeps meanwhile.
  ASSERT_EQ(write(fds[1], "x", 1), 1);
  ASSERT_TRUE(fired.WaitForNotificationWithTimeout(absl::Seconds(10)));
  EXPECT_GE(fired_at - woken, absl::Milliseconds(190));
  group.Stop();
  group.Join();
  close(fds[0]);
  close(fds[1]);
}

TEST_P(BackendTest, CloseCancelsPendingRecvThenRunsDone) {
  auto backend = MakeIoBackend(GetParam());
  ASSERT_TRUE(backend.ok()) << backend.status();
  int sv[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
  char buf[16];
  std::vector<std::string> order;
  int recv_result = 1;
  (*backend)->Recv(sv[0], buf, sizeof(buf), [&](int r) {
    recv_result = r;
    order.push_back("recv");
  });
  // Nothing runs inline: the first Poll may not even complete it.
  EXPECT_TRUE(order.empty());
  (*backend)->Poll(absl::ZeroDuration());
  (*backend)->Close(sv[0], [&] { order.push_back("done"); });
  for (int i = 0; i < 100 && order.size() < 2; ++i) {
    (*backend)->Poll(absl::Milliseconds(10));
  }
  EXPECT_THAT(order, ElementsAre("recv", "done"));
  EXPECT_EQ(recv_result, -ECANCELED);
  ::close(sv[1]);
}

TEST_P(BackendTest, RecvSeesDataAndEndOfStream) {
  auto backend = MakeIoBackend(GetParam());
  ASSERT_TRUE(backend.ok()) << backend.status();
  int sv[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
  char buf[16] = {};
  int result = -1000;
  (*backend)->Recv(sv[0], buf, sizeof(buf), [&](int r) { result = r; });
  (*backend)->Poll(absl::ZeroDuration());
  ASSERT_EQ(::write(sv[1], "hello", 5), 5);
  for (int i = 0; i < 100 && result == -1000; ++i) {
    (*backend)->Poll(absl::Milliseconds(10));
  }
  EXPECT_EQ(result, 5);
  EXPECT_EQ(std::string(buf, 5), "hello");

  result = -1000;
  (*backend)->Recv(sv[0], buf, sizeof(buf), [&](int r) { result = r; });
  ::close(sv[1]);
  for (int i = 0; i < 100 && result == -1000; ++i) {
    (*backend)->Poll(absl::Milliseconds(10));
  }
  EXPECT_EQ(result, 0);
  bool closed = false;
  (*backend)->Close(sv[0], [&] { closed = true; });
  (*backend)->Poll(absl::ZeroDuration());
  EXPECT_TRUE(closed);
}

TEST_P(BackendTest, PollInAndPollOutReportReadiness) {
  auto backend = MakeIoBackend(GetParam());
  ASSERT_TRUE(backend.ok()) << backend.status();
  int sv[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
  int out = -1, in = -1;
  (*backend)->PollOut(sv[0], [&](int r) { out = r; });
  (*backend)->PollIn(sv[0], [&](int r) { in = r; });
  for (int i = 0; i < 100 && out < 0; ++i) {
    (*backend)->Poll(absl::Milliseconds(10));
  }
  EXPECT_TRUE(out & POLLOUT) << out;
  EXPECT_EQ(in, -1);  // Nothing to read yet.
  ASSERT_EQ(::write(sv[1], "x", 1), 1);
  for (int i = 0; i < 100 && in < 0; ++i) {
    (*backend)->Poll(absl::Milliseconds(10));
  }
  EXPECT_TRUE(in & POLLIN) << in;
  bool closed = false;
  (*backend)->Close(sv[0], [&] { closed = true; });
  for (int i = 0; i < 10 && !closed; ++i)
    (*backend)->Poll(absl::ZeroDuration());
  EXPECT_TRUE(closed);
  ::close(sv[1]);
}

TEST_P(BackendTest, EchoOverLoopbackSmallAndLargeMessages) {
  for (size_t bytes : {size_t{1024}, size_t{16384}, size_t{200000}}) {
    testing::EchoOptions options;
    options.backend = GetParam();
    options.connections = 16;
    options.message_bytes = bytes;
    options.rounds = 20;
    auto result = testing::RunEcho(options);
    ASSERT_TRUE(result.ok()) << result.status();
    EXPECT_EQ(result->messages, 16u * 20u) << bytes;
    EXPECT_EQ(result->backend,
              GetParam() == BackendKind::kEpoll ? "epoll" : "io_uring");
  }
}

TEST_P(BackendTest, EchoOnOneShard) {
  testing::EchoOptions options;
  options.backend = GetParam();
  options.shards = 1;
  options.connections = 8;
  options.rounds = 10;
  auto result = testing::RunEcho(options);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->messages, 80u);
}

// A ring that fails to set up must not close descriptors it never owned
// (it once closed fd 0, which another shard's epoll fd had taken).
TEST(UringBackendTest, FailedSetupClosesNothing) {
  int fd = ::open("/dev/null", O_RDONLY);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::dup2(fd, 0), 0);
  auto broken = MakeUringBackend(/*entries=*/0);  // EINVAL from the kernel.
  EXPECT_FALSE(broken.ok());
  EXPECT_NE(::fcntl(0, F_GETFD), -1) << "fd 0 was closed";
  EXPECT_NE(::fcntl(fd, F_GETFD), -1);
  ::close(fd);
}

INSTANTIATE_TEST_SUITE_P(Backends, BackendTest,
                         ::testing::Values(BackendKind::kIoUring,
                                           BackendKind::kEpoll),
                         [](const auto& info) {
                           return info.param == BackendKind::kEpoll
                                      ? "epoll"
                                      : "io_uring";
                         });

TEST(ShardGroupTest, AutoIdleSpinOnlyWithCoresToSpare) {
  cpu_set_t set;
  CPU_ZERO(&set);
  ASSERT_EQ(sched_getaffinity(0, sizeof(set), &set), 0);
  int cpus = CPU_COUNT(&set);
  EXPECT_EQ(AutoIdleSpin(cpus), absl::ZeroDuration());
  EXPECT_EQ(AutoIdleSpin(cpus + 3), absl::ZeroDuration());
  if (cpus > 1) {
    EXPECT_EQ(AutoIdleSpin(cpus - 1), Reactor::kDefaultIdleSpin);
  }
}

TEST(ShardGroupTest, CrossShardMessagesArriveInOrder) {
  ShardGroup::Options options;
  options.shards = 3;
  options.queue_capacity = 64;  // Small, so the backlog is exercised too.
  ShardGroup group(options);
  ASSERT_TRUE(group.Start().ok());

  constexpr int kMessages = 100000;
  std::vector<int> seen_from0, seen_from2;
  absl::Notification done;
  std::atomic<int> finished{0};
  auto send_from = [&](int from, std::vector<int>* seen) {
    group.SubmitTo(from, [&, from, seen] {
      EXPECT_EQ(group.CurrentShard(), from);
      for (int i = 0; i < kMessages; ++i) {
        group.SubmitTo(1, [&, i, seen] {
          EXPECT_EQ(group.CurrentShard(), 1);
          seen->push_back(i);
          if (i == kMessages - 1 && finished.fetch_add(1) == 1) done.Notify();
        });
      }
    });
  };
  send_from(0, &seen_from0);
  send_from(2, &seen_from2);
  ASSERT_TRUE(done.WaitForNotificationWithTimeout(absl::Seconds(30)));
  group.Stop();
  group.Join();
  ASSERT_EQ(seen_from0.size(), static_cast<size_t>(kMessages));
  ASSERT_EQ(seen_from2.size(), static_cast<size_t>(kMessages));
  for (int i = 0; i < kMessages; ++i) {
    ASSERT_EQ(seen_from0[i], i);
    ASSERT_EQ(seen_from2[i], i);
  }
}

TEST(ShardGroupTest, FullQueueRefusesTrySubmitAndBacklogsSubmitInOrder) {
  ShardGroup::Options options;
  options.shards = 2;
  options.queue_capacity = 8;
  ShardGroup group(options);
  ASSERT_TRUE(group.Start().ok());

  // Hold shard 1 so that nothing drains its queue.
  absl::Notification blocked, release;
  group.SubmitTo(1, [&] {
    blocked.Notify();
    release.WaitForNotification();
  });
  ASSERT_TRUE(blocked.WaitForNotificationWithTimeout(absl::Seconds(10)));

  std::vector<int> order;  // Written only on shard 1.
  absl::Notification filled, all_ran;
  int accepted = 0;
  size_t backlog_after = 0;
  bool try_after_backlog = true;
  group.SubmitTo(0, [&] {
    for (int i = 0; i < 20; ++i) {
      ShardGroup::Task task = [&, i] { order.push_back(i); };
      if (!group.TrySubmitTo(1, task)) break;
      ++accepted;
    }
    for (int i = accepted; i < 30; ++i) {
      group.SubmitTo(1, [&, i] {
        order.push_back(i);
        if (i == 29) all_ran.Notify();
      });
    }
    backlog_after = group.Backlog(1);
    ShardGroup::Task late = [] {};
    try_after_backlog = group.TrySubmitTo(1, late);
    filled.Notify();
  });
  ASSERT_TRUE(filled.WaitForNotificationWithTimeout(absl::Seconds(10)));
  EXPECT_EQ(accepted, 8);
  EXPECT_EQ(backlog_after, 30u - 8u);
  EXPECT_FALSE(try_after_backlog);  // Never jumps ahead of the backlog.
  release.Notify();
  ASSERT_TRUE(all_ran.WaitForNotificationWithTimeout(absl::Seconds(10)));
  size_t backlog_end = 1;
  absl::Notification checked;
  group.SubmitTo(0, [&] {
    backlog_end = group.Backlog(1);
    checked.Notify();
  });
  ASSERT_TRUE(checked.WaitForNotificationWithTimeout(absl::Seconds(10)));
  group.Stop();
  group.Join();
  EXPECT_EQ(backlog_end, 0u);
  ASSERT_EQ(order.size(), 30u);
  for (int i = 0; i < 30; ++i) EXPECT_EQ(order[i], i);
}

TEST(ShardGroupTest, SubmitToOwnShardRunsInlineAndPostWorksFromOutside) {
  ShardGroup::Options options;
  options.shards = 2;
  ShardGroup group(options);
  ASSERT_TRUE(group.Start().ok());
  EXPECT_EQ(group.CurrentShard(), -1);
  absl::Notification done;
  bool inline_ran = false;
  group.SubmitTo(1, [&] {
    group.SubmitTo(1, [&] { inline_ran = true; });
    EXPECT_TRUE(inline_ran);  // Ran before SubmitTo returned.
    done.Notify();
  });
  ASSERT_TRUE(done.WaitForNotificationWithTimeout(absl::Seconds(10)));
  group.Stop();
  group.Join();
}

TEST(ShardGroupTest, IdleShardsSleepAndWakeForWork) {
  ShardGroup::Options options;
  options.shards = 2;
  ShardGroup group(options);
  ASSERT_TRUE(group.Start().ok());
  // Idle for a while: reactors sleep in the backend, then must still wake.
  absl::SleepFor(absl::Milliseconds(50));
  for (int round = 0; round < 50; ++round) {
    absl::Notification done;
    group.SubmitTo(0, [&] { group.SubmitTo(1, [&] { done.Notify(); }); });
    ASSERT_TRUE(done.WaitForNotificationWithTimeout(absl::Seconds(5)))
        << "round " << round;
    absl::SleepFor(absl::Milliseconds(1));
  }
  group.Stop();
  group.Join();
}

}  // namespace
}  // namespace peregrine::shard
