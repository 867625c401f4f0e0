// StsCache: the MTA-STS policies (RFC 8461) Peregrine has fetched, kept
// until their max_age in the queue's side table (queue/table.h, RocksDB),
// so they survive a restart, and what it knows for a while without one:
// domains that publish no `_mta-sts` record (an hour, in memory) and
// domains whose announced policy could not be fetched (since when).
//
// Threads: any; one mutex. Put() writes the side table (a synced write) and
// so must not run on a shard's reactor: the fetcher calls it from its own
// threads. Everything else touches memory only.
//
// Lifetime: made by the daemon before the shards start, with the queue's
// side table (which outlives it), destroyed after the shards stopped.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "mta/delivery/mta_sts.h"
#include "queue/table.h"

namespace peregrine::delivery {

struct StsCacheEntry {
  StsPolicy policy;
  std::string id;      // The TXT record's id when it was fetched.
  absl::Time fetched;  // Valid until fetched + policy.max_age.
  absl::Time checked;  // The TXT record last looked at (memory only).
  absl::Time Expires() const { return fetched + absl::Seconds(policy.max_age); }
};

class StsCache {
 public:
  // How long a domain without an `_mta-sts` record is not asked again.
  static constexpr absl::Duration kNoPolicyFor = absl::Hours(1);
  // How often the TXT record of a cached policy is looked at again (a new
  // id means a new policy: RFC 8461 3.3).
  static constexpr absl::Duration kCheckEvery = absl::Hours(1);
  // Side-table keys: kKeyPrefix + the domain.
  static constexpr char kKeyPrefix[] = "mta-sts/";

  // `table`: where policies are kept; null: memory only (tests).
  explicit StsCache(queue::Table* table) : table_(table) {}

  // Reads the kept policies; expired or unreadable ones are deleted.
  // Returns how many were kept.
  absl::StatusOr<size_t> Load(absl::Time now);

  // The domain's policy while it is valid (not past max_age).
  std::optional<StsCacheEntry> Get(const std::string& domain,
                                   absl::Time now) const;
  // Keeps a freshly fetched policy (and clears a fetch failure). Writes
  // the side table: not on a reactor.
  absl::Status Put(const std::string& domain, const StsCacheEntry& entry);
  // The TXT record still says the cached policy's id.
  void Checked(const std::string& domain, absl::Time now);

  // The domain has no (single, valid) `_mta-sts` record.
  void NoPolicy(const std::string& domain, absl::Time now);
  bool KnownNone(const std::string& domain, absl::Time now) const;

  // Fetches of an announced policy that failed: since when (the first of
  // this run of them), the last one, and why.
  struct Failure {
    absl::Time since;
    absl::Time last;
    std::string why;
    bool invalid = false;  // The last one fetched a policy that is not one.
  };
  // A fetch failed; returns the run of failures it belongs to.
  Failure Failed(const std::string& domain, absl::Time now, std::string why,
                 bool invalid = false);
  std::optional<Failure> FailureOf(const std::string& domain) const;

  size_t size() const;

  // The kept form (JSON) and back; nullopt for anything malformed.
  static std::string Encode(const StsCacheEntry& entry);
  static std::optional<StsCacheEntry> Decode(absl::string_view text);

 private:
  // Memory bounds: a domain set that grows without end (spam to random
  // domains) must not grow these without end.
  static constexpr size_t kMaxRemembered = 100000;

  queue::Table* const table_;
  mutable absl::Mutex mu_;
  absl::flat_hash_map<std::string, StsCacheEntry> policies_
      ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<std::string, absl::Time> none_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<std::string, Failure> failures_ ABSL_GUARDED_BY(mu_);
};

}  // namespace peregrine::delivery
