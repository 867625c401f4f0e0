// BounceInbox: mail that comes back to the bounce domains (asynchronous
// DSNs, plain-text bounces, feedback-loop complaints) read, matched to the
// recipient it is about, and acted on. Never relayed, never queued.
//
// Matching: through the VERP token (verp.h) in the envelope recipient, or
// in the returned message's return path. A token whose signature is wrong
// is a forgery and changes nothing; a report without any token is logged
// (`async_bounce` with no match) and suppresses no one, since anybody can
// write one.
//
// Threads and lifetime: Submit() is called from shards and hands the
// message to the inbox's own thread, which parses it (report.h), writes the
// suppression list and publishes `async_bounce`, `complaint` and
// `suppressed` events, then calls `done` there. At most kMaxWaiting
// messages wait; past that Submit() answers Unavailable at once (the
// client gets 451 and sends it again later). Stop() finishes what waits
// and joins; the owner calls it after the shards are joined. `bus`,
// `suppression` and the classifier outlive it.
#pragma once

#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "mta/bounce/category.h"
#include "mta/bounce/classifier.h"
#include "mta/bounce/report.h"
#include "mta/bounce/suppression.h"
#include "mta/bounce/verp.h"
#include "mta/outcome/outcome.h"

namespace peregrine::bounce {

struct InboxOptions {
  VerpOptions verp;
  std::vector<std::string> domains;  // Besides verp.domain.
  // Failure categories that suppress the address (as for synchronous
  // failures), and whether complaints do.
  std::vector<Category> suppress;
  bool suppress_complaints = true;
  std::string suppress_scope;  // Unused: a VERP match has no tags.
  absl::Duration suppress_for = absl::ZeroDuration();
  // The classification rules in force (replaced on SIGHUP).
  std::function<std::shared_ptr<const Classifier>()> classifier;
};

// What one message taught.
struct InboxResult {
  Report report;
  bool matched = false;  // A valid VERP token named the recipient.
  VerpMatch match;
  std::string verp_error;  // A token that failed its check.
  int suppressed = 0;
  std::string Summary() const;
};

class BounceInbox {
 public:
  static constexpr size_t kMaxWaiting = 256;

  BounceInbox(InboxOptions options, const outcome::Bus* bus,
              SuppressionList* suppression);
  ~BounceInbox();

  // Whether mail for `domain` is read here (case-insensitive).
  bool IsBounceDomain(absl::string_view domain) const;

  using Done = absl::AnyInvocable<void(absl::Status, std::string summary)>;
  void Submit(std::string message, std::vector<std::string> recipients,
              std::string client, Done done);
  void Stop();

  // The work of one message, on the calling thread (tests; the CLI).
  InboxResult Process(absl::string_view message,
                      const std::vector<std::string>& recipients,
                      absl::string_view client);

 private:
  struct Item {
    std::string message;
    std::vector<std::string> recipients;
    std::string client;
    Done done;
  };
  void Main();
  void Suppress(const std::string& address, const std::string& category,
                const std::string& reason, const std::string& source,
                const outcome::Outcome& about);

  const InboxOptions options_;
  const outcome::Bus* const bus_;
  SuppressionList* const suppression_;
  absl::Mutex mu_;
  std::deque<Item> waiting_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

}  // namespace peregrine::bounce
