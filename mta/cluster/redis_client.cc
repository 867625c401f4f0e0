#include "mta/cluster/redis_client.h"

#include <netdb.h>
#include <string.h>

#include <algorithm>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "mta/shard/socket.h"

namespace peregrine::cluster {
namespace {

constexpr absl::Duration kFirstBackoff = absl::Milliseconds(100);
constexpr absl::Duration kMaxBackoff = absl::Seconds(5);

}  // namespace

absl::StatusOr<std::vector<RedisEndpoint>> ResolveRedisAddresses(
    const std::vector<std::string>& addresses) {
  std::vector<RedisEndpoint> out;
  for (const std::string& text : addresses) {
    std::string host = text;
    std::string port = "6379";
    absl::string_view rest = text;
    if (absl::ConsumePrefix(&rest, "[")) {
      size_t close = rest.find(']');
      if (close == absl::string_view::npos) {
        return absl::InvalidArgumentError(absl::StrCat(
            "redis address \"", text, "\": a \"[\" without its \"]\""));
      }
      host = std::string(rest.substr(0, close));
      rest.remove_prefix(close + 1);
      if (absl::ConsumePrefix(&rest, ":")) port = std::string(rest);
    } else if (size_t colon = text.rfind(':');
               colon != std::string::npos && text.find(':') == colon) {
      host = text.substr(0, colon);
      port = text.substr(colon + 1);
    }
    int number = 0;
    if (host.empty() || !absl::SimpleAtoi(port, &number) || number < 1 ||
        number > 65535) {
      return absl::InvalidArgumentError(
          absl::StrCat("redis address \"", text,
                       "\": expected HOST, HOST:PORT or [IPV6]:PORT"));
    }
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    addrinfo* found = nullptr;
    int rc = getaddrinfo(host.c_str(), port.c_str(), &hints, &found);
    if (rc != 0) {
      return absl::UnavailableError(
          absl::StrCat("redis address \"", text, "\": ", gai_strerror(rc)));
    }
    for (addrinfo* a = found; a != nullptr; a = a->ai_next) {
      out.push_back({host, shard::SocketAddress::FromSockaddr(a->ai_addr,
                                                              a->ai_addrlen)});
    }
    freeaddrinfo(found);
  }
  if (out.empty()) {
    return absl::InvalidArgumentError("redis: no address configured");
  }
  return out;
}

RedisClient::RedisClient(shard::Reactor& reactor, RedisOptions options,
                         RedisCounters* counters)
    : reactor_(reactor), options_(std::move(options)), counters_(counters) {}

void RedisClient::Count(size_t sent, size_t failed) {
  for (RedisCounters* c : {&own_, counters_}) {
    if (c == nullptr) continue;
    c->sent.fetch_add(sent, std::memory_order_relaxed);
    c->failed.fetch_add(failed, std::memory_order_relaxed);
  }
}

RedisClient::~RedisClient() {
  *alive_ = false;
  if (timer_ != 0) reactor_.CancelTimer(timer_);
  CloseStream();
}

void RedisClient::Command(std::vector<std::string> args, Done done) {
  absl::Status refused;
  if (waiting_.size() >= options_.max_pending) {
    refused = absl::ResourceExhaustedError(
        absl::StrCat("redis: ", waiting_.size(), " commands already waiting"));
  } else if (state_ == State::kDown && reactor_.Now() < retry_at_) {
    refused = absl::UnavailableError(absl::StrCat("redis: ", last_error_));
  }
  if (!refused.ok()) {
    Count(0, 1);
    reactor_.Defer([alive = alive_, done = std::move(done),
                    refused = std::move(refused)]() mutable {
      if (*alive) done(refused);
    });
    return;
  }
  std::string request = FormatCommand(args);
  Count(1, 0);
  absl::Duration timeout = options_.command_timeout;
  if (state_ != State::kReady) timeout += options_.connect_timeout;
  waiting_.push_back({std::move(done), reactor_.Now() + timeout});
  if (state_ == State::kReady) {
    Send(std::move(request));
  } else {
    unsent_ += request;
    if (state_ == State::kDown) Connect();
  }
  ArmTimer();
}

void RedisClient::Connect() {
  state_ = State::kConnecting;
  // A failure now is told from the loop: `done` is never called from
  // within Command().
  auto fail_later = [this](std::string why) {
    reactor_.Defer([this, alive = alive_, why = std::move(why)] {
      if (*alive && state_ == State::kConnecting && stream_ == nullptr) {
        Fail(why);
      }
    });
  };
  if (options_.endpoints.empty()) return fail_later("no address configured");
  const RedisEndpoint& e =
      options_.endpoints[endpoint_ % options_.endpoints.size()];
  auto fd = shard::NewStreamSocket(e.address.family());
  if (!fd.ok()) return fail_later(std::string(fd.status().message()));
  stream_ = std::make_unique<Stream>(reactor_, *fd,
                                     static_cast<Stream::Handler&>(*this));
  reader_ = std::make_unique<RespReader>();
  Stream* stream = stream_.get();
  reactor_.io().Connect(
      *fd, e.address,
      [this, alive = alive_, stream, where = e.address.ToString()](int result) {
        if (!*alive || stream_.get() != stream || stream->closing() ||
            state_ != State::kConnecting) {
          return;
        }
        if (result < 0) {
          return Fail(absl::StrCat("cannot connect to ", where, ": ",
                                   strerror(-result)));
        }
        Connected();
      });
}

void RedisClient::Connected() {
  if (options_.tls == nullptr) return Ready();
  state_ = State::kTls;
  const RedisEndpoint& e =
      options_.endpoints[endpoint_ % options_.endpoints.size()];
  absl::Status s =
      stream_->StartTlsClient(options_.tls, e.host, options_.tls_verify);
  if (!s.ok()) return Fail(absl::StrCat("TLS: ", s.message()));
  stream_->Flush();
  stream_->Read();
}

void RedisClient::Ready() {
  state_ = State::kReady;
  backoff_ = absl::ZeroDuration();
  std::string first;
  if (!options_.password.empty()) {
    std::vector<std::string> auth = {"AUTH"};
    if (!options_.user.empty()) auth.push_back(options_.user);
    auth.push_back(options_.password);
    first = FormatCommand(auth);
    auth_replies_ = 1;
  }
  first += unsent_;
  unsent_.clear();
  if (!first.empty()) Send(std::move(first));
  if (stream_ != nullptr) stream_->Read();
}

void RedisClient::Send(std::string request) {
  absl::Status s = stream_->Send(request);
  if (!s.ok()) return Fail(absl::StrCat("TLS: ", s.message()));
  stream_->Flush();
}

void RedisClient::ArmTimer() {
  if (timer_ != 0 || waiting_.empty()) return;
  timer_ = reactor_.AddTimerAt(waiting_.front().deadline, [this] {
    timer_ = 0;
    if (waiting_.empty()) return;
    if (waiting_.front().deadline <= reactor_.Now()) {
      return Fail(
          state_ == State::kReady
              ? absl::StrCat("no reply within ",
                             absl::FormatDuration(options_.command_timeout))
              : "cannot connect: timed out");
    }
    ArmTimer();
  });
}

void RedisClient::CloseStream() {
  reader_.reset();
  if (stream_ == nullptr) return;
  Stream* stream = stream_.release();
  stream->Close([stream] { delete stream; });
}

void RedisClient::Fail(std::string why) {
  last_error_ = why;
  std::deque<Waiting> waiting = std::move(waiting_);
  waiting_.clear();
  unsent_.clear();
  auth_replies_ = 0;
  CloseStream();
  state_ = State::kDown;
  backoff_ = std::clamp(backoff_ * 2, kFirstBackoff, kMaxBackoff);
  retry_at_ = reactor_.Now() + backoff_;
  ++endpoint_;  // Fail-over: the next address next time.
  Count(0, waiting.size());
  auto alive = alive_;
  for (Waiting& w : waiting) {
    w.done(absl::UnavailableError(absl::StrCat("redis: ", why)));
    if (!*alive) return;
  }
}

void RedisClient::OnData(absl::string_view plaintext) {
  if (reader_ == nullptr) return;
  if (plaintext.empty() && stream_ != nullptr) stream_->Flush();  // TLS.
  if (!reader_->Feed(plaintext)) return Fail(reader_->error());
  auto alive = alive_;
  while (true) {
    absl::StatusOr<std::optional<RedisValue>> reply = reader_->Next();
    if (!reader_->error().empty()) return Fail(reader_->error());
    if (reply.ok() && !reply->has_value()) break;
    if (auth_replies_ > 0) {
      --auth_replies_;
      if (!reply.ok()) {
        return Fail(absl::StrCat("AUTH refused: ", reply.status().message()));
      }
      continue;
    }
    if (waiting_.empty()) return Fail("a reply no command asked for");
    Done done = std::move(waiting_.front().done);
    waiting_.pop_front();
    if (reply.ok()) {
      done(**std::move(reply));
    } else {
      done(reply.status());
    }
    if (!*alive || reader_ == nullptr) return;
  }
  if (stream_ != nullptr) stream_->Read();
}

void RedisClient::OnEnd(int error) {
  Fail(error == 0 ? "Redis closed the connection"
                  : absl::StrCat("read: ", strerror(-error)));
}

void RedisClient::OnTlsUp() { Ready(); }

void RedisClient::OnTlsError(const absl::Status& status, bool, bool,
                             absl::string_view) {
  Fail(absl::StrCat("TLS: ", status.message()));
}

void RedisClient::OnWritten(int result) {
  if (result < 0) return Fail(absl::StrCat("write: ", strerror(-result)));
  if (stream_ != nullptr && stream_->unsent() > 0) stream_->Flush();
}

}  // namespace peregrine::cluster
