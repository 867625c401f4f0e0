// Suspensions: sites held by the operator at run time (the admin API's
// POST /api/v1/queue/suspend), on top of the configuration's
// `suspended = true` rules.
//
// Each names a recipient domain ("example.com", "*.example.com"), an MX
// suffix (".outlook.com": every domain whose MX hosts end so), a campaign
// a tenant (the message's tags) or one message, with a reason and an optional
// end. Domains and suffixes become site rules appended after the
// configuration's (policy.h), so the engine holds that mail exactly as for
// a suspended rule; campaigns and tenants become DeliveryOptions'
// held_campaigns and held_tenants, whose mail the engine parks in the queue
// before routing it. Either way unattempted, its time not counted toward
// the maximum age. They are kept in a file in the data directory (written
// whole, then renamed), so a restart keeps them.
//
// Thread-safe: the admin port's shards change them, the main thread
// expires them.
#pragma once

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "mta/delivery/policy.h"
#include "nlohmann/json.hpp"
#include "queue/types.h"

namespace peregrine::delivery {

struct Suspension {
  // Exactly one of the four is set.
  std::string domain;
  std::string mx_suffix;
  std::string campaign;
  std::string tenant;
  queue::MessageId id = 0;  // One message.
  std::string reason;
  absl::Time since;
  absl::Time until = absl::InfiniteFuture();
};

class Suspensions {
 public:
  explicit Suspensions(std::string path) : path_(std::move(path)) {}

  // Reads the file; none is no suspension. A garbled file is an error
  // naming it.
  absl::Status Load();
  // Adds `s`, or replaces the one with the same target. Refuses a domain
  // that is not one, a tag with control characters or over 200 bytes, and
  // none or several targets.
  absl::Status Add(Suspension s);
  // Removes the one with `target`'s target; false when there was none.
  absl::StatusOr<bool> Remove(const Suspension& target);
  // Drops those whose end passed; true if any went (and the file changed).
  bool Expire(absl::Time now);
  // One site rule (suspended = true) per domain or suffix suspension.
  std::vector<SiteRule> Rules() const;
  // The campaigns, the tenants and the messages held.
  std::vector<std::string> Campaigns() const;
  std::vector<std::string> Tenants() const;
  std::vector<queue::MessageId> Messages() const;
  // "example.com", ".outlook.com", "campaign spring", "tenant acme",
  // "message 0661492E13314600".
  static std::string Target(const Suspension& s);
  std::vector<Suspension> List() const;
  static nlohmann::json ToJson(const Suspension& s);

 private:
  absl::Status SaveLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const std::string path_;
  mutable absl::Mutex mu_;
  std::vector<Suspension> list_ ABSL_GUARDED_BY(mu_);
};

// A plausible domain or pattern: letters, digits, '-', '.', an optional
// leading "*." (domains) or '.' (MX suffixes); at most 253 bytes.
bool PlausibleDomain(absl::string_view text, bool suffix);

}  // namespace peregrine::delivery
