// Notifier: what follows a failure. It sends the sender a DSN (dsn.h),
// adds dead addresses to the suppression list (suppression.h), and
// publishes the `bounce`, `dsn_sent` and `suppressed` events.
//
// Durability: a failed recipient and its DSN are written in one atomic
// queue write (Store::UpdateWithNotice), so a crash leaves either the
// recipient not yet failed (it is tried again, fails again, and its DSN
// goes then) or both. To do that the Notifier takes those recipients'
// queue updates over from the QueueRecorder (outcome::UpdateDiverter).
// Failures of one message within `window` of each other (one pass over
// its recipients) share one DSN.
//
// Threads and lifetime: Divert() and OnOutcome() run on shards and only
// hand work to the Notifier's own thread, which reads the message, builds
// the DSN and hands the write to the queue's committer (whose completion
// publishes the events). The daemon makes it before the shards start and
// calls Stop() after they are joined and before the queue closes: Stop()
// writes everything still waiting. An outcome diverted after Stop() is
// written at once from the caller's thread.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "mta/bounce/category.h"
#include "mta/bounce/suppression.h"
#include "mta/outcome/consumers.h"
#include "mta/outcome/outcome.h"
#include "queue/store.h"

namespace peregrine::bounce {

struct NotifierOptions {
  std::string hostname;  // Reporting-MTA, and the DSN's Message-ID.
  bool dsn = true;       // Send DSNs at all.
  // Listeners ("relay", "submission", ...) and sender domains whose mail
  // gets no DSN (a bulk sender that reads the event log instead).
  std::vector<std::string> no_dsn_listeners;
  std::vector<std::string> no_dsn_sender_domains;
  // A "delayed" DSN once a recipient has waited this long (zero: never),
  // for mail from these listeners when NOTIFY is not given (NOTIFY=DELAY
  // asks for it from any).
  absl::Duration delay_after = absl::ZeroDuration();
  std::vector<std::string> delay_listeners;
  size_t full_limit = 50000;  // DsnInput::full_limit.
  absl::Duration window = absl::Seconds(1);
  // Where the DSN's recipient (the original sender) is routed: its shard
  // from its domain.
  std::function<uint16_t(absl::string_view domain)> shard_for_domain;

  // Categories whose failures add the address to the suppression list,
  // the scope they get ("", "tenant" or "campaign": the message's tag),
  // and for how long (zero: for good).
  std::vector<Category> suppress;
  std::string suppress_scope;
  absl::Duration suppress_for = absl::ZeroDuration();
};

class Notifier : public outcome::Consumer, public outcome::UpdateDiverter {
 public:
  // `store`, `bus` and `suppression` (may be null: no list) outlive it.
  Notifier(queue::Store* store, const outcome::Bus* bus,
           SuppressionList* suppression, NotifierOptions options);
  ~Notifier() override;

  bool Divert(const outcome::Outcome& o,
              queue::RecipientUpdate& update) override;
  void OnOutcome(const outcome::Outcome& o) override;

  // Writes everything waiting, stops the thread, and waits (up to 30 s)
  // until the queue has answered every write handed to it.
  void Stop();

  // Whether a DSN is due for this outcome (see the options); public for
  // tests.
  bool DsnDue(const outcome::Outcome& o) const;

  uint64_t dsns_sent() const { return dsns_sent_.load(); }
  // Failures waiting for their DSNs now.
  size_t waiting() const {
    absl::MutexLock lock(&mu_);
    return waiting_;
  }

 private:
  struct Pending {
    absl::Time since;
    std::vector<outcome::Outcome> outcomes;
    std::vector<queue::RecipientUpdate> updates;
  };
  void Main();
  void Process(queue::MessageId id, Pending p);
  void Suppress(const outcome::Outcome& o);

  queue::Store* const store_;
  const outcome::Bus* const bus_;
  SuppressionList* const suppression_;
  const NotifierOptions options_;
  std::atomic<uint64_t> dsns_sent_{0};

  mutable absl::Mutex mu_;
  std::map<queue::MessageId, Pending> pending_ ABSL_GUARDED_BY(mu_);
  std::vector<outcome::Outcome> to_suppress_ ABSL_GUARDED_BY(mu_);
  size_t waiting_ ABSL_GUARDED_BY(mu_) = 0;  // Outcomes in pending_.
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  bool stopped_ ABSL_GUARDED_BY(mu_) = false;
  int in_flight_ ABSL_GUARDED_BY(mu_) = 0;  // Writes not answered yet.
  std::thread thread_;
};

}  // namespace peregrine::bounce
