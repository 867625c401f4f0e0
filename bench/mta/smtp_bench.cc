// SMTP injection benchmark.
//
//   bazel run -c opt //bench/mta:smtp_bench -- --benchmark_format=json
//
// 50 concurrent client sessions send 10 KiB messages with one recipient each
// (MAIL, RCPT, DATA pipelined) to Peregrine's reception stack on 2 shards:
//   durable: the RocksDB queue with fsync, 250 only after the group commit,
//            its spool reserve as the daemon's default (4 segments,
//            256 MiB: the 20,000-message burst fits in it) or none
//            ("reserve:0": the spool grows its files, as a burst beyond
//            the reserve does);
//   ceiling: the same SMTP stack and load with a queue that acknowledges at
//            once and keeps nothing (a sink that discards).
// The load generator runs in a child process, so the server's CPU time is
// the parent's. Five rounds of each, alternating; medians. Counters:
// msgs_per_s, ceiling_msgs_per_s, ratio_vs_ceiling, p50_ms and p99_ms (final
// dot to 250), msgs_per_commit (messages per spool write and flush),
// cpu_s_per_1000 (server CPU seconds per 1000 messages).
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "benchmark/benchmark.h"
#include "mta/reception.h"
#include "mta/shard/connection.h"
#include "mta/shard/shard_group.h"
#include "mta/shard/socket.h"
#include "queue/rocksdb_store.h"

namespace peregrine {
namespace {

constexpr int kSessions = 50;
constexpr size_t kBodyBytes = 10 * 1024;

// Acknowledges every message at once and keeps nothing: the ceiling.
class DiscardStore : public queue::Store {
 public:
  void Enqueue(queue::NewMessage, EnqueueDone done) override { done(++next_); }
  void Update(queue::RecipientUpdate, Done done) override {
    done(absl::OkStatus());
  }
  absl::StatusOr<std::vector<queue::RecipientRecord>> Due(int, absl::Time,
                                                          size_t) override {
    return std::vector<queue::RecipientRecord>{};
  }
  absl::StatusOr<std::vector<queue::RecipientRecord>> Claim(int, absl::Time,
                                                            size_t) override {
    return std::vector<queue::RecipientRecord>{};
  }
  void Unclaim(const queue::RecipientRecord&) override {}
  absl::StatusOr<queue::StoredMessage> Read(queue::MessageId, bool) override {
    return absl::NotFoundError("discarded");
  }
  absl::StatusOr<queue::QueueCounts> Counts() override {
    return queue::QueueCounts{};
  }
  absl::StatusOr<std::vector<queue::StoredMessage>> List(
      const queue::ListFilter&) override {
    return std::vector<queue::StoredMessage>{};
  }
  bool AcceptingNewMail() const override { return true; }

 private:
  std::atomic<uint64_t> next_{0};
};

// --- The load generator (child process) -----------------------------------

struct Shared {
  std::atomic<int> left;
  std::atomic<int> done{0};
  std::vector<double> latencies_ms;  // Guarded by the single client shard.
  absl::Notification finished;
  int sessions_left = kSessions;
};

class Client {
 public:
  Client(shard::Reactor& r, int fd, Shared& shared, const std::string& body)
      : conn_(r, fd), shared_(shared), body_(body) {}
  void Start(const shard::SocketAddress& server) {
    conn_.reactor().io().Connect(conn_.fd(), server, [this](int rc) {
      if (rc < 0) return Done();
      expect_ = 1;  // The banner.
      ReadMore();
    });
  }

 private:
  void ReadMore() {
    conn_.Read(buf_, sizeof(buf_), [this](int n) {
      if (n <= 0) return Done();
      in_.append(buf_, n);
      size_t pos;
      while ((pos = in_.find("\r\n")) != std::string::npos) {
        std::string line = in_.substr(0, pos);
        in_.erase(0, pos + 2);
        if (line.size() >= 4 && line[3] == '-') continue;  // Multi-line.
        if (--expect_ == 0) Next(line);
      }
      ReadMore();
    });
  }
  void Next(const std::string& last) {
    switch (state_) {
      case 0:  // Banner.
        state_ = 1;
        expect_ = 1;
        return Send("EHLO load.test\r\n");
      case 1:  // EHLO.
      case 3:  // 250 after the dot.
        if (state_ == 3) {
          shared_.latencies_ms.push_back(
              absl::ToDoubleMilliseconds(absl::Now() - dot_sent_));
          if (last.rfind("250", 0) == 0) shared_.done++;
        }
        if (shared_.left.fetch_sub(1) <= 0) {
          state_ = 4;
          expect_ = 1;
          return Send("QUIT\r\n");
        }
        state_ = 2;
        expect_ = 3;
        ++n_;
        return Send(absl::StrCat("MAIL FROM:<load@sender.test>\r\nRCPT TO:<r",
                                 n_, "@dest", n_ % 100, ".test>\r\nDATA\r\n"));
      case 2:  // 354.
        state_ = 3;
        expect_ = 1;
        dot_sent_ = absl::Now();
        return Send(body_);
      case 4:
        return Done();
    }
  }
  void Send(std::string data) {
    out_.push_back(std::move(data));
    if (out_.size() == 1) Flush();
  }
  void Flush() {
    conn_.WriteAll(out_.front().data(), out_.front().size(), [this](int rc) {
      out_.erase(out_.begin());
      if (rc < 0) return Done();
      if (!out_.empty()) Flush();
    });
  }
  void Done() {
    if (done_) return;
    done_ = true;
    conn_.Close([this] {
      if (--shared_.sessions_left == 0) shared_.finished.Notify();
      delete this;
    });
  }

  shard::Connection conn_;
  Shared& shared_;
  const std::string& body_;
  char buf_[4096];
  std::string in_;
  std::vector<std::string> out_;
  int state_ = 0;
  int expect_ = 0;
  int n_ = 0;
  bool done_ = false;
  absl::Time dot_sent_;
};

struct LoadResult {
  int messages;
  double seconds;
  double p50_ms;
  double p99_ms;
};

LoadResult RunLoad(const shard::SocketAddress& server, int total) {
  std::string body = "Subject: load\r\n\r\n";
  while (body.size() < kBodyBytes) {
    body +=
        "The quick brown fox jumps over the lazy dog 0123456789 abcdef.\r\n";
  }
  body += ".\r\n";
  shard::ShardGroup::Options options;
  options.shards = 1;
  // The generator must not spin on the cores the server is measured on.
  options.idle_spin = absl::ZeroDuration();
  shard::ShardGroup group(options);
  (void)group.Start();
  Shared shared;
  shared.left = total;
  absl::Time start = absl::Now();
  group.SubmitTo(0, [&] {
    for (int i = 0; i < kSessions; ++i) {
      auto fd = shard::NewStreamSocket(AF_INET);
      (new Client(group.reactor(0), *fd, shared, body))->Start(server);
    }
  });
  shared.finished.WaitForNotificationWithTimeout(absl::Seconds(120));
  double seconds = absl::ToDoubleSeconds(absl::Now() - start);
  group.Stop();
  group.Join();
  std::vector<double>& l = shared.latencies_ms;
  std::sort(l.begin(), l.end());
  auto pct = [&l](double p) {
    return l.empty() ? 0 : l[static_cast<size_t>(p * (l.size() - 1))];
  };
  return {shared.done.load(), seconds, pct(0.5), pct(0.99)};
}

// --- The server (this process) --------------------------------------------

double CpuSeconds() {
  rusage u;
  getrusage(RUSAGE_SELF, &u);
  return u.ru_utime.tv_sec + u.ru_utime.tv_usec / 1e6 + u.ru_stime.tv_sec +
         u.ru_stime.tv_usec / 1e6;
}

struct Measured {
  LoadResult load;
  double cpu_s;
};

Measured Serve(queue::Store& store, int total) {
  // The child waits for the port, runs the load, and sends the result.
  int to_child[2], to_parent[2];
  if (pipe(to_child) != 0 || pipe(to_parent) != 0) std::abort();
  pid_t pid = fork();
  if (pid == 0) {
    uint16_t port = 0;
    if (read(to_child[0], &port, sizeof(port)) != sizeof(port)) _exit(1);
    auto server = shard::SocketAddress::Parse(absl::StrCat("127.0.0.1:", port));
    LoadResult r = RunLoad(*server, total);
    (void)!write(to_parent[1], &r, sizeof(r));
    _exit(0);
  }
  shard::ShardGroup::Options options;
  options.shards = 2;  // Idle spin as the daemon's "auto" chooses here.
  shard::ShardGroup group(options);
  ReceptionContext context;
  context.queue = &store;
  context.trusted_networks = {*shard::Cidr::Parse("127.0.0.0/8")};
  context.hostname = "bench.test";
  context.shards = 2;
  std::vector<int> fds;
  shard::SocketAddress address = *shard::SocketAddress::Parse("127.0.0.1:0");
  for (int i = 0; i < 2; ++i) {
    int fd = *shard::Listen(address, true);
    if (i == 0) address = *shard::LocalAddress(fd);
    fds.push_back(fd);
  }
  std::atomic<int> open{0};
  (void)group.Start([&](shard::Reactor& r) {
    struct Loop {
      shard::Reactor& r;
      int fd;
      ReceptionContext& ctx;
      std::atomic<int>& open;
      void Arm() {
        r.io().Accept(fd, [this](int c) {
          if (c < 0) return;
          SmtpConnection::Start(r, c, ctx, open, ListenerKind::kRelay);
          Arm();
        });
      }
    };
    (new Loop{r, fds[r.id()], context, open})->Arm();
  });
  double cpu_before = CpuSeconds();
  uint16_t port = address.port();
  (void)!write(to_child[1], &port, sizeof(port));
  LoadResult result{};
  (void)!read(to_parent[0], &result, sizeof(result));
  double cpu = CpuSeconds() - cpu_before;
  int status;
  waitpid(pid, &status, 0);
  group.Stop();
  group.Join();
  for (int fd : fds) close(fd);
  for (int fd : {to_child[0], to_child[1], to_parent[0], to_parent[1]})
    close(fd);
  return {result, cpu};
}

// The ceiling and the durable run alternate kRounds times, each durable
// round on a new queue, and the figures are the median rounds': on a shared
// two-core machine one round of either swings by 20%.
constexpr int kRounds = 5;

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

void BM_Injection(benchmark::State& state) {
  const int total = static_cast<int>(state.range(0));
  const int reserve = static_cast<int>(state.range(1));
  const std::string base =
      absl::StrCat(getenv("TEST_TMPDIR") ? getenv("TEST_TMPDIR") : "/var/tmp",
                   "/peregrine-smtp-bench-", getpid());
  for (auto _ : state) {
    std::vector<Measured> ceilings, durables;
    uint64_t commits = 0;
    for (int round = 0; round < kRounds; ++round) {
      DiscardStore sink;
      ceilings.push_back(Serve(sink, total));

      // Queues are deleted at the end: deleting one frees (discards) its
      // blocks while the next round writes.
      std::string dir = absl::StrCat(base, "-", round);
      std::filesystem::remove_all(dir);
      queue::RocksStoreOptions options;
      options.path = dir;
      options.shards = 2;
      options.sync = true;
      options.spool_reserve_segments = reserve;
      auto store = queue::RocksStore::Open(options);
      if (!store.ok()) {
        state.SkipWithError(std::string(store.status().message()).c_str());
        return;
      }
      durables.push_back(Serve(**store, total));
      commits += (*store)->commits();
    }
    for (int round = 0; round < kRounds; ++round) {
      std::filesystem::remove_all(absl::StrCat(base, "-", round));
    }

    std::vector<double> rates, ceiling_rates, p50, p99, ceiling_p50;
    double cpu = 0, ceiling_cpu = 0;
    for (int round = 0; round < kRounds; ++round) {
      const Measured& d = durables[round];
      const Measured& c = ceilings[round];
      if (d.load.messages != total || c.load.messages != total) {
        state.SkipWithError("not every message was accepted");
        return;
      }
      rates.push_back(d.load.messages / d.load.seconds);
      ceiling_rates.push_back(c.load.messages / c.load.seconds);
      p50.push_back(d.load.p50_ms);
      p99.push_back(d.load.p99_ms);
      ceiling_p50.push_back(c.load.p50_ms);
      cpu += d.cpu_s;
      ceiling_cpu += c.cpu_s;
    }
    double rate = Median(rates);
    double ceiling_rate = Median(ceiling_rates);
    state.SetIterationTime(total / rate);
    state.counters["msgs_per_s"] = rate;
    state.counters["ceiling_msgs_per_s"] = ceiling_rate;
    state.counters["ratio_vs_ceiling"] = rate / ceiling_rate;
    state.counters["p50_ms"] = Median(p50);
    state.counters["p99_ms"] = Median(p99);
    state.counters["ceiling_p50_ms"] = Median(ceiling_p50);
    state.counters["msgs_per_commit"] =
        static_cast<double>(kRounds * total) / commits;
    state.counters["cpu_s_per_1000"] = cpu / (kRounds * total) * 1000;
    state.counters["ceiling_cpu_s_per_1000"] =
        ceiling_cpu / (kRounds * total) * 1000;
  }
}
BENCHMARK(BM_Injection)
    ->ArgNames({"msgs", "reserve"})
    ->Args({20000, 4})
    ->Args({20000, 0})
    ->Args({500, 4})
    ->Iterations(1)
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace peregrine
