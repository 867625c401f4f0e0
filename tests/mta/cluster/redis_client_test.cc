// RedisClient on a real shard against a real redis-server: pipelined
// answers in order, AUTH with an ACL user (and a refused one), TLS with
// the server's certificate verified, fail-over to the next address, and
// the hostile cases: the server killed (fast failures while backing off,
// then reconnected), a server that never answers (the command timeout), one
// that answers garbage (a protocol error), the bound on waiting commands,
// and the client freed with commands in flight.
#include "mta/cluster/redis_client.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdlib>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "mta/shard/shard_group.h"
#include "tests/mta/cluster/redis_server.h"

namespace peregrine::cluster {
namespace {

using Result = absl::StatusOr<RedisValue>;

RedisEndpoint Loopback(int port, std::string host = "127.0.0.1") {
  return {std::move(host),
          *shard::SocketAddress::Parse(absl::StrCat("127.0.0.1:", port))};
}

// A listening socket on a loopback port the kernel picked (a server that
// is not Redis): its fd, or -1.
int ListenOnLoopback(int* port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(a);
  if (bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0 ||
      listen(fd, 8) != 0 ||
      getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
    close(fd);
    return -1;
  }
  *port = ntohs(a.sin_port);
  return fd;
}

class RedisClientTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!testing::RedisServer::Installed()) {
      GTEST_SKIP() << "redis-server is missing (scripts/install-deps.sh)";
    }
    shard::ShardGroup::Options options;
    options.shards = 1;
    group_ = std::make_unique<shard::ShardGroup>(options);
    ASSERT_TRUE(group_->Start().ok());
  }
  void TearDown() override {
    if (group_ == nullptr) return;
    On([this] { client_.reset(); });
    group_->Stop();
    group_->Join();
  }
  // Runs `fn` on the shard and waits for it.
  void On(absl::AnyInvocable<void()> fn) {
    absl::Notification done;
    group_->SubmitTo(0, [&] {
      fn();
      done.Notify();
    });
    done.WaitForNotification();
  }
  void Make(RedisOptions options) {
    On([&] {
      client_ = std::make_unique<RedisClient>(group_->reactor(0), options);
    });
  }
  // One command, waited for.
  Result Call(std::vector<std::string> args) {
    absl::Notification done;
    Result result = absl::UnknownError("no answer");
    group_->SubmitTo(0, [&] {
      client_->Command(std::move(args), [&](Result r) {
        result = std::move(r);
        done.Notify();
      });
    });
    done.WaitForNotification();
    return result;
  }
  // Calls until an answer is OK or `limit` passes.
  Result CallUntilOk(std::vector<std::string> args,
                     absl::Duration limit = absl::Seconds(5)) {
    absl::Time end = absl::Now() + limit;
    Result r = Call(args);
    while (!r.ok() && absl::Now() < end) {
      absl::SleepFor(absl::Milliseconds(50));
      r = Call(args);
    }
    return r;
  }

  std::unique_ptr<shard::ShardGroup> group_;
  std::unique_ptr<RedisClient> client_;
};

TEST_F(RedisClientTest, PipelinedAnswersComeInOrder) {
  testing::RedisServer server;
  ASSERT_TRUE(server.Start());
  Make({.endpoints = {Loopback(server.port())}});
  constexpr int kCommands = 2000;
  std::vector<Result> results(kCommands, absl::UnknownError("none"));
  absl::Notification all;
  int answered = 0;
  On([&] {
    for (int i = 0; i < kCommands; ++i) {
      client_->Command({"INCR", "counter"}, [&, i](Result r) {
        results[i] = std::move(r);
        if (++answered == kCommands) all.Notify();
      });
    }
  });
  ASSERT_TRUE(all.WaitForNotificationWithTimeout(absl::Seconds(10)));
  for (int i = 0; i < kCommands; ++i) {
    ASSERT_TRUE(results[i].ok()) << results[i].status();
    EXPECT_EQ(results[i]->integer, i + 1);
  }
  Result nil = Call({"GET", "missing"});
  ASSERT_TRUE(nil.ok());
  EXPECT_EQ(nil->type, RedisValue::Type::kNil);
  ASSERT_TRUE(Call({"RPUSH", "list", "a", std::string("b\0c", 3)}).ok());
  Result list = Call({"LRANGE", "list", "0", "-1"});
  ASSERT_TRUE(list.ok());
  ASSERT_EQ(list->elements.size(), 2u);
  EXPECT_EQ(list->elements[1].str, std::string("b\0c", 3));  // Binary safe.
  Result error = Call({"INCR", "list"});
  ASSERT_FALSE(error.ok());
  EXPECT_TRUE(absl::StrContains(error.status().message(), "WRONGTYPE"))
      << error.status();
  EXPECT_TRUE(Call({"PING"}).ok());  // An error reply keeps the connection.
}

TEST_F(RedisClientTest, AuthenticatesAsAnAclUserAndSaysWhenRefused) {
  testing::RedisServer server;
  server.server_args = {"--user", "default", "off", "--user", "peregrine",
                        "on",     ">s3cret", "~*",  "+@all"};
  server.cli_args = {"--user", "peregrine", "--pass", "s3cret",
                     "--no-auth-warning"};
  ASSERT_TRUE(server.Start());
  Make({.endpoints = {Loopback(server.port())},
        .user = "peregrine",
        .password = "s3cret"});
  Result pong = Call({"PING"});
  ASSERT_TRUE(pong.ok()) << pong.status();
  EXPECT_EQ(pong->str, "PONG");
  On([&] { client_.reset(); });

  Make({.endpoints = {Loopback(server.port())},
        .user = "peregrine",
        .password = "wrong"});
  Result refused = Call({"PING"});
  ASSERT_FALSE(refused.ok());
  EXPECT_TRUE(absl::StrContains(refused.status().message(), "AUTH refused"))
      << refused.status();
}

TEST_F(RedisClientTest, KilledServerFailsFastThenReconnects) {
  testing::RedisServer server;
  ASSERT_TRUE(server.Start());
  Make({.endpoints = {Loopback(server.port())}});
  ASSERT_TRUE(Call({"SET", "k", "v"}).ok());
  server.Kill();
  Result lost = Call({"GET", "k"});
  ASSERT_FALSE(lost.ok());
  EXPECT_EQ(lost.status().code(), absl::StatusCode::kUnavailable);
  // While it backs off a command fails at once, without a connect.
  absl::Time before = absl::Now();
  Result fast = Call({"GET", "k"});
  EXPECT_FALSE(fast.ok());
  EXPECT_LT(absl::Now() - before, absl::Milliseconds(100));
  ASSERT_TRUE(server.Start());
  Result back = CallUntilOk({"PING"});
  EXPECT_TRUE(back.ok()) << back.status();
  On([&] { EXPECT_TRUE(client_->connected()); });
}

TEST_F(RedisClientTest, FailsOverToTheNextAddress) {
  testing::RedisServer server;
  ASSERT_TRUE(server.Start());
  Make({.endpoints = {Loopback(testing::FreePort()), Loopback(server.port())}});
  Result r = CallUntilOk({"PING"});
  EXPECT_TRUE(r.ok()) << r.status();
}

TEST_F(RedisClientTest, ServerThatNeverAnswersTimesOut) {
  // Accepts (the kernel's backlog) and never reads.
  int port = 0;
  int fd = ListenOnLoopback(&port);
  ASSERT_GE(fd, 0);
  Make({.endpoints = {Loopback(port)},
        .command_timeout = absl::Milliseconds(200)});
  absl::Time before = absl::Now();
  Result r = Call({"PING"});
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(absl::StrContains(r.status().message(), "no reply within"))
      << r.status();
  EXPECT_LT(absl::Now() - before, absl::Seconds(3));
  close(fd);
}

TEST_F(RedisClientTest, GarbageIsAProtocolError) {
  int port = 0;
  int fd = ListenOnLoopback(&port);
  ASSERT_GE(fd, 0);
  std::thread peer([fd] {
    int c = accept(fd, nullptr, nullptr);
    if (c < 0) return;
    const char junk[] = "?this is not RESP\r\n";
    (void)!write(c, junk, sizeof(junk) - 1);
    usleep(500000);
    close(c);
  });
  Make({.endpoints = {Loopback(port)}});
  Result r = Call({"PING"});
  peer.join();
  close(fd);
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(absl::StrContains(r.status().message(), "protocol error"))
      << r.status();
}

TEST_F(RedisClientTest, WaitingCommandsAreBounded) {
  testing::RedisServer server;
  ASSERT_TRUE(server.Start());
  Make({.endpoints = {Loopback(server.port())}, .max_pending = 10});
  int refused = 0, answered = 0;
  absl::Notification all;
  On([&] {
    for (int i = 0; i < 15; ++i) {
      client_->Command({"PING"}, [&](Result r) {
        if (!r.ok() &&
            r.status().code() == absl::StatusCode::kResourceExhausted) {
          ++refused;
        } else if (r.ok()) {
          ++answered;
        }
        if (refused + answered == 15) all.Notify();
      });
    }
  });
  ASSERT_TRUE(all.WaitForNotificationWithTimeout(absl::Seconds(5)));
  EXPECT_EQ(refused, 5);
  EXPECT_EQ(answered, 10);
}

TEST_F(RedisClientTest, FreedWithCommandsInFlightCallsNothing) {
  testing::RedisServer server;
  ASSERT_TRUE(server.Start());
  Make({.endpoints = {Loopback(server.port())}});
  ASSERT_TRUE(Call({"PING"}).ok());
  bool called = false;
  On([&] {
    for (int i = 0; i < 100; ++i) {
      client_->Command({"PING"}, [&](Result) { called = true; });
    }
    client_.reset();  // The answers come to a closed socket.
  });
  absl::SleepFor(absl::Milliseconds(200));
  On([] {});
  EXPECT_FALSE(called);
}

TEST_F(RedisClientTest, SpeaksTlsAndVerifiesTheServer) {
  testing::RedisServer server;
  std::string dir = server.dir();
  std::string cmd = absl::StrCat(
      "openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=localhost "
      "-addext subjectAltName=DNS:localhost -keyout ",
      dir, "/key.pem -out ", dir, "/cert.pem 2>/dev/null");
  ASSERT_EQ(system(cmd.c_str()), 0);
  server.server_args = {"--port",
                        "0",
                        "--tls-port",
                        std::to_string(server.port()),
                        "--tls-cert-file",
                        dir + "/cert.pem",
                        "--tls-key-file",
                        dir + "/key.pem",
                        "--tls-auth-clients",
                        "no"};
  server.cli_args = {"--tls", "--cacert", dir + "/cert.pem"};
  ASSERT_TRUE(server.Start());
  auto context = tls::ClientContext::Create(dir + "/cert.pem");
  ASSERT_TRUE(context.ok()) << context.status();
  Make({.endpoints = {Loopback(server.port(), "localhost")}, .tls = *context});
  Result r = Call({"SET", "over", "tls"});
  ASSERT_TRUE(r.ok()) << r.status();
  Result got = Call({"GET", "over"});
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(got->str, "tls");
  On([&] { client_.reset(); });

  // The name does not match the certificate: refused.
  Make({.endpoints = {Loopback(server.port(), "redis.example")},
        .tls = *context});
  Result wrong = Call({"PING"});
  ASSERT_FALSE(wrong.ok());
  EXPECT_TRUE(absl::StrContains(wrong.status().message(), "TLS"))
      << wrong.status();
}

TEST(ResolveRedisAddresses, ParsesAndSaysWhatIsWrong) {
  auto ok =
      ResolveRedisAddresses({"127.0.0.1:7000", "[::1]:7001", "127.0.0.1"});
  ASSERT_TRUE(ok.ok()) << ok.status();
  ASSERT_EQ(ok->size(), 3u);
  EXPECT_EQ((*ok)[0].address.ToString(), "127.0.0.1:7000");
  EXPECT_EQ((*ok)[1].address.ToString(), "[::1]:7001");
  EXPECT_EQ((*ok)[2].address.port(), 6379);
  for (const char* bad : {"127.0.0.1:0", "127.0.0.1:99999", "[::1:7000",
                          ":7000", "127.0.0.1:x"}) {
    auto r = ResolveRedisAddresses({bad});
    EXPECT_FALSE(r.ok()) << bad;
    EXPECT_TRUE(absl::StrContains(r.status().message(), bad)) << r.status();
  }
}

}  // namespace
}  // namespace peregrine::cluster
