// RedisClient: one connection to Redis, driven by a shard's reactor.
//
// Commands are pipelined: Command() formats the request and queues it;
// replies are read (resp.h: hiredis's formatter and reader) and answered
// in order. The bytes travel through our own
// Stream, so TLS is the same OpenSSL code as SMTP's (Debian 12's hiredis,
// 0.14, has no TLS and its async API owns the socket; we use its RESP
// reader and formatter, not its I/O).
//
// Connecting: to the first address, then the next on each failure (a list
// of addresses is the fail-over: a replica promoted behind another name);
// TLS when asked, then AUTH (Redis 6 ACL user and password) pipelined
// ahead of the first command. A failure (refused, timed out, reset, a
// protocol error, no reply within `command_timeout`) fails every command
// waiting and closes the connection; the next command reconnects, no
// sooner than a back-off (100 ms doubling to 5 s). While backing off a
// command fails at once: callers fall back (the local share of a limit),
// they never wait on Redis.
//
// Bounds: at most `max_pending` commands queued or in flight (more fail at
// once), replies of at most 64 MiB.
//
// Threads: the client belongs to one reactor; every call and every `done`
// are on its thread. `done` is never called from within Command().
// Lifetime: the owner frees the client on the reactor's thread, any time:
// the destructor closes the socket (the stream frees itself once its
// callbacks have run) and drops waiting commands without calling them; a
// late connect completion or timer finds the client gone and does nothing.
#pragma once

#include <atomic>
#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <vector>

#include "absl/functional/any_invocable.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "mta/cluster/resp.h"
#include "mta/shard/address.h"
#include "mta/shard/reactor.h"
#include "mta/stream/stream.h"
#include "tls/tls.h"

namespace peregrine::cluster {

struct RedisEndpoint {
  std::string host;  // As configured: for TLS (SNI and verification).
  shard::SocketAddress address;
};

struct RedisOptions {
  std::vector<RedisEndpoint> endpoints;
  std::string user;  // Empty: AUTH with the password alone (or none).
  std::string password;
  // TLS with `tls` set (verified against `tls_verify`'s trust store).
  std::shared_ptr<const tls::ClientContext> tls;
  bool tls_verify = true;
  absl::Duration connect_timeout = absl::Seconds(1);
  absl::Duration command_timeout = absl::Milliseconds(500);
  size_t max_pending = 10000;
};

// "host:port", "[v6]:port" or "host" (port 6379), resolved now (blocking:
// at start-up, not on a shard).
absl::StatusOr<std::vector<RedisEndpoint>> ResolveRedisAddresses(
    const std::vector<std::string>& addresses);

// Counts of several clients together, read from any thread.
struct RedisCounters {
  std::atomic<uint64_t> sent{0};
  std::atomic<uint64_t> failed{0};
};

class RedisClient : private Stream::Handler {
 public:
  using Done = absl::AnyInvocable<void(absl::StatusOr<RedisValue>)>;

  // `counters` (optional) outlives the client and counts its commands too.
  RedisClient(shard::Reactor& reactor, RedisOptions options,
              RedisCounters* counters = nullptr);
  ~RedisClient() override;
  RedisClient(const RedisClient&) = delete;
  RedisClient& operator=(const RedisClient&) = delete;

  void Command(std::vector<std::string> args, Done done);

  bool connected() const { return state_ == State::kReady; }
  // Commands sent to Redis (or queued to), and those that failed.
  uint64_t sent() const { return own_.sent.load(std::memory_order_relaxed); }
  uint64_t failed() const {
    return own_.failed.load(std::memory_order_relaxed);
  }
  const std::string& last_error() const { return last_error_; }  // Its thread.

 private:
  enum class State { kDown, kConnecting, kTls, kReady };
  struct Waiting {
    Done done;
    absl::Time deadline;
  };

  void Connect();
  void Connected();
  void Ready();
  // Fails every waiting command with `why`, closes, and backs off.
  void Fail(std::string why);
  void CloseStream();
  void ArmTimer();
  void Send(std::string request);

  // Stream::Handler.
  void OnData(absl::string_view plaintext) override;
  void OnEnd(int error) override;
  void OnTlsUp() override;
  void OnTlsError(const absl::Status& status, bool handshake_done, bool first,
                  absl::string_view bytes) override;
  void OnWritten(int result) override;

  shard::Reactor& reactor_;
  const RedisOptions options_;
  State state_ = State::kDown;
  size_t endpoint_ = 0;
  std::unique_ptr<Stream> stream_;
  std::unique_ptr<RespReader> reader_;
  std::string unsent_;           // Formatted while not yet connected.
  std::deque<Waiting> waiting_;  // Sent or queued, in order.
  int auth_replies_ = 0;         // AUTH replies to skip, first.
  absl::Time retry_at_ = absl::InfinitePast();
  absl::Duration backoff_ = absl::ZeroDuration();
  shard::Reactor::TimerId timer_ = 0;
  void Count(size_t sent, size_t failed);
  RedisCounters own_;
  RedisCounters* const counters_;
  std::string last_error_;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

}  // namespace peregrine::cluster
