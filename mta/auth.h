// Authenticator: checks AUTH credentials off the shard threads, and keeps
// password guessing from starving real users.
//
// scrypt is slow on purpose (tens of milliseconds), far too slow for a
// reactor, so checks run on a small pool of worker threads (Limits::workers,
// which also caps the CPU that guessing can take). Three defences against a
// guessing client, per client address (an IPv6 client by its /64):
//  - a failure budget: each failure spends a token, one comes back every
//    `refill`; with none left the address is refused with a temporary
//    error (454) without any check until a token is back;
//  - a growing delay: the n-th recent failure is answered 2^(n-1) seconds
//    late (at most `max_delay`), by the caller's timer, not a thread;
//  - priority: checks for addresses with no recent failure run before the
//    others, so a user logging in while an attack runs waits for at most
//    the checks already running; at most `max_in_flight_per_client` checks
//    of one address wait or run at once, and at most `max_queued` overall
//    (454 beyond either). Every refusal is answered a second late, so a
//    refused guesser cannot loop at full speed.
// Failures are counted and logged once a minute, not per attempt.
//
// Threads: Check() from any thread; `done` runs on a worker thread, or on
// the calling thread for an answer given without a check; the caller posts
// it back to its shard. Created and destroyed by the daemon's main thread;
// the destructor answers what is still queued with kTryLater and joins.
#pragma once

#include <sys/stat.h>

#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/functional/any_invocable.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "mta/delivery/shaping.h"
#include "mta/smtp/server_session.h"
#include "mta/users.h"

namespace peregrine {

struct AuthAnswer {
  smtp::AuthVerdict verdict = smtp::AuthVerdict::kRejected;
  // Give the answer this much later (failures from a guessing address).
  absl::Duration delay = absl::ZeroDuration();
  std::string why;  // For kTryLater: what the client is told.
};

class Authenticator {
 public:
  struct Limits {
    int workers = 2;
    size_t max_queued = 256;
    int max_in_flight_per_client = 4;
    int failure_budget = 10;
    absl::Duration refill = absl::Seconds(30);
    absl::Duration max_delay = absl::Seconds(30);
    absl::Duration summary_every = absl::Minutes(1);
  };
  // Counts since start, for tests and the summary log.
  struct Stats {
    uint64_t accepted = 0;
    uint64_t rejected = 0;  // Wrong user or password.
    uint64_t refused = 0;   // kTryLater without a check.
  };

  Authenticator();  // Default limits, the real clock.
  explicit Authenticator(Limits limits,
                         std::function<absl::Time()> clock = &absl::Now);
  ~Authenticator();
  Authenticator(const Authenticator&) = delete;
  Authenticator& operator=(const Authenticator&) = delete;

  // Replaces the users checked against (start, SIGHUP).
  void SetUsers(std::shared_ptr<const UsersFile> users);
  // Reloads the users from `path` whenever the file changes (inode, size or
  // modification time; looked at most once a second, before a check and
  // from HasUsers()), so `peregrine user add` takes effect without SIGHUP.
  // A file that cannot be read or parsed keeps the users loaded before.
  void WatchFile(std::string path);
  bool HasUsers() const;
  // "" when `user` may send as `address` (its senders= rules), else why
  // not. Cheap: no password check.
  std::string SenderRefusal(absl::string_view user,
                            absl::string_view address) const;
  // A message of `user` begins (MAIL): "" within its rate= (the users
  // file), else the 452 reply line that says so. Per user, all shards
  // together.
  std::string TakeMessage(absl::string_view user);
  // `client` is the client's address as text.
  void Check(std::string client, std::string user, std::string password,
             absl::AnyInvocable<void(AuthAnswer)> done);
  Stats stats() const;
  // Answers every check still queued with kTryLater, at once (the daemon's
  // drain timeout: their connections are closing).
  void AnswerQueued();
  // The address a client is counted under ("2001:db8:1:2::/64" for IPv6).
  static std::string ClientKey(absl::string_view client);

 private:
  struct Job {
    std::string key;
    std::string user;
    std::string password;
    absl::AnyInvocable<void(AuthAnswer)> done;
  };
  struct Client {
    double tokens = 0;
    absl::Time updated;
    int in_flight = 0;
    uint64_t failures_this_period = 0;
  };
  void Main();
  void MaybeReload(absl::Time now) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Brings `c`'s tokens up to date.
  void Refill(Client& c, absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void MaybeSummarize(absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Forget(absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const Limits limits_;
  const std::function<absl::Time()> clock_;
  mutable absl::Mutex mu_;
  // Mutable: HasUsers() may reload a changed file.
  mutable std::shared_ptr<const UsersFile> users_ ABSL_GUARDED_BY(mu_);
  std::string watched_ ABSL_GUARDED_BY(mu_);
  // Per user with a rate: the rate it was made for, and its bucket.
  struct Rate {
    std::string text;
    delivery::TokenBucket bucket;
  };
  std::map<std::string, Rate> rates_ ABSL_GUARDED_BY(mu_);
  struct FileId {
    dev_t dev = 0;
    ino_t ino = 0;
    off_t size = -1;
    int64_t mtime_ns = 0;
    bool operator==(const FileId&) const = default;
  };
  mutable FileId watched_id_ ABSL_GUARDED_BY(mu_);
  mutable absl::Time watched_at_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  std::deque<Job> clean_ ABSL_GUARDED_BY(mu_);    // No recent failure.
  std::deque<Job> suspect_ ABSL_GUARDED_BY(mu_);  // Recent failures.
  absl::flat_hash_map<std::string, Client> clients_ ABSL_GUARDED_BY(mu_);
  Stats stats_ ABSL_GUARDED_BY(mu_);
  // Since the last summary.
  uint64_t period_rejected_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t period_refused_ ABSL_GUARDED_BY(mu_) = 0;
  absl::Time period_start_ ABSL_GUARDED_BY(mu_);
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::thread> threads_;
};

}  // namespace peregrine
