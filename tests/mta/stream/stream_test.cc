// Stream over a socketpair on a real shard: bytes both ways in the clear,
// a TLS handshake between a client and a server stream, a peer that is not
// speaking TLS, and the lifetime rule: nothing reaches the handler after
// Close(), whose `then` runs last.
#include "mta/stream/stream.h"

#include <sys/socket.h>
#include <unistd.h>

#include <memory>
#include <mutex>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "mta/shard/shard_group.h"

namespace peregrine {
namespace {

// Records what the stream says; everything runs on the shard.
class Recorder : public Stream::Handler {
 public:
  void OnData(absl::string_view plaintext) override {
    data += std::string(plaintext);
    if (stream == nullptr) return;
    stream->Flush();  // Handshake answers the stream queued.
    stream->Read();
  }
  void OnEnd(int error) override { ended = error == 0 ? 1 : error; }
  void OnTlsUp() override { tls_up = true; }
  void OnTlsError(const absl::Status& status, bool, bool first_bytes,
                  absl::string_view) override {
    tls_error = std::string(status.message());
    first = first_bytes;
  }
  void OnWritten(int result) override {
    ++writes;
    if (result < 0) write_error = result;
    if (stream != nullptr) stream->Flush();
  }
  void Dead() { calls_after_close = true; }

  Stream* stream = nullptr;
  std::string data;
  int ended = 0;
  bool tls_up = false;
  std::string tls_error;
  bool first = false;
  int writes = 0;
  int write_error = 0;
  bool calls_after_close = false;
};

class StreamTest : public ::testing::Test {
 protected:
  void SetUp() override {
    shard::ShardGroup::Options options;
    options.shards = 1;
    group_ = std::make_unique<shard::ShardGroup>(options);
    ASSERT_TRUE(group_->Start().ok());
    int fds[2];
    ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, fds), 0);
    a_fd_ = fds[0];
    b_fd_ = fds[1];
  }
  void TearDown() override {
    group_->Stop();
    group_->Join();
  }
  // Runs `fn` on the shard and waits for it.
  void OnShard(std::function<void()> fn) {
    absl::Notification done;
    group_->SubmitTo(0, [&] {
      fn();
      done.Notify();
    });
    done.WaitForNotification();
  }
  // Waits (up to 5 s) until `what` holds, looked at on the shard.
  bool Eventually(std::function<bool()> what) {
    absl::Time deadline = absl::Now() + absl::Seconds(5);
    while (absl::Now() < deadline) {
      bool yes = false;
      OnShard([&] { yes = what(); });
      if (yes) return true;
      absl::SleepFor(absl::Milliseconds(2));
    }
    return false;
  }
  void CloseBoth(Stream* a, Stream* b) {
    absl::Notification a_done, b_done;
    OnShard([&] {
      a->Close([&] { a_done.Notify(); });
      b->Close([&] { b_done.Notify(); });
    });
    a_done.WaitForNotification();
    b_done.WaitForNotification();
  }

  std::unique_ptr<shard::ShardGroup> group_;
  int a_fd_ = -1;
  int b_fd_ = -1;
};

TEST_F(StreamTest, BytesBothWaysInTheClearThenTheEnd) {
  Recorder ra, rb;
  std::unique_ptr<Stream> a, b;
  OnShard([&] {
    a = std::make_unique<Stream>(group_->reactor(0), a_fd_, ra);
    b = std::make_unique<Stream>(group_->reactor(0), b_fd_, rb);
    ra.stream = a.get();
    rb.stream = b.get();
    a->Read();
    b->Read();
    ASSERT_TRUE(a->Send("hello ").ok());
    ASSERT_TRUE(a->Send("world").ok());
    a->Flush();
    ASSERT_TRUE(b->Send(std::string(100000, 'x')).ok());
    b->Flush();
  });
  ASSERT_TRUE(Eventually([&] { return rb.data == "hello world"; }));
  ASSERT_TRUE(Eventually([&] { return ra.data.size() == 100000; }));
  OnShard([&] {
    EXPECT_EQ(a->unsent(), 0u);
    EXPECT_FALSE(a->tls_up());
  });
  // One side closes: the other hears the end.
  absl::Notification closed;
  OnShard([&] { a->Close([&] { closed.Notify(); }); });
  closed.WaitForNotification();
  ASSERT_TRUE(Eventually([&] { return rb.ended == 1; }));
  absl::Notification b_closed;
  OnShard([&] { b->Close([&] { b_closed.Notify(); }); });
  b_closed.WaitForNotification();
}

TEST_F(StreamTest, TlsBetweenAClientAndAServerStream) {
  std::string dir =
      absl::StrCat(::testing::TempDir(), "/stream-tls-", getpid());
  auto made = tls::EnsureSelfSigned(dir, "mx.test");
  ASSERT_TRUE(made.ok()) << made.status();
  auto server_ctx = tls::ServerContext::FromFiles(made->first, made->second);
  ASSERT_TRUE(server_ctx.ok()) << server_ctx.status();
  auto client_ctx = tls::ClientContext::Create();
  ASSERT_TRUE(client_ctx.ok());
  Recorder rc, rs;
  std::unique_ptr<Stream> client, server;
  OnShard([&] {
    client = std::make_unique<Stream>(group_->reactor(0), a_fd_, rc);
    server = std::make_unique<Stream>(group_->reactor(0), b_fd_, rs);
    rc.stream = client.get();
    rs.stream = server.get();
    // Before TLS: in the clear, as "220 Ready to start TLS" is.
    ASSERT_TRUE(server->Send("220 go ahead\r\n").ok());
    server->Flush();
    server->StartTlsServer(*server_ctx);
    server->Read();
    client->Read();
  });
  ASSERT_TRUE(Eventually([&] { return rc.data == "220 go ahead\r\n"; }));
  OnShard([&] {
    ASSERT_TRUE(client->StartTlsClient(*client_ctx, "mx.test", false).ok());
    client->Flush();
  });
  ASSERT_TRUE(Eventually([&] { return rc.tls_up && rs.tls_up; }));
  OnShard([&] {
    ASSERT_TRUE(client->Send("EHLO client.test\r\n").ok());
    client->Flush();
    ASSERT_TRUE(server->Send("250 mx.test\r\n").ok());
    server->Flush();
    EXPECT_EQ(client->tls()->Version(), "TLSv1.3");
  });
  ASSERT_TRUE(Eventually([&] { return rs.data == "EHLO client.test\r\n"; }));
  ASSERT_TRUE(
      Eventually([&] { return rc.data == "220 go ahead\r\n250 mx.test\r\n"; }));
  CloseBoth(client.get(), server.get());
}

TEST_F(StreamTest, APeerNotSpeakingTlsIsAnErrorOnItsFirstBytes) {
  std::string dir =
      absl::StrCat(::testing::TempDir(), "/stream-tls-bad-", getpid());
  auto made = tls::EnsureSelfSigned(dir, "mx.test");
  ASSERT_TRUE(made.ok());
  auto server_ctx = tls::ServerContext::FromFiles(made->first, made->second);
  ASSERT_TRUE(server_ctx.ok());
  Recorder rs;
  std::unique_ptr<Stream> server;
  OnShard([&] {
    server = std::make_unique<Stream>(group_->reactor(0), b_fd_, rs);
    rs.stream = server.get();
    server->StartTlsServer(*server_ctx);
    server->Read();
  });
  const char kPlain[] = "EHLO plain.test\r\n";
  ASSERT_EQ(::send(a_fd_, kPlain, sizeof(kPlain) - 1, MSG_NOSIGNAL),
            static_cast<ssize_t>(sizeof(kPlain) - 1));
  ASSERT_TRUE(Eventually([&] { return !rs.tls_error.empty(); }));
  OnShard([&] {
    EXPECT_TRUE(rs.first);
    EXPECT_TRUE(rs.data.empty());
    server->Read();  // Refused: TLS failed, nothing more is read.
    EXPECT_FALSE(server->reading());
  });
  absl::Notification closed;
  OnShard([&] { server->Close([&] { closed.Notify(); }); });
  closed.WaitForNotification();
  ::close(a_fd_);
}

TEST_F(StreamTest, NothingReachesTheHandlerAfterClose) {
  // A read and a large write in flight when Close() comes: neither
  // completion reaches the handler, and `then` runs after both.
  Recorder ra;
  std::unique_ptr<Stream> a;
  bool then_ran = false;
  absl::Notification closed;
  OnShard([&] {
    a = std::make_unique<Stream>(group_->reactor(0), a_fd_, ra);
    a->Read();
    ASSERT_TRUE(a->Send(std::string(4 << 20, 'y')).ok());  // Fills the pair.
    a->Flush();
    EXPECT_TRUE(a->writing());
    a->Close([&] {
      then_ran = true;
      closed.Notify();
    });
    EXPECT_TRUE(a->closing());
    a->Read();  // Ignored once closing.
    a->Flush();
    EXPECT_FALSE(a->reading());
  });
  // May find the other end closed already: no SIGPIPE for that.
  (void)::send(b_fd_, "late", 4, MSG_NOSIGNAL);
  closed.WaitForNotification();
  OnShard([&] {
    EXPECT_TRUE(then_ran);
    EXPECT_TRUE(ra.data.empty());
    EXPECT_EQ(ra.writes, 0);
    EXPECT_EQ(ra.ended, 0);
  });
  ::close(b_fd_);
}

}  // namespace
}  // namespace peregrine
