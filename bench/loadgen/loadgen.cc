// peregrine-loadgen: an SMTP load generator on Peregrine's own reactor.
//
// Concurrent sessions (lanes) send a fixed number of messages in all, at
// most --per-connection per connection, each of --size bytes to
// --recipients recipients spread over --domains domains, with or without
// PIPELINING. It reports accepted messages per second and the latency of
// each acknowledgement (the end of DATA to its reply) as p50, p90, p99,
// p99.9 and max; --json writes the same as JSON.
//
//   bazel run -c opt //bench/loadgen -- --to 127.0.0.1:2525 --sessions 20
//       --messages 20000 --size 10240 --domains 100
//
// Lifetime: each Lane lives on one reactor for the whole run, is owned by
// main(), and is freed after the shard group is joined. A lane closes its
// stream before it reports done; a callback after that finds `closed_`
// and returns.
#include <algorithm>
#include <atomic>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "mta/shard/address.h"
#include "mta/shard/shard_group.h"
#include "mta/shard/socket.h"
#include "mta/stream/stream.h"

namespace peregrine::loadgen {
namespace {

struct Options {
  std::string to = "127.0.0.1:25";
  int sessions = 20;
  int64_t messages = 1000;
  int per_connection = 100;
  int size = 10240;
  int recipients = 1;
  int domains = 100;
  bool pipelining = false;
  int threads = 1;
  std::string sender = "loadgen@src.test";
  std::string json;
};

// Shared by every lane.
struct Run {
  Options options;
  shard::SocketAddress to;
  std::atomic<int64_t> next{0};  // Messages handed to lanes so far.
  std::atomic<int64_t> accepted{0};
  std::atomic<int64_t> refused{0};
  std::atomic<int64_t> connection_errors{0};
  // Messages whose connection ended before their answer.
  std::atomic<int64_t> interrupted{0};
  std::atomic<int> lanes_left{0};
  absl::Notification done;
};

class Lane : private Stream::Handler {
 public:
  Lane(shard::Reactor& reactor, Run& run, int id)
      : reactor_(reactor), run_(run), id_(id) {}

  void Start() { Connect(); }
  const std::vector<double>& latencies_ms() const { return latencies_ms_; }

 private:
  enum class Step { kGreeting, kEhlo, kMail, kData, kDot, kQuit };

  void Connect() {
    if (run_.next.load() >= run_.options.messages) return Finish();
    auto fd = shard::NewStreamSocket(run_.to.family());
    if (!fd.ok()) return Fail();
    stream_ = std::make_unique<Stream>(reactor_, *fd,
                                       static_cast<Stream::Handler&>(*this));
    closed_ = false;
    in_.clear();
    sent_here_ = 0;
    reactor_.io().Connect(*fd, run_.to, [this](int result) {
      if (closed_) return;
      if (result < 0) return Fail();
      step_ = Step::kGreeting;
      stream_->Read();
    });
  }

  // Takes the next message number, or false when all are taken.
  bool TakeMessage() {
    int64_t n = run_.next.fetch_add(1);
    if (n >= run_.options.messages) return false;
    number_ = n;
    return true;
  }

  void Send(absl::string_view text) {
    (void)stream_->Send(text);
    stream_->Flush();
  }

  void StartMessage() {
    if (sent_here_ >= run_.options.per_connection || !TakeMessage()) {
      step_ = Step::kQuit;
      return Send("QUIT\r\n");
    }
    ++sent_here_;
    counted_ = false;
    commands_.clear();
    commands_.push_back(
        absl::StrCat("MAIL FROM:<", run_.options.sender, ">\r\n"));
    for (int r = 0; r < run_.options.recipients; ++r) {
      int64_t domain = (number_ + r) % std::max(1, run_.options.domains);
      commands_.push_back(
          absl::StrCat("RCPT TO:<user", r, "@d", domain, ".test>\r\n"));
    }
    if (run_.options.pipelining) commands_.push_back("DATA\r\n");
    failed_ = false;
    step_ = Step::kMail;
    if (run_.options.pipelining) {
      // RFC 2920: the whole envelope and DATA in one write.
      waiting_ = static_cast<int>(commands_.size());
      next_command_ = commands_.size();
      std::string all;
      for (const std::string& c : commands_) all += c;
      return Send(all);
    }
    waiting_ = 1;
    next_command_ = 1;
    Send(commands_[0]);
  }

  void SendBody() {
    if (body_.empty()) {
      body_ = absl::StrCat("From: <", run_.options.sender,
                           ">\r\nTo: <user0@d0.test>\r\nSubject: loadgen\r\n"
                           "Message-ID: <lane",
                           id_, "@loadgen>\r\n\r\n");
      std::string line(76, 'x');
      line += "\r\n";
      while (body_.size() + line.size() + 3 <
             static_cast<size_t>(run_.options.size)) {
        body_ += line;
      }
      body_ += ".\r\n";
    }
    step_ = Step::kDot;
    dot_at_ = absl::Now();
    Send(body_);
  }

  // One whole reply: "250 ok" or the last line of a multi-line one.
  void OnReply(int code) {
    switch (step_) {
      case Step::kGreeting:
        if (code != 220) return Fail();
        step_ = Step::kEhlo;
        return Send("EHLO loadgen.test\r\n");
      case Step::kEhlo:
        if (code != 250) return Fail();
        return StartMessage();
      case Step::kMail:
        // MAIL and RCPT (and, pipelined, DATA): any refusal spoils it.
        if (code >= 400 && !(run_.options.pipelining && code == 354)) {
          failed_ = true;
        }
        if (--waiting_ > 0) return;
        if (next_command_ < commands_.size()) {
          waiting_ = 1;
          return Send(commands_[next_command_++]);
        }
        if (run_.options.pipelining) {
          if (code != 354) {  // DATA refused: the server ended it.
            Count(false);
            return StartMessage();
          }
          if (!failed_) return SendBody();
          // Data the server wants after a refused recipient: end it empty.
          step_ = Step::kDot;
          dot_at_ = absl::Now();
          return Send(".\r\n");
        }
        if (failed_) {
          Count(false);
          step_ = Step::kData;
          data_is_rset_ = true;
          return Send("RSET\r\n");
        }
        step_ = Step::kData;
        data_is_rset_ = false;
        return Send("DATA\r\n");
      case Step::kData:
        if (data_is_rset_) return StartMessage();
        if (code != 354) {
          Count(false);
          return StartMessage();
        }
        return SendBody();
      case Step::kDot:
        latencies_ms_.push_back(
            absl::ToDoubleMilliseconds(absl::Now() - dot_at_));
        Count(code / 100 == 2 && !failed_);
        return StartMessage();
      case Step::kQuit:
        return Close([this] { Connect(); });
    }
  }

  void OnData(absl::string_view bytes) override {
    in_.append(bytes.data(), bytes.size());
    size_t start = 0;
    for (;;) {
      size_t eol = in_.find("\r\n", start);
      if (eol == std::string::npos) break;
      absl::string_view line(in_.data() + start, eol - start);
      start = eol + 2;
      if (line.size() >= 4 && line[3] == '-') continue;  // More follows.
      int code = 0;
      if (line.size() >= 3 && absl::ascii_isdigit(line[0])) {
        code = (line[0] - '0') * 100 + (line[1] - '0') * 10 + (line[2] - '0');
      }
      in_.erase(0, start);
      start = 0;
      OnReply(code);
      if (closed_) return;
    }
    in_.erase(0, start);
    if (!closed_) stream_->Read();
  }
  void OnEnd(int) override {
    if (closed_) return;
    if (step_ != Step::kQuit) run_.connection_errors.fetch_add(1);
    if (!counted_ &&
        (step_ == Step::kMail || step_ == Step::kData || step_ == Step::kDot)) {
      run_.interrupted.fetch_add(1);
      counted_ = true;
    }
    Close([this] { Connect(); });
  }
  void OnTlsUp() override {}
  void OnTlsError(const absl::Status&, bool, bool, absl::string_view) override {
    Fail();
  }
  void OnWritten(int result) override {
    if (closed_) return;
    if (result < 0) return Fail();
    stream_->Flush();  // What was queued while that write was in flight.
  }

  // The message's answer, once.
  void Count(bool accepted) {
    if (counted_) return;
    counted_ = true;
    (accepted ? run_.accepted : run_.refused).fetch_add(1);
  }

  void Close(absl::AnyInvocable<void()> then) {
    if (closed_) return;
    closed_ = true;
    stream_->Close([this, then = std::move(then)]() mutable {
      // The stream's last callback has run: free it on the next turn.
      reactor_.Defer([this, then = std::move(then)]() mutable {
        stream_.reset();
        then();
      });
    });
  }

  void Fail() {
    run_.connection_errors.fetch_add(1);
    if (++failures_ > 100) {
      // The server is not there: stop this lane rather than spin.
      if (stream_ != nullptr && !closed_) return Close([this] { Finish(); });
      return Finish();
    }
    if (stream_ != nullptr && !closed_) {
      return Close([this] {
        reactor_.AddTimer(absl::Milliseconds(10), [this] { Connect(); });
      });
    }
    reactor_.AddTimer(absl::Milliseconds(10), [this] { Connect(); });
  }

  void Finish() {
    if (finished_) return;
    finished_ = true;
    if (run_.lanes_left.fetch_sub(1) == 1) run_.done.Notify();
  }

  shard::Reactor& reactor_;
  Run& run_;
  const int id_;
  std::unique_ptr<Stream> stream_;
  bool closed_ = true;
  bool finished_ = false;
  std::string in_;
  std::string body_;
  Step step_ = Step::kGreeting;
  int waiting_ = 0;
  std::vector<std::string> commands_;
  size_t next_command_ = 0;
  bool failed_ = false;
  bool data_is_rset_ = false;
  int sent_here_ = 0;
  int failures_ = 0;
  int64_t number_ = 0;
  bool counted_ = true;  // The current message has its answer.
  absl::Time dot_at_;
  std::vector<double> latencies_ms_;
};

double Percentile(const std::vector<double>& sorted, double p) {
  if (sorted.empty()) return 0;
  size_t k = static_cast<size_t>(p / 100 * (sorted.size() - 1) + 0.5);
  return sorted[std::min(k, sorted.size() - 1)];
}

}  // namespace
}  // namespace peregrine::loadgen

int main(int argc, char** argv) {
  using namespace peregrine;           // NOLINT: a main.
  using namespace peregrine::loadgen;  // NOLINT
  Options o;
  CLI::App app("SMTP load generator on Peregrine's reactor");
  app.add_option("--to", o.to, "Server address, ip:port");
  app.add_option("--sessions", o.sessions, "Concurrent sessions");
  app.add_option("--messages", o.messages, "Messages in all");
  app.add_option("--per-connection", o.per_connection,
                 "Messages per connection at most");
  app.add_option("--size", o.size, "Bytes per message");
  app.add_option("--recipients", o.recipients, "Recipients per message");
  app.add_option("--domains", o.domains, "Recipient domains d0..dN-1.test");
  app.add_flag("--pipelining", o.pipelining,
               "MAIL, RCPT and DATA in one write (RFC 2920)");
  app.add_option("--threads", o.threads, "Reactor threads");
  app.add_option("--sender", o.sender, "Envelope sender");
  app.add_option("--json", o.json, "Write the results here as JSON too");
  CLI11_PARSE(app, argc, argv);
  if (o.sessions < 1 || o.messages < 1 || o.size < 64 || o.recipients < 1 ||
      o.threads < 1 || o.per_connection < 1) {
    std::cerr << "loadgen: sessions, messages, recipients, threads and "
                 "per-connection must be at least 1, size at least 64\n";
    return 2;
  }
  auto to = shard::SocketAddress::Parse(o.to);
  if (!to.ok()) {
    std::cerr << "loadgen: --to " << o.to << ": " << to.status().message()
              << "\n";
    return 2;
  }
  Run run;
  run.options = o;
  run.to = *to;
  run.lanes_left = o.sessions;

  shard::ShardGroup::Options go;
  go.shards = o.threads;
  go.pin_threads = false;
  shard::ShardGroup group(go);
  std::vector<std::unique_ptr<Lane>> lanes(o.sessions);
  absl::Time start = absl::Now();
  absl::Status started = group.Start([&](shard::Reactor& reactor) {
    for (int i = reactor.id(); i < o.sessions; i += o.threads) {
      lanes[i] = std::make_unique<Lane>(reactor, run, i);
      lanes[i]->Start();
    }
  });
  if (!started.ok()) {
    std::cerr << "loadgen: " << started.message() << "\n";
    return 1;
  }
  run.done.WaitForNotification();
  double seconds = absl::ToDoubleSeconds(absl::Now() - start);
  group.Stop();
  group.Join();

  std::vector<double> all;
  for (const auto& lane : lanes) {
    all.insert(all.end(), lane->latencies_ms().begin(),
               lane->latencies_ms().end());
  }
  std::sort(all.begin(), all.end());
  double rate = run.accepted.load() / std::max(seconds, 1e-9);
  const double p50 = Percentile(all, 50), p90 = Percentile(all, 90),
               p99 = Percentile(all, 99), p999 = Percentile(all, 99.9),
               max = all.empty() ? 0.0 : all.back();
  const int64_t accepted = run.accepted.load(), refused = run.refused.load(),
                interrupted = run.interrupted.load(),
                errors = run.connection_errors.load();
  std::cout << absl::StrFormat(
      "accepted %d, refused %d, interrupted %d, connection errors %d in "
      "%.2f s: %.0f msgs/s; acknowledgement latency ms p50 %.2f p90 %.2f "
      "p99 %.2f p99.9 %.2f max %.2f\n",
      accepted, refused, interrupted, errors, seconds, rate, p50, p90, p99,
      p999, max);
  if (!o.json.empty()) {
    std::ofstream f(o.json);
    f << absl::StrFormat(
        "{\"accepted\": %d, \"refused\": %d, \"interrupted\": %d, "
        "\"connection_errors\": %d, \"seconds\": %.3f, \"msgs_per_s\": "
        "%.1f, \"ack_latency_ms\": {\"p50\": %.3f, \"p90\": %.3f, "
        "\"p99\": %.3f, \"p99_9\": %.3f, \"max\": %.3f}}\n",
        accepted, refused, interrupted, errors, seconds, rate, p50, p90, p99,
        p999, max);
  }
  // Every message answered or cut off: the run is complete.
  return accepted + refused + interrupted >= o.messages ? 0 : 1;
}
