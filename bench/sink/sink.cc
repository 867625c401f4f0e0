// peregrine-sink: an SMTP sink on Peregrine's own reactor, for benchmarks.
//
// It accepts and discards at line rate, or answers a configured mix per
// recipient domain: some share of 4xx, 5xx, 421-and-disconnect, and a delay
// before the reply to the end of the data. It counts accepted messages in
// all and per domain, and writes them (with a count per second) to
// --stats FILE as JSON every quarter second and at exit (SIGTERM, SIGINT).
//
//   bazel run -c opt //bench/sink -- --listen 127.0.0.1:2526 \
//       --mix 'd1.test=5xx:0.1,4xx:0.2;d2.test=delay:50ms'
//
// Lifetime: a Session is owned by itself from accept to close, on the
// shard that accepted it; it frees itself on the next turn after its
// stream's last callback, and a timer of its (a delayed reply) is
// cancelled before that.
//
// It offers CHUNKING (RFC 3030: BDAT) as large receivers do, unless
// --no-chunking; the message then comes as "BDAT n LAST" instead of DATA.
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "mta/shard/address.h"
#include "mta/shard/shard_group.h"
#include "mta/shard/socket.h"
#include "mta/stream/stream.h"

namespace peregrine::sink {
namespace {

// What one domain gets: shares of each refusal, the rest accepted.
struct Mix {
  double temporary = 0;                         // 451 at RCPT.
  double permanent = 0;                         // 550 at RCPT.
  double disconnect = 0;                        // 421 at RCPT, then close.
  absl::Duration delay = absl::ZeroDuration();  // Before the final 250.
};

// "d1.test=5xx:0.1,4xx:0.2,421:0.01,delay:50ms;default=delay:1ms"
bool ParseMixes(absl::string_view spec, std::map<std::string, Mix>* out,
                std::string* error) {
  for (absl::string_view part : absl::StrSplit(spec, ';', absl::SkipEmpty())) {
    std::vector<absl::string_view> kv = absl::StrSplit(part, '=');
    if (kv.size() != 2) {
      *error = absl::StrCat("'", part, "': expected DOMAIN=OUTCOME:VALUE,...");
      return false;
    }
    Mix m;
    for (absl::string_view item :
         absl::StrSplit(kv[1], ',', absl::SkipEmpty())) {
      std::vector<absl::string_view> ov = absl::StrSplit(item, ':');
      double share = 0;
      if (ov.size() != 2) {
        *error = absl::StrCat("'", item, "': expected OUTCOME:VALUE");
        return false;
      }
      if (ov[0] == "delay") {
        if (!absl::ParseDuration(ov[1], &m.delay)) {
          *error = absl::StrCat("'", item, "': delay wants 50ms, 1s, ...");
          return false;
        }
        continue;
      }
      if (!absl::SimpleAtod(ov[1], &share) || share < 0 || share > 1) {
        *error = absl::StrCat("'", item, "': a share from 0 to 1");
        return false;
      }
      if (ov[0] == "4xx") {
        m.temporary = share;
      } else if (ov[0] == "5xx") {
        m.permanent = share;
      } else if (ov[0] == "421") {
        m.disconnect = share;
      } else {
        *error = absl::StrCat("'", ov[0], "': use 4xx, 5xx, 421 or delay");
        return false;
      }
    }
    (*out)[absl::AsciiStrToLower(kv[0])] = m;
  }
  return true;
}

struct Stats {
  std::mutex mu;
  std::map<std::string, int64_t> per_domain;  // Accepted recipients.
  std::atomic<int64_t> messages{0};
  std::atomic<int64_t> refused{0};
  std::atomic<int64_t> connections{0};
  std::atomic<int64_t> open{0};  // Sessions not freed yet.
};

struct Config {
  std::map<std::string, Mix> mixes;
  bool chunking = true;
  Stats* stats = nullptr;
};

class Session : private Stream::Handler {
 public:
  static void Start(shard::Reactor& reactor, int fd, const Config& config) {
    (new Session(reactor, fd, config))->Begin();
  }
  // On a shard: closes every session of it (they free themselves).
  static void CloseAll() {
    std::vector<Session*> all(live_.begin(), live_.end());
    for (Session* s : all) s->Close();
  }

 private:
  Session(shard::Reactor& reactor, int fd, const Config& config)
      : reactor_(reactor),
        config_(config),
        stream_(reactor, fd, static_cast<Stream::Handler&>(*this)),
        rng_(static_cast<uint64_t>(fd) * 7919 +
             absl::ToUnixNanos(absl::Now())) {
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    config_.stats->open.fetch_add(1);
    live_.insert(this);
  }
  ~Session() override {
    live_.erase(this);
    config_.stats->open.fetch_sub(1);
  }

  static thread_local std::set<Session*> live_;

  void Begin() {
    config_.stats->connections.fetch_add(1);
    Send("220 sink.test ESMTP\r\n");
    stream_.Flush();
    stream_.Read();
  }

  // Queued: the replies to pipelined commands go out in one write, when
  // the input is used up (Flush after Process).
  void Send(absl::string_view text) { (void)stream_.Send(text); }

  const Mix& MixFor(absl::string_view address) const {
    static const Mix kNone;
    size_t at = address.rfind('@');
    std::string domain = absl::AsciiStrToLower(
        at == absl::string_view::npos ? "" : address.substr(at + 1));
    auto it = config_.mixes.find(domain);
    if (it == config_.mixes.end()) it = config_.mixes.find("default");
    return it == config_.mixes.end() ? kNone : it->second;
  }

  // Handles every whole command (or the data) in the input; false when the
  // session ends.
  bool Process() {
    while (!closed_ && !waiting_ && !quitting_) {
      if (chunk_left_ > 0 || chunk_pending_) {
        size_t take = std::min<size_t>(chunk_left_, in_.size());
        in_.erase(0, take);
        chunk_left_ -= take;
        if (chunk_left_ > 0) return true;
        chunk_pending_ = false;
        if (!chunk_last_) {
          Send("250 2.0.0 chunk ok\r\n");
        } else if (recipients_.empty()) {
          Send("554 5.5.1 no valid recipients\r\n");
        } else {
          EndOfData();
        }
        continue;
      }
      if (in_data_) {
        size_t end = in_.find("\r\n.\r\n", scan_from_);
        if (in_.size() >= 3 && in_.compare(0, 3, ".\r\n") == 0) end = 0;
        if (end == std::string::npos) {
          scan_from_ = in_.size() > 4 ? in_.size() - 4 : 0;
          // Keep only the tail that may hold the end marker.
          if (in_.size() > 65536) {
            in_.erase(0, in_.size() - 4);
            scan_from_ = 0;
          }
          return true;
        }
        in_.erase(0, end == 0 ? 3 : end + 5);
        in_data_ = false;
        scan_from_ = 0;
        EndOfData();
        continue;
      }
      size_t eol = in_.find("\r\n");
      if (eol == std::string::npos) {
        if (in_.size() > 4096) return Close(), false;
        return true;
      }
      std::string line = in_.substr(0, eol);
      in_.erase(0, eol + 2);
      Command(line);
    }
    return !closed_;
  }

  void Command(absl::string_view line) {
    std::string verb = absl::AsciiStrToUpper(line.substr(0, 4));
    if (verb == "EHLO") {
      return Send(
          absl::StrCat("250-sink.test\r\n250-PIPELINING\r\n250-8BITMIME\r\n",
                       config_.chunking ? "250-CHUNKING\r\n" : "",
                       "250-SIZE 0\r\n250 SMTPUTF8\r\n"));
    }
    if (verb == "HELO") return Send("250 sink.test\r\n");
    if (verb == "MAIL") {
      recipients_.clear();
      return Send("250 2.1.0 ok\r\n");
    }
    if (verb == "RCPT") {
      size_t lt = line.find('<'), gt = line.rfind('>');
      std::string address(lt != absl::string_view::npos &&
                                  gt != absl::string_view::npos && gt > lt
                              ? line.substr(lt + 1, gt - lt - 1)
                              : "");
      const Mix& m = MixFor(address);
      double roll = std::uniform_real_distribution<double>(0, 1)(rng_);
      if (roll < m.disconnect) {
        config_.stats->refused.fetch_add(1);
        Send("421 4.3.2 sink closing\r\n");
        quitting_ = true;  // Closes once the 421 is written.
        in_.clear();
        return;
      }
      roll -= m.disconnect;
      if (roll < m.permanent) {
        config_.stats->refused.fetch_add(1);
        return Send("550 5.1.1 no such user (sink)\r\n");
      }
      roll -= m.permanent;
      if (roll < m.temporary) {
        config_.stats->refused.fetch_add(1);
        return Send("451 4.7.1 try again later (sink)\r\n");
      }
      recipients_.push_back(address);
      delay_ = std::max(delay_, m.delay);
      return Send("250 2.1.5 ok\r\n");
    }
    if (verb == "BDAT" && config_.chunking) {
      std::vector<absl::string_view> words =
          absl::StrSplit(line, ' ', absl::SkipEmpty());
      uint64_t size = 0;
      if (words.size() < 2 || words.size() > 3 ||
          !absl::SimpleAtoi(words[1], &size) ||
          (words.size() == 3 && !absl::EqualsIgnoreCase(words[2], "LAST"))) {
        return Send("501 5.5.4 Syntax: BDAT size [LAST]\r\n");
      }
      chunk_left_ = size;
      chunk_last_ = words.size() == 3;
      chunk_pending_ = true;
      return;
    }
    if (verb == "DATA") {
      if (recipients_.empty()) return Send("554 5.5.1 no valid recipients\r\n");
      in_data_ = true;
      scan_from_ = 0;
      return Send("354 go ahead\r\n");
    }
    if (verb == "RSET") {
      recipients_.clear();
      return Send("250 2.0.0 ok\r\n");
    }
    if (verb == "NOOP") return Send("250 2.0.0 ok\r\n");
    if (verb == "QUIT") {
      Send("221 2.0.0 bye\r\n");
      quitting_ = true;
      return;
    }
    Send("502 5.5.2 not implemented\r\n");
  }

  void EndOfData() {
    config_.stats->messages.fetch_add(1);
    {
      std::lock_guard<std::mutex> l(config_.stats->mu);
      for (const std::string& r : recipients_) {
        size_t at = r.rfind('@');
        ++config_.stats->per_domain[absl::AsciiStrToLower(
            at == std::string::npos ? "" : r.substr(at + 1))];
      }
    }
    recipients_.clear();
    if (delay_ <= absl::ZeroDuration()) return Send("250 2.0.0 kept\r\n");
    waiting_ = true;
    timer_ = reactor_.AddTimer(delay_, [this] {
      timer_ = 0;
      waiting_ = false;
      Send("250 2.0.0 kept\r\n");
      bool open = Process();
      stream_.Flush();
      if (open && !waiting_) stream_.Read();
    });
    delay_ = absl::ZeroDuration();
  }

  void OnData(absl::string_view bytes) override {
    in_.append(bytes.data(), bytes.size());
    bool open = Process();
    stream_.Flush();
    if (open && !waiting_) stream_.Read();
  }
  void OnEnd(int) override { Close(); }
  void OnTlsUp() override {}
  void OnTlsError(const absl::Status&, bool, bool, absl::string_view) override {
    Close();
  }
  void OnWritten(int result) override {
    if (result < 0) return Close();
    stream_.Flush();  // What was queued while that write was in flight.
    if (quitting_ && !stream_.writing() && stream_.unsent() == 0) Close();
  }

  void Close() {
    if (closed_) return;
    closed_ = true;
    if (timer_ != 0) reactor_.CancelTimer(timer_);
    stream_.Close([this] { reactor_.Defer([this] { delete this; }); });
  }

  shard::Reactor& reactor_;
  const Config& config_;
  Stream stream_;
  std::mt19937_64 rng_;
  std::string in_;
  size_t scan_from_ = 0;
  bool in_data_ = false;
  uint64_t chunk_left_ = 0;     // BDAT bytes still to come.
  bool chunk_last_ = false;     // That chunk ends the message.
  bool chunk_pending_ = false;  // A BDAT whose reply is not sent yet.
  bool waiting_ = false;
  bool quitting_ = false;
  bool closed_ = false;
  uint64_t timer_ = 0;
  absl::Duration delay_ = absl::ZeroDuration();
  std::vector<std::string> recipients_;
};

thread_local std::set<Session*> Session::live_;

// Accepts on one listening socket of one shard, for the whole run.
class Acceptor {
 public:
  Acceptor(shard::Reactor& reactor, int fd, const Config& config)
      : reactor_(reactor), fd_(fd), config_(config) {}
  void Arm() {
    reactor_.io().Accept(fd_, [this](int c) {
      if (c < 0) return;  // The socket is closed: the run is over.
      Session::Start(reactor_, c, config_);
      Arm();
    });
  }

 private:
  shard::Reactor& reactor_;
  const int fd_;
  const Config& config_;
};

void WriteStats(const std::string& path, Stats& stats, absl::Time start,
                std::vector<int64_t>& per_second) {
  std::string domains;
  {
    std::lock_guard<std::mutex> l(stats.mu);
    for (const auto& [d, n] : stats.per_domain) {
      absl::StrAppend(&domains, domains.empty() ? "" : ", ", "\"", d,
                      "\": ", n);
    }
  }
  std::string series;
  for (int64_t n : per_second) {
    absl::StrAppend(&series, series.empty() ? "" : ", ", n);
  }
  std::string json = absl::StrCat(
      "{\"messages\": ", stats.messages.load(),
      ", \"refused\": ", stats.refused.load(),
      ", \"connections\": ", stats.connections.load(),
      ", \"seconds\": ", absl::ToDoubleSeconds(absl::Now() - start),
      ", \"per_second\": [", series, "], \"per_domain\": {", domains, "}}\n");
  std::string tmp = path + ".part";
  {
    std::ofstream f(tmp);
    f << json;
  }
  ::rename(tmp.c_str(), path.c_str());
}

}  // namespace
}  // namespace peregrine::sink

int main(int argc, char** argv) {
  using namespace peregrine;        // NOLINT: a main.
  using namespace peregrine::sink;  // NOLINT
  std::vector<std::string> listen = {"127.0.0.1:2526"};
  std::string mix;
  std::string stats_path;
  int threads = 1;
  CLI::App app("SMTP sink on Peregrine's reactor");
  app.add_option("--listen", listen, "ip:port to listen on (repeatable)");
  app.add_option("--mix", mix,
                 "Per domain: DOMAIN=4xx:SHARE,5xx:SHARE,421:SHARE,"
                 "delay:DURATION;... (\"default\" for the others)");
  app.add_option("--stats", stats_path, "Write counts here as JSON");
  app.add_option("--threads", threads, "Reactor threads");
  bool no_chunking = false;
  app.add_flag("--no-chunking", no_chunking, "Do not offer CHUNKING (BDAT)");
  CLI11_PARSE(app, argc, argv);
  Config config;
  Stats stats;
  config.stats = &stats;
  config.chunking = !no_chunking;
  std::string error;
  if (!ParseMixes(mix, &config.mixes, &error)) {
    std::cerr << "sink: --mix: " << error << "\n";
    return 2;
  }
  std::vector<shard::SocketAddress> addresses;
  for (const std::string& l : listen) {
    auto a = shard::SocketAddress::Parse(l);
    if (!a.ok()) {
      std::cerr << "sink: --listen " << l << ": " << a.status().message()
                << "\n";
      return 2;
    }
    addresses.push_back(*a);
  }
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);

  shard::ShardGroup::Options go;
  go.shards = std::max(1, threads);
  go.pin_threads = false;
  shard::ShardGroup group(go);
  std::vector<std::vector<int>> fds(go.shards);
  for (int s = 0; s < go.shards; ++s) {
    for (const auto& a : addresses) {
      auto fd = shard::Listen(a, /*reuse_port=*/true);
      if (!fd.ok()) {
        std::cerr << "sink: " << fd.status().message() << "\n";
        return 1;
      }
      fds[s].push_back(*fd);
    }
  }
  std::mutex acceptors_mu;
  std::vector<std::unique_ptr<Acceptor>> acceptors;
  absl::Status started = group.Start([&](shard::Reactor& reactor) {
    for (int fd : fds[reactor.id()]) {
      auto a = std::make_unique<Acceptor>(reactor, fd, config);
      a->Arm();
      std::lock_guard<std::mutex> l(acceptors_mu);
      acceptors.push_back(std::move(a));
    }
  });
  if (!started.ok()) {
    std::cerr << "sink: " << started.message() << "\n";
    return 1;
  }
  std::cerr << "sink: listening\n";
  absl::Time start = absl::Now();
  std::vector<int64_t> per_second;
  int64_t last = 0;
  absl::Time next_second = start + absl::Seconds(1);
  for (;;) {
    timespec tick{0, 250 * 1000 * 1000};
    int sig = sigtimedwait(&set, nullptr, &tick);
    if (absl::Now() >= next_second) {
      int64_t now = stats.messages.load();
      per_second.push_back(now - last);
      last = now;
      next_second += absl::Seconds(1);
    }
    if (!stats_path.empty()) WriteStats(stats_path, stats, start, per_second);
    if (sig == SIGTERM || sig == SIGINT) break;
  }
  // Every session closes and frees itself before the shards stop.
  for (int i = 0; i < group.size(); ++i) {
    group.reactor(i).Post([] { Session::CloseAll(); });
  }
  absl::Time until = absl::Now() + absl::Seconds(5);
  while (stats.open.load() > 0 && absl::Now() < until) {
    absl::SleepFor(absl::Milliseconds(5));
  }
  group.Stop();
  group.Join();
  for (const auto& shard_fds : fds) {
    for (int fd : shard_fds) ::close(fd);
  }
  if (!stats_path.empty()) WriteStats(stats_path, stats, start, per_second);
  std::cout << "sink: " << stats.messages.load() << " messages, "
            << stats.refused.load() << " recipients refused, "
            << stats.connections.load() << " connections\n";
  return 0;
}
