// The reception driver (SmtpConnection) against clients that reset at every
// point of a dialog, with a short command timeout so that timers fire
// around the closes, and a queue whose acknowledgements come late from
// another thread. The lifetime rule in mta/reception.h is what is tested:
// every connection is freed (the open count returns to zero), no callback
// runs on a freed connection (ASan, in the sanitizer pass), and the shard
// still serves afterwards. On both I/O backends.
#include "mta/reception.h"

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <fstream>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "dkim/signing_table.h"
#include "gtest/gtest.h"
#include "mta/shard/shard_group.h"
#include "mta/shard/socket.h"
#include "mta/signer.h"
#include "tests/queue/null_store.h"

namespace peregrine {
namespace {

// Acknowledges each message `delay` later, from a thread of its own (as the
// committer does).
class SlowStore : public queue::NullStore {
 public:
  explicit SlowStore(absl::Duration delay) : delay_(delay) {}
  ~SlowStore() override {
    for (std::thread& t : threads_) t.join();
  }
  void Enqueue(queue::NewMessage m, EnqueueDone done) override {
    absl::Duration delay = delay_;
    uint64_t id = ++next_id_;
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& r : m.recipients) queued.push_back(r.address);
    threads_.emplace_back([delay, id, done = std::move(done)]() mutable {
      absl::SleepFor(delay);
      done(id);
    });
  }

 private:
  const absl::Duration delay_;
  std::mutex mu_;
  std::vector<std::thread> threads_;

 public:
  std::vector<std::string> queued;  // Every recipient queued (under mu_).
};

constexpr char kDialog[] =
    "EHLO client.test\r\nMAIL FROM:<a@sender.test>\r\nRCPT TO:<b@dest.test>\r\n"
    "DATA\r\nSubject: x\r\n\r\nbody\r\n.\r\nNOOP\r\nQUIT\r\n";

class ReceptionTest : public ::testing::TestWithParam<shard::BackendKind> {
 protected:
  void SetUp() override {
    shard::ShardGroup::Options options;
    options.shards = 1;
    options.backend = GetParam();
    group_ = std::make_unique<shard::ShardGroup>(options);
    context_.queue = &store_;
    context_.trusted_networks = {*shard::Cidr::Parse("127.0.0.0/8")};
    context_.hostname = "test.example";
    context_.command_timeout = absl::Milliseconds(50);
    auto fd = shard::Listen(*shard::SocketAddress::Parse("127.0.0.1:0"), false);
    ASSERT_TRUE(fd.ok()) << fd.status();
    listen_fd_ = *fd;
    port_ = shard::LocalAddress(listen_fd_)->port();
    ASSERT_TRUE(group_
                    ->Start([this](shard::Reactor& r) {
                      reactor_ = &r;
                      Arm();
                    })
                    .ok());
  }
  void TearDown() override {
    // As the daemon does at its drain timeout: no connection outlives its
    // shard.
    absl::Notification closed;
    group_->SubmitTo(0, [&] {
      SmtpConnection::CloseAll();
      closed.Notify();
    });
    closed.WaitForNotification();
    EXPECT_TRUE(AllFreed());
    group_->Stop();
    group_->Join();
    close(listen_fd_);
  }
  void Arm() {
    reactor_->io().Accept(listen_fd_, [this](int c) {
      if (c < 0) return;
      SmtpConnection::Start(*reactor_, c, context_, open_,
                            ListenerKind::kRelay);
      Arm();
    });
  }
  int Connect() {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(port_);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
    return fd;
  }
  // Sends `flood` to a client socket that reads almost nothing, until the
  // daemon stops reading (a send blocks for 200 ms); returns what went in.
  static size_t FloodWithoutReading(int fd, const std::string& flood) {
    int small = 4096;
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
    timeval tv{0, 200000};
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    size_t sent = 0;
    while (sent < flood.size()) {
      ssize_t n = write(fd, flood.data() + sent, flood.size() - sent);
      if (n <= 0) break;  // The daemon stopped reading.
      sent += static_cast<size_t>(n);
    }
    return sent;
  }
  static void Reset(int fd) {
    linger l{1, 0};
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
    close(fd);  // RST.
  }
  // Waits until every connection has been freed.
  bool AllFreed() {
    absl::Time until = absl::Now() + absl::Seconds(10);
    while (open_.load() > 0 && absl::Now() < until) {
      absl::SleepFor(absl::Milliseconds(5));
    }
    return open_.load() == 0;
  }
  // A whole dialog still works: the shard serves.
  void StillServes() {
    int fd = Connect();
    ASSERT_EQ(write(fd, kDialog, sizeof(kDialog) - 1),
              static_cast<ssize_t>(sizeof(kDialog) - 1));
    std::string got;
    char buf[4096];
    timeval tv{5, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    ssize_t n;
    while ((n = read(fd, buf, sizeof(buf))) > 0) got.append(buf, n);
    close(fd);
    EXPECT_NE(got.find("250 2.0.0 Ok: queued"), std::string::npos) << got;
    EXPECT_NE(got.find("221"), std::string::npos) << got;
  }

  SlowStore store_{absl::Milliseconds(20)};
  ReceptionContext context_;
  std::unique_ptr<shard::ShardGroup> group_;
  shard::Reactor* reactor_ = nullptr;
  std::atomic<int> open_{0};
  int listen_fd_ = -1;
  uint16_t port_ = 0;
};

TEST_P(ReceptionTest, ResetOrCloseAtEveryPointOfADialog) {
  const std::string dialog = kDialog;
  for (size_t cut = 0; cut <= dialog.size(); ++cut) {
    int fd = Connect();
    if (cut > 0) {
      ASSERT_EQ(write(fd, dialog.data(), cut), static_cast<ssize_t>(cut));
    }
    // Now, while a reply is being written, while the queue write is in
    // flight, or after the timer fired.
    absl::SleepFor(absl::Microseconds((cut * 7919) % 3000));
    if (cut % 3 == 2) {
      close(fd);  // FIN.
    } else {
      Reset(fd);
    }
  }
  ASSERT_TRUE(AllFreed()) << open_.load() << " connections never freed";
  absl::SleepFor(absl::Milliseconds(150));  // Past every timeout.
  StillServes();
  EXPECT_TRUE(AllFreed());
}

TEST_P(ReceptionTest, ResetWhileTheSignatureIsMadeOnAnotherThread) {
  // Every message signed (rsa-2048, about 0.6 ms) by a Signer thread: the
  // client goes at every point, the answer comes back to a connection that
  // waited for it, and every connection is freed.
  std::string key = std::string(getenv("TEST_TMPDIR")) + "/rsa.pem";
  std::ofstream(key)
      << (*dkim::PrivateKey::Generate(dkim::KeyType::kRsa, 2048))->ToPem();
  dkim::Policy policy;
  policy.keys.push_back({"sender.test", "s1", key, {"*"}});
  auto table = dkim::SigningTable::Load(policy);
  Signer signer(1);
  context_.dkim = [table] { return table; };
  context_.signer = &signer;
  const std::string dialog =
      "EHLO client.test\r\nMAIL FROM:<a@sender.test>\r\n"
      "RCPT TO:<b@dest.test>\r\nDATA\r\nFrom: a@sender.test\r\n"
      "Subject: x\r\n\r\nbody\r\n.\r\nQUIT\r\n";
  for (size_t cut = dialog.find("DATA"); cut <= dialog.size(); cut += 3) {
    int fd = Connect();
    ASSERT_EQ(write(fd, dialog.data(), cut), static_cast<ssize_t>(cut));
    absl::SleepFor(absl::Microseconds((cut * 7919) % 1500));
    Reset(fd);
  }
  ASSERT_TRUE(AllFreed()) << open_.load() << " connections never freed";
  StillServes();
  signer.Stop();  // As the daemon does, while the shard still runs.
  EXPECT_TRUE(AllFreed());
}

TEST_P(ReceptionTest, FloodWithoutReadingThenResetPastTheTimeout) {
  // More than loopback's socket buffers hold (several MiB each way).
  std::string flood;
  for (int i = 0; i < 4000000; ++i) flood += "NOOP\r\n";
  for (int round = 0; round < 5; ++round) {
    int fd = Connect();
    size_t sent = FloodWithoutReading(fd, flood);
    EXPECT_LT(sent, flood.size()) << "backpressure never stopped the flood";
    Reset(fd);
  }
  ASSERT_TRUE(AllFreed());
  absl::SleepFor(absl::Milliseconds(150));
  StillServes();
}

TEST_P(ReceptionTest, ANeverReadingClientIsClosedAtTheCommandTimeout) {
  std::string flood;
  for (int i = 0; i < 200000; ++i) flood += "EHLO a\r\n";
  int fd = Connect();
  FloodWithoutReading(fd, flood);
  absl::Time until = absl::Now() + absl::Seconds(5);
  while (open_.load() == 0 && absl::Now() < until) {
    absl::SleepFor(absl::Milliseconds(1));
  }
  // Not reading: the daemon closes it once the timeout passes.
  ASSERT_TRUE(AllFreed()) << "a connection that never reads stayed open";
  close(fd);
}

// Mail for a bounce domain is taken from a client that may not relay, and
// handed to the bounce reader, never queued; in a mixed transaction only
// the other recipients are queued. The reader answers late, from another
// thread, and clients reset while it reads.
TEST_P(ReceptionTest, BounceDomainMailIsReadNotQueued) {
  context_.trusted_networks.clear();  // This client may not relay.
  std::mutex mu;
  std::vector<std::string> taken;
  std::vector<std::thread> readers;
  context_.bounce_domain = [](absl::string_view d) {
    return d == "bounces.test";
  };
  context_.read_bounce =
      [&](std::string message, std::vector<std::string> rcpts, std::string,
          absl::AnyInvocable<void(absl::Status, std::string)> done) {
        std::lock_guard<std::mutex> l(mu);
        for (auto& r : rcpts) taken.push_back(r);
        readers.emplace_back([done = std::move(done)]() mutable {
          absl::SleepFor(absl::Milliseconds(20));
          done(absl::OkStatus(), "dsn");
        });
      };
  auto dialog = [&](const std::string& rcpts) {
    int fd = Connect();
    std::string in =
        absl::StrCat("EHLO mx.elsewhere.test\r\nMAIL FROM:<>\r\n", rcpts,
                     "DATA\r\nSubject: x\r\n\r\nbody\r\n.\r\nQUIT\r\n");
    EXPECT_EQ(write(fd, in.data(), in.size()), static_cast<ssize_t>(in.size()));
    std::string got;
    char buf[4096];
    timeval tv{5, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    ssize_t n;
    while ((n = read(fd, buf, sizeof(buf))) > 0) got.append(buf, n);
    close(fd);
    return got;
  };
  std::string only = dialog("RCPT TO:<b+1.0.x.a=b@bounces.test>\r\n");
  EXPECT_NE(only.find("250 2.0.0 Ok: queued as bounce"), std::string::npos)
      << only;
  // A relay attempt next to it is still refused.
  std::string mixed =
      dialog("RCPT TO:<c@bounces.test>\r\nRCPT TO:<x@elsewhere.test>\r\n");
  EXPECT_NE(mixed.find("554 5.7.1 <x@elsewhere.test>: Relay access denied"),
            std::string::npos)
      << mixed;
  // Resets while the reader is busy.
  for (int i = 0; i < 20; ++i) {
    int fd = Connect();
    std::string in =
        "EHLO a\r\nMAIL FROM:<>\r\nRCPT TO:<d@bounces.test>\r\nDATA\r\n"
        "x\r\n.\r\n";
    EXPECT_EQ(write(fd, in.data(), in.size()), static_cast<ssize_t>(in.size()));
    absl::SleepFor(absl::Microseconds(i * 1500));
    Reset(fd);
  }
  ASSERT_TRUE(AllFreed());
  {
    std::lock_guard<std::mutex> l(mu);
    for (std::thread& t : readers) t.join();
    readers.clear();
    ASSERT_GE(taken.size(), 2u);
    EXPECT_EQ(taken[0], "b+1.0.x.a=b@bounces.test");
    EXPECT_EQ(taken[1], "c@bounces.test");
  }
  EXPECT_TRUE(store_.queued.empty());
  // Trusted again: a mixed transaction queues the others, with their
  // addresses intact.
  context_.trusted_networks = {*shard::Cidr::Parse("127.0.0.0/8")};
  std::string both =
      dialog("RCPT TO:<e@bounces.test>\r\nRCPT TO:<x@elsewhere.test>\r\n");
  EXPECT_NE(both.find("250 2.0.0 Ok: queued as"), std::string::npos) << both;
  {
    std::lock_guard<std::mutex> l(mu);
    for (std::thread& t : readers) t.join();
  }
  absl::SleepFor(absl::Milliseconds(50));
  EXPECT_EQ(store_.queued, std::vector<std::string>{"x@elsewhere.test"});
}

INSTANTIATE_TEST_SUITE_P(Backends, ReceptionTest,
                         ::testing::Values(shard::BackendKind::kIoUring,
                                           shard::BackendKind::kEpoll),
                         [](const auto& info) {
                           return info.param == shard::BackendKind::kIoUring
                                      ? std::string("io_uring")
                                      : std::string("epoll");
                         });

}  // namespace
}  // namespace peregrine
