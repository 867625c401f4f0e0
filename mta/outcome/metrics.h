// Metrics: the outcome seam's counters for the admin port's /metrics, in
// the Prometheus text format (version 0.0.4).
//
// Counted from every outcome (any shard's thread; one mutex, taken once
// per outcome, which is a few times per message):
//   peregrine_messages_received_total{listener}
//   peregrine_clients_refused_total{listener}
//   peregrine_recipients_total{outcome, site, category}
//       outcome: delivered, deferred, failed, expired; attempts only (a
//       recipient held by a suspended site is not counted)
//   peregrine_events_total{type}  the bounce-handling events by type
//   peregrine_tls_total{direction, version}  messages received ("in") and
//       recipients delivered ("out") by TLS version, "none" in the clear
//   peregrine_tls_policy_total{policy, verified}  recipients delivered by
//       the TLS policy that applied (Outcome::tls_policy) and whether the
//       certificate was verified ("true", "false", "none" in the clear)
// Label sets stay bounded: at most kMaxSites site values, then "other";
// the category is one of mta/bounce's fixed names or "".
//
// Gauges that other parts know (queue depth, connections, group commits)
// are added at render time by the caller (Render's `extra`).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <tuple>

#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "mta/outcome/outcome.h"
#include "nlohmann/json.hpp"

namespace peregrine::outcome {

class Metrics : public Consumer {
 public:
  static constexpr size_t kMaxSites = 500;

  void OnOutcome(const Outcome& outcome) override;
  // The whole exposition: the counters, then `extra` (lines the caller
  // formatted, # HELP and # TYPE included).
  std::string Render(absl::string_view extra = "") const;
  // For the status page: totals by outcome ("received", "delivered",
  // "deferred", "failed", "expired", "bounce"), the ten sites with the most
  // traffic and the ten with the most deferrals and failures (with the
  // last such reply and what to do about it: mta/advice.h), and failures
  // by category.
  nlohmann::json Status() const;

 private:
  using RecipientKey = std::tuple<std::string, std::string, std::string>;
  mutable absl::Mutex mu_;
  std::map<std::string, uint64_t> received_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, uint64_t> refused_ ABSL_GUARDED_BY(mu_);
  std::map<RecipientKey, uint64_t> recipients_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, uint64_t> events_ ABSL_GUARDED_BY(mu_);
  // Each site counted, with the last reply that deferred or failed a
  // recipient there ("" when none yet), for the status page.
  std::map<std::string, std::string> sites_ ABSL_GUARDED_BY(mu_);
  std::map<std::pair<std::string, std::string>, uint64_t> tls_
      ABSL_GUARDED_BY(mu_);
  // (policy, verified): policies are a fixed handful of names.
  std::map<std::pair<std::string, std::string>, uint64_t> tls_policy_
      ABSL_GUARDED_BY(mu_);
  void CountTls(const char* direction, const Outcome& o)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
};

// Prometheus label value escaping: backslash, double quote, newline.
std::string EscapeLabel(absl::string_view value);

}  // namespace peregrine::outcome
