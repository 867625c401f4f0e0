#include "tests/mta/shard/echo_harness.h"

#include <atomic>
#include <cstring>
#include <memory>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "mta/shard/connection.h"
#include "mta/shard/shard_group.h"
#include "mta/shard/socket.h"

namespace peregrine::shard::testing {
namespace {

// Server side: reads what comes and writes it back, until end of stream.
class EchoServerConn {
 public:
  EchoServerConn(Reactor& reactor, int fd, size_t buf_bytes)
      : conn_(reactor, fd), buf_(buf_bytes) {}

  void Start() { ReadMore(); }

 private:
  void ReadMore() {
    conn_.Read(buf_.data(), buf_.size(), [this](int n) {
      if (n <= 0) return Finish();
      conn_.WriteAll(buf_.data(), static_cast<size_t>(n), [this](int w) {
        if (w < 0) return Finish();
        ReadMore();
      });
    });
  }
  void Finish() {
    conn_.Close([this] { delete this; });
  }

  Connection conn_;
  std::vector<char> buf_;
};

class EchoServer {
 public:
  EchoServer(Reactor& reactor, int listen_fd, size_t buf_bytes)
      : reactor_(reactor), listen_fd_(listen_fd), buf_bytes_(buf_bytes) {}
  void Start() {
    reactor_.io().Accept(listen_fd_, [this](int fd) {
      if (fd < 0) return;  // Cancelled at shutdown.
      (new EchoServerConn(reactor_, fd, buf_bytes_))->Start();
      Start();
    });
  }
  void Stop(absl::AnyInvocable<void()> done) {
    reactor_.io().Close(listen_fd_, std::move(done));
  }

 private:
  Reactor& reactor_;
  int listen_fd_;
  size_t buf_bytes_;
};

struct ClientShared {
  std::atomic<uint64_t> messages{0};
  std::atomic<int> remaining{0};
  std::atomic<bool> failed{false};
  std::string error;  // Written once, by the first failure.
  absl::Notification done;

  void Fail(std::string why) {
    if (!failed.exchange(true)) error = std::move(why);
    Finish();
  }
  void Finish() {
    if (remaining.fetch_sub(1) == 1) done.Notify();
  }
};

// Client side: sends one message, reads until the whole echo is back,
// checks it, and repeats `rounds` times.
class EchoClient {
 public:
  EchoClient(Reactor& reactor, int fd, const EchoOptions& options, int index,
             ClientShared& shared)
      : conn_(reactor, fd),
        out_(options.message_bytes),
        in_(options.message_bytes),
        rounds_(options.rounds),
        shared_(shared) {
    for (size_t i = 0; i < out_.size(); ++i) {
      out_[i] = static_cast<char>('a' + (i + index) % 26);
    }
  }

  void Start(const SocketAddress& server) {
    conn_.reactor().io().Connect(conn_.fd(), server, [this](int rc) {
      if (rc < 0) return Fail(absl::StrCat("connect: ", std::strerror(-rc)));
      SendOne();
    });
  }

 private:
  void SendOne() {
    received_ = 0;
    conn_.WriteAll(out_.data(), out_.size(), [this](int w) {
      if (w < 0) return Fail(absl::StrCat("send: ", std::strerror(-w)));
    });
    ReadMore();
  }
  void ReadMore() {
    conn_.Read(in_.data() + received_, in_.size() - received_, [this](int n) {
      if (n <= 0) return Fail("server closed or recv failed");
      received_ += static_cast<size_t>(n);
      if (received_ < in_.size()) return ReadMore();
      if (std::memcmp(in_.data(), out_.data(), in_.size()) != 0) {
        return Fail("echo differs from what was sent");
      }
      shared_.messages.fetch_add(1, std::memory_order_relaxed);
      if (--rounds_ > 0) return SendOne();
      conn_.Close([this] {
        shared_.Finish();
        delete this;
      });
    });
  }
  void Fail(std::string why) {
    if (conn_.closing()) return;
    conn_.Close([this, why = std::move(why)]() mutable {
      shared_.Fail(std::move(why));
      delete this;
    });
  }

  Connection conn_;
  std::vector<char> out_;
  std::vector<char> in_;
  size_t received_ = 0;
  int rounds_;
  ClientShared& shared_;
};

}  // namespace

absl::StatusOr<EchoResult> RunEcho(const EchoOptions& options) {
  ShardGroup::Options group_options;
  group_options.shards = options.shards;
  group_options.backend = options.backend;
  ShardGroup group(group_options);
  absl::Status started = group.Start();
  if (!started.ok()) return started;

  auto address = SocketAddress::Parse("127.0.0.1:0");
  auto listen_fd = Listen(*address, /*reuse_port=*/false);
  if (!listen_fd.ok()) return listen_fd.status();
  auto bound = LocalAddress(*listen_fd);
  if (!bound.ok()) return bound.status();

  auto server = std::make_unique<EchoServer>(group.reactor(0), *listen_fd,
                                             options.message_bytes);
  group.SubmitTo(0, [&server] { server->Start(); });

  ClientShared shared;
  shared.remaining = options.connections;
  int client_shard = group.size() - 1;
  absl::Time start = absl::Now();
  group.SubmitTo(client_shard, [&] {
    Reactor& reactor = group.reactor(client_shard);
    for (int i = 0; i < options.connections; ++i) {
      auto fd = NewStreamSocket(AF_INET);
      if (!fd.ok()) {
        shared.Fail(std::string(fd.status().message()));
        continue;
      }
      (new EchoClient(reactor, *fd, options, i, shared))->Start(*bound);
    }
  });
  bool finished = shared.done.WaitForNotificationWithTimeout(options.deadline);
  absl::Duration elapsed = absl::Now() - start;

  absl::Notification server_closed;
  group.SubmitTo(0, [&] { server->Stop([&] { server_closed.Notify(); }); });
  server_closed.WaitForNotificationWithTimeout(absl::Seconds(5));
  group.Stop();
  group.Join();
  if (!finished) {
    return absl::DeadlineExceededError(absl::StrCat(
        "echo did not finish in ", absl::FormatDuration(options.deadline), " (",
        shared.messages.load(), " messages done)"));
  }
  if (shared.failed) return absl::InternalError(shared.error);

  EchoResult result;
  result.backend = std::string(group.backend_name());
  result.messages = shared.messages.load();
  result.bytes = result.messages * options.message_bytes;
  result.elapsed = elapsed;
  return result;
}

}  // namespace peregrine::shard::testing
