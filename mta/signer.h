// Signer: DKIM signatures made off the shard threads.
//
// An rsa-2048 signature takes about 0.6 ms of a core; made on a reactor it
// stalls every other connection of that shard for as long. Sign() hands
// the work to one of `workers` threads; `done` runs there, with the
// signatures and the message back, and the caller posts it to its shard.
// Past `max_queued` waiting, Sign() signs on the calling thread instead:
// the shard slows down rather than the queue of work growing.
//
// Threads: Sign() from any thread. Lifetime: made by the daemon before
// the shards start; Stop() (or the destructor) signs what is still queued,
// so every `done` runs, and joins. The daemon stops it while the shards
// still run, so that what `done` posts to them still lands.
#pragma once

#include <atomic>
#include <deque>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/functional/any_invocable.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "dkim/signing_table.h"

namespace peregrine {

class Signer {
 public:
  // The signature fields to put before the message, or why none could be
  // made; and the message, handed back.
  using Done =
      absl::AnyInvocable<void(absl::StatusOr<std::string>, std::string)>;

  explicit Signer(int workers, size_t max_queued = 1024);
  ~Signer();
  Signer(const Signer&) = delete;
  Signer& operator=(const Signer&) = delete;

  void Sign(std::shared_ptr<const dkim::SigningTable> table,
            std::string message, absl::Time now, Done done);
  // Also with the keys of d=`also_as` (dkim::SigningTable::Sign).
  void Sign(std::shared_ptr<const dkim::SigningTable> table,
            std::string message, absl::Time now, std::string also_as,
            Done done);
  void Stop();

  // Signatures made on the calling thread because the queue was full.
  uint64_t inline_signed() const;
  // Messages signed (one or more signatures), and those that could not be
  // (a key unusable, a message that would not parse); a message no key
  // matched counts in neither.
  uint64_t signed_messages() const { return signed_.load(); }
  uint64_t failed() const { return failed_.load(); }

 private:
  struct Task {
    std::shared_ptr<const dkim::SigningTable> table;
    std::string message;
    absl::Time now;
    Done done;
    std::string also_as;
  };
  void Run(Task& task);
  void Work();

  const size_t max_queued_;
  mutable absl::Mutex mu_;
  std::deque<Task> tasks_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t inline_signed_ ABSL_GUARDED_BY(mu_) = 0;
  std::atomic<uint64_t> signed_{0};
  std::atomic<uint64_t> failed_{0};
  std::vector<std::thread> threads_;
};

}  // namespace peregrine
