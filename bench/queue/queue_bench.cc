// Queue benchmarks.
//
//   bazel run -c opt //bench/queue:queue_bench -- --benchmark_format=json
//
// BM_DurableEnqueue/blob:B/msgs:N — N messages of 10 KiB with one recipient
//   each, from 64 writers spread over 2 shards, durability fsync. Counters:
//   msgs_per_s, fsyncs_per_s (joint writes, one fsync each), bytes_per_msg
//   (what this process wrote to the disk, /proc/self/io, memtables flushed),
//   and, in the same run, a naive spool that writes each message to its own
//   file and fdatasyncs it before acknowledging, from 64 threads:
//   naive_msgs_per_s and ratio_vs_naive.
// BM_Dequeue/recipients:N — N recipients queued (one per message); then
//   drain: Due() in batches of 1000 and mark each delivered. Counters:
//   dequeued_per_s, bytes_per_recipient (resident memory after loading,
//   RocksDB block cache and memtables excluded), rss_bytes_per_recipient
//   (everything included).
#include <fcntl.h>
#include <malloc.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "benchmark/benchmark.h"
#include "mta/shard/shard_group.h"
#include "queue/rocksdb_store.h"

namespace peregrine::queue {
namespace {

constexpr int kWriters = 64;
constexpr size_t kBodyBytes = 10 * 1024;

std::string TempDir(const std::string& name) {
  const char* base = getenv("TEST_TMPDIR");
  std::string dir = absl::StrCat(base ? base : "/var/tmp", "/peregrine-bench-",
                                 name, "-", getpid());
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

uint64_t DiskWriteBytes() {
  std::ifstream io("/proc/self/io");
  std::string key;
  uint64_t value;
  while (io >> key >> value) {
    if (key == "write_bytes:") return value;
  }
  return 0;
}

uint64_t ResidentBytes() {
  std::ifstream statm("/proc/self/statm");
  uint64_t size, resident;
  statm >> size >> resident;
  return resident * static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
}

// Mail is largely incompressible (base64 attachments, images), and bodies
// of one repeated byte would flatter whatever compresses; use random text.
std::string RandomBody(uint64_t seed) {
  static const char kChars[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string body(kBodyBytes, ' ');
  uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;
  for (size_t i = 0; i < body.size(); ++i) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    body[i] = (i % 78 == 76) ? '\r' : (i % 78 == 77) ? '\n' : kChars[x & 63];
  }
  return body;
}

NewMessage TenKiBMessage(int writer, uint16_t shard) {
  // Made once: generating random text per message would cost the writers
  // more CPU than the queue does.
  static const auto* pool = [] {
    auto* bodies = new std::vector<std::string>;
    for (int i = 0; i < 256; ++i) bodies->push_back(RandomBody(i));
    return bodies;
  }();
  static std::atomic<uint64_t> seq{0};
  NewMessage m;
  m.envelope.sender = "bench@sender.test";
  m.body = (*pool)[(seq++ * 64 + writer) % pool->size()];
  RecipientSpec r;
  r.address = absl::StrCat("user", writer, "@dest", writer % 100, ".test");
  r.site = absl::StrCat("dest", writer % 100, ".test");
  r.shard = shard;
  m.recipients.push_back(std::move(r));
  return m;
}

// 64 writers on 2 shards; each enqueues, waits for its 250 (the committer's
// callback, posted back to its shard), and enqueues the next.
double RunStore(RocksStore& store, int total, uint64_t* commits) {
  shard::ShardGroup::Options options;
  options.shards = 2;
  shard::ShardGroup group(options);
  if (!group.Start().ok()) return 0;
  std::atomic<int> started{0};
  std::atomic<int> done{0};
  absl::Notification finished;
  uint64_t commits_before = store.commits();
  absl::Time start = absl::Now();

  struct Writer {
    RocksStore& store;
    shard::ShardGroup& group;
    int shard;
    int id;
    int total;
    std::atomic<int>& started;
    std::atomic<int>& done;
    absl::Notification& finished;
    void Next() {
      if (started.fetch_add(1) >= total) return;
      store.Enqueue(TenKiBMessage(id, static_cast<uint16_t>(shard)),
                    [this](absl::StatusOr<MessageId> r) {
                      if (!r.ok()) std::abort();
                      // The last one touches nothing after Notify(): the
                      // group and the writers go away right after.
                      // (Completions run one at a time, on the committer.)
                      if (done.fetch_add(1) + 1 == total) {
                        return finished.Notify();
                      }
                      group.reactor(shard).Post([this] { Next(); });
                    });
    }
  };
  std::vector<std::unique_ptr<Writer>> writers;
  for (int w = 0; w < kWriters; ++w) {
    writers.push_back(std::make_unique<Writer>(
        Writer{store, group, w % 2, w, total, started, done, finished}));
  }
  for (auto& w : writers) {
    Writer* writer = w.get();
    group.SubmitTo(writer->shard, [writer] { writer->Next(); });
  }
  finished.WaitForNotification();
  double seconds = absl::ToDoubleSeconds(absl::Now() - start);
  group.Stop();
  group.Join();
  *commits = store.commits() - commits_before;
  return seconds;
}

// What a classic spool does: a file per message, fdatasync, then 250.
double RunNaive(const std::string& dir, int total) {
  std::atomic<int> next{0};
  std::string body = RandomBody(7);
  absl::Time start = absl::Now();
  std::vector<std::thread> threads;
  for (int t = 0; t < kWriters; ++t) {
    threads.emplace_back([&] {
      for (int i = next++; i < total; i = next++) {
        std::string path = absl::StrCat(dir, "/", i);
        int fd =
            ::open(path.c_str(), O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0600);
        if (fd < 0 ||
            ::write(fd, body.data(), body.size()) !=
                static_cast<ssize_t>(body.size()) ||
            ::fdatasync(fd) != 0) {
          std::abort();
        }
        ::close(fd);
      }
    });
  }
  for (auto& t : threads) t.join();
  return absl::ToDoubleSeconds(absl::Now() - start);
}

void BM_DurableEnqueue(benchmark::State& state) {
  const bool blob = state.range(0) != 0;
  const int total = static_cast<int>(state.range(1));
  for (auto _ : state) {
    std::string dir = TempDir("enqueue");
    RocksStoreOptions options;
    options.path = dir + "/queue";
    options.shards = 2;
    options.sync = true;
    options.body_blob_files = blob;
    auto store = RocksStore::Open(options);
    if (!store.ok()) {
      state.SkipWithError(std::string(store.status().message()).c_str());
      return;
    }
    // Each side starts with the file system's dirty data written back, so
    // neither pays for what the run before it left (30,000 files deleted).
    ::sync();
    uint64_t disk_before = DiskWriteBytes();
    uint64_t commits = 0;
    double seconds = RunStore(**store, total, &commits);
    (void)(*store)->Flush();  // Count what reaches table and blob files.
    uint64_t disk_bytes = DiskWriteBytes() - disk_before;
    store->reset();

    std::string naive_dir = dir + "/naive";
    std::filesystem::create_directories(naive_dir);
    ::sync();
    double naive_seconds = RunNaive(naive_dir, total);
    std::filesystem::remove_all(dir);

    state.SetIterationTime(seconds);
    double rate = total / seconds;
    double naive_rate = total / naive_seconds;
    state.counters["msgs_per_s"] = rate;
    state.counters["fsyncs_per_s"] = commits / seconds;
    state.counters["msgs_per_fsync"] = static_cast<double>(total) / commits;
    state.counters["bytes_per_msg"] = static_cast<double>(disk_bytes) / total;
    state.counters["naive_msgs_per_s"] = naive_rate;
    state.counters["ratio_vs_naive"] = rate / naive_rate;
  }
}
BENCHMARK(BM_DurableEnqueue)
    ->ArgNames({"blob", "msgs"})
    ->Args({1, 30000})
    ->Args({0, 30000})
    ->Args({1, 2000})
    ->Iterations(1)
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond);

void BM_Dequeue(benchmark::State& state) {
  const int recipients = static_cast<int>(state.range(0));
  for (auto _ : state) {
    std::string dir = TempDir("dequeue");
    malloc_trim(0);
    uint64_t rss_before = ResidentBytes();
    RocksStoreOptions options;
    options.path = dir + "/queue";
    options.shards = 2;
    options.sync = false;  // Loading is set-up, not what is measured.
    auto opened = RocksStore::Open(options);
    if (!opened.ok()) {
      state.SkipWithError(std::string(opened.status().message()).c_str());
      return;
    }
    RocksStore& store = **opened;
    // Load: keep up to 4096 enqueues in flight.
    std::atomic<int> in_flight{0};
    for (int i = 0; i < recipients; ++i) {
      while (in_flight.load() >= 4096) std::this_thread::yield();
      ++in_flight;
      NewMessage m;
      m.envelope.sender = "bench@sender.test";
      m.body = "Subject: x\r\n\r\nhello\r\n";
      RecipientSpec r;
      r.address = absl::StrCat("u", i, "@d", i % 1000, ".test");
      r.site = absl::StrCat("d", i % 1000, ".test");
      r.shard = static_cast<uint16_t>(i % 2);
      m.recipients.push_back(std::move(r));
      store.Enqueue(std::move(m), [&](absl::StatusOr<MessageId> id) {
        if (!id.ok()) std::abort();
        --in_flight;
      });
    }
    while (in_flight.load() > 0) std::this_thread::yield();
    (void)store.Flush();
    malloc_trim(0);
    // Small runs can end below where they began (freed pages): zero then.
    uint64_t after = ResidentBytes();
    uint64_t rss = after > rss_before ? after - rss_before : 0;
    uint64_t rocks = store.RocksMemoryBytes();

    // Drain: what a scheduler does, without the network.
    absl::Time start = absl::Now();
    absl::Time now = absl::Now();
    int dequeued = 0;
    for (bool more = true; more;) {
      more = false;
      for (int shard = 0; shard < 2; ++shard) {
        auto due = store.Due(shard, now, 1000);
        if (!due.ok()) std::abort();
        if (due->empty()) continue;
        more = true;
        std::atomic<int> left{static_cast<int>(due->size())};
        absl::Notification batch_done;
        for (const RecipientRecord& r : *due) {
          RecipientUpdate u;
          u.before = r;
          u.state = RecipientState::kDelivered;
          u.reply = Reply{250, "", "ok"};
          store.Update(std::move(u), [&](absl::Status s) {
            if (!s.ok()) std::abort();
            if (--left == 0) batch_done.Notify();
          });
        }
        batch_done.WaitForNotification();
        dequeued += static_cast<int>(due->size());
      }
    }
    double seconds = absl::ToDoubleSeconds(absl::Now() - start);
    if (dequeued != recipients) {
      state.SkipWithError("drain did not return every recipient");
      return;
    }
    opened->reset();
    std::filesystem::remove_all(dir);
    state.SetIterationTime(seconds);
    state.counters["dequeued_per_s"] = dequeued / seconds;
    state.counters["rss_bytes_per_recipient"] =
        static_cast<double>(rss) / recipients;
    state.counters["rocksdb_memory_bytes"] = static_cast<double>(rocks);
    state.counters["bytes_per_recipient"] =
        std::max(0.0, static_cast<double>(rss) - static_cast<double>(rocks)) /
        recipients;
  }
}
BENCHMARK(BM_Dequeue)
    ->ArgName("recipients")
    ->Arg(1000000)
    ->Arg(10000)
    ->Iterations(1)
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace peregrine::queue
