// Webhook: outcomes POSTed to an operator's URL in batches, as the event
// log's JSON records (EventLog::ToJson), signed with HMAC-SHA256.
//
// OnOutcome() (any thread; no I/O, never waits on the receiver) formats the
// record of each outcome whose type the hook wants and appends it to the
// hook's FIFO. Past `max_held` records new ones are dropped, counted
// (dropped()) and logged at most once a minute: a receiver that is slow or
// down costs at most that much memory and never delays delivery.
//
// One sender thread per hook takes up to `batch` records from the front
// (after waiting up to `flush_every` for a batch to fill) and POSTs them as
// one JSON array with
//   Content-Type: application/json
//   X-Peregrine-Timestamp: the Unix time of the POST, seconds
//   X-Peregrine-Signature: sha256=HEX(HMAC-SHA256(secret, TIMESTAMP "." BODY))
//   X-Peregrine-Batch: the batch's number, the same each time it is sent
// The records leave the FIFO only once the receiver answers 2xx. Anything
// else (refused, timed out, a 500, a redirect) keeps the batch at the front
// and sends the same records again after a back-off (1 s, doubling to 5
// minutes). Delivery is at least once, in the order the outcomes were
// published (so in order per message); a receiver that took a batch whose
// answer was lost sees its number again and may skip it.
//
// Lifetime: made before the shards start, destroyed after they stopped.
// The destructor lets the sender try for up to `stop_grace` more to deliver
// what is held (a request in progress is cut when the grace ends), then
// drops the rest, counted and logged. Records are not kept across a
// restart: the event log file is the durable record.
#pragma once

#include <atomic>
#include <cstdint>
#include <deque>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "mta/outcome/outcome.h"

namespace peregrine::outcome {

struct WebhookOptions {
  std::string name;         // For logs and metrics labels.
  std::string url;          // http:// or https://.
  std::vector<Kind> kinds;  // Empty: every type.
  std::string secret;       // The HMAC key.
  size_t batch = 100;
  size_t max_held = 100000;
  absl::Duration timeout = absl::Seconds(10);  // One POST, connect included.
  absl::Duration flush_every = absl::Seconds(1);
  absl::Duration backoff_first = absl::Seconds(1);
  absl::Duration backoff_max = absl::Minutes(5);
  absl::Duration stop_grace = absl::Seconds(5);
};

class Webhook : public Consumer {
 public:
  // InvalidArgument: a URL that is not http(s), an empty secret.
  static absl::StatusOr<std::unique_ptr<Webhook>> Create(
      WebhookOptions options);
  ~Webhook() override;
  Webhook(const Webhook&) = delete;
  Webhook& operator=(const Webhook&) = delete;

  void OnOutcome(const Outcome& outcome) override;

  const WebhookOptions& options() const { return options_; }
  uint64_t sent() const { return sent_.load(); }          // Records taken.
  uint64_t dropped() const { return dropped_.load(); }    // Over max_held.
  uint64_t failures() const { return failures_.load(); }  // POSTs refused.
  size_t held() const;

  // The signature header's value for `body` sent at `timestamp` (tests,
  // and receivers' documentation).
  static std::string Sign(const std::string& secret, int64_t timestamp,
                          const std::string& body);

 private:
  explicit Webhook(WebhookOptions options);
  void Run();
  // One POST; true on a 2xx. `why` says what went wrong otherwise.
  bool Post(const std::string& body, uint64_t number, std::string* why);

  const WebhookOptions options_;
  mutable absl::Mutex mu_;
  std::deque<std::string> held_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  absl::Time last_drop_log_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  uint64_t dropped_unlogged_ ABSL_GUARDED_BY(mu_) = 0;
  // When the stop grace ends (Unix ns): a POST then is aborted.
  std::atomic<int64_t> cut_at_{INT64_MAX};
  std::atomic<uint64_t> sent_{0};
  std::atomic<uint64_t> dropped_{0};
  std::atomic<uint64_t> failures_{0};
  std::thread thread_;
};

}  // namespace peregrine::outcome
