// crash_child: enqueues messages into a queue with fsync until killed, and
// prints "SEQ ID\n" on stdout after each acknowledgement (flushed at once).
// Used by crash_test, which SIGKILLs it at random moments.
//
//   crash_child PATH FIRST_SEQ [lose-rocksdb]
//
// With lose-rocksdb, RocksDB's writes skip its WAL, so a kill loses all of
// them that were not flushed, as a power failure would lose RocksDB's
// unsynced writes: only the spool's replay brings them back.
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "queue/rocksdb_store.h"

using peregrine::queue::MessageId;
using peregrine::queue::NewMessage;
using peregrine::queue::RocksStore;
using peregrine::queue::RocksStoreOptions;

// The body names its sequence number and carries a checksum of itself, so
// the parent can tell a whole body from a torn one.
std::string Body(uint64_t seq) {
  std::string body = absl::StrCat("X-Seq: ", seq, "\r\n\r\n");
  for (int i = 0; i < 200 + static_cast<int>(seq % 50); ++i) {
    absl::StrAppend(&body, "line ", seq * 31 + i, "\r\n");
  }
  uint32_t sum = 0;
  for (unsigned char c : body) sum = sum * 131 + c;
  absl::StrAppend(&body, "X-Sum: ", sum, "\r\n");
  return body;
}

int main(int argc, char** argv) {
  if (argc != 3 && argc != 4) return 2;
  RocksStoreOptions options;
  options.path = argv[1];
  options.shards = 2;
  options.sync = true;
  options.spool_segment_bytes = 256 << 10;  // Rotations within a cycle.
  options.test_lose_unsynced_rocksdb_writes =
      argc == 4 && std::string(argv[3]) == "lose-rocksdb";
  auto store = RocksStore::Open(options);
  if (!store.ok()) {
    std::fprintf(stderr, "open: %s\n",
                 std::string(store.status().message()).c_str());
    return 1;
  }
  uint64_t seq = std::strtoull(argv[2], nullptr, 10);
  absl::Mutex mu;
  int in_flight = 0;
  while (true) {
    {
      absl::MutexLock lock(&mu);
      mu.Await(absl::Condition(
          +[](int* n) { return *n < 32; }, &in_flight));
      ++in_flight;
    }
    NewMessage m;
    m.envelope.sender = "crash@test";
    m.body = Body(seq);
    int rcpts = 1 + seq % 3;
    for (int i = 0; i < rcpts; ++i) {
      peregrine::queue::RecipientSpec r;
      r.address = absl::StrCat("r", i, "@d", seq % 7, ".test");
      r.shard = static_cast<uint16_t>(i % 2);
      m.recipients.push_back(r);
    }
    (*store)->Enqueue(
        std::move(m), [&mu, &in_flight, seq](absl::StatusOr<MessageId> id) {
          if (id.ok()) {
            // One write(2) per line: a kill never leaves half a line.
            std::string line = absl::StrCat(seq, " ", *id, "\n");
            (void)!::write(STDOUT_FILENO, line.data(), line.size());
          }
          absl::MutexLock lock(&mu);
          --in_flight;
        });
    ++seq;
  }
}
