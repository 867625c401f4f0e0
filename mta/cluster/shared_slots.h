// SharedSlots: one site's maximum of concurrent connections held across
// every node of a cluster (issue 20), as leases in a shared store (Redis).
//
// Each holder (a node's shard) keeps one lease: how many connections it
// may have open and how many it wants, with an expiry. kLeaseScript sets a
// holder's count to what it wants, as far as the maximum less the others'
// live leases allows, and drops leases past their expiry first, so a
// crashed node's connections count no longer than `ttl`. Fairness: while
// another holder wants more than it holds, no holder is granted more than
// max / (holders wanting), at least one; the one above gives back the rest
// at its next renewal (its connections above the grant finish and are not
// replaced). A holder asks when it wants more than it holds (one request
// at a time; after a short answer, each kShort), and renews each kRenew,
// giving back what it no longer needs.
//
// When the store fails, the holder keeps to its local share (max /
// expected_nodes, at least one) and asks again after `retry`.
//
// Pure: time is passed in; the store is an interface (FakeSlotStore runs
// the script's logic in memory for tests).
// Threads and lifetime: as SharedRate's (shared_rate.h): one shard's; an
// answer after the object is gone does nothing.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/functional/any_invocable.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "mta/cluster/shared_rate.h"

namespace peregrine::cluster {

// For EVAL: KEYS[1] the site's expiries (sorted set), KEYS[2] the counts
// held, KEYS[3] the counts wanted (hashes); ARGV[1] the holder, ARGV[2]
// how many it wants, ARGV[3] the maximum, ARGV[4] the lease's time to
// live in milliseconds. Returns the
// count granted (0..wanted).
extern const char kLeaseScript[];

class SlotStore {
 public:
  using Done = absl::AnyInvocable<void(absl::StatusOr<int64_t>)>;
  virtual ~SlotStore() = default;
  virtual void Hold(const std::string& key, const std::string& holder,
                    int64_t want, int64_t max, absl::Duration ttl,
                    Done done) = 0;
};

class SharedSlots {
 public:
  static constexpr absl::Duration kShort = absl::Milliseconds(200);
  static constexpr absl::Duration kRenew = absl::Seconds(1);

  SharedSlots(std::string key, std::string holder, int max, int expected_nodes,
              SlotStore* store, absl::Duration ttl = absl::Seconds(15),
              absl::Duration retry = absl::Seconds(1));
  ~SharedSlots() { *alive_ = false; }
  SharedSlots(const SharedSlots&) = delete;
  SharedSlots& operator=(const SharedSlots&) = delete;

  // How many connections this holder may have open now, wanting `wanted`
  // (asks the store as the rules above say). When that is fewer than
  // wanted, *wake is when to ask again.
  int Slots(int wanted, absl::Time now, absl::Time* wake);

  bool sharing() const { return sharing_; }
  int64_t held() const { return held_; }
  uint64_t requests() const { return requests_; }

 private:
  void Ask(int64_t want, absl::Time now);

  const std::string key_;
  const std::string holder_;
  const int64_t max_;
  const int64_t local_share_;
  SlotStore* const store_;
  const absl::Duration ttl_;
  const absl::Duration retry_;
  int64_t held_ = 0;
  bool pending_ = false;
  bool sharing_ = true;
  bool short_ = false;  // The last answer granted less than asked.
  absl::Time asked_ = absl::InfinitePast();
  absl::Time retry_at_ = absl::InfinitePast();
  uint64_t requests_ = 0;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

// The script's logic in memory, for tests; `hold` keeps answers until
// Release(), `fail` answers with an error.
class FakeSlotStore : public SlotStore {
 private:
  HeldAnswers<Done, absl::StatusOr<int64_t>> answers_;

 public:
  explicit FakeSlotStore(absl::Time* clock) : clock_(clock) {}
  void Hold(const std::string& key, const std::string& holder, int64_t want,
            int64_t max, absl::Duration ttl, Done done) override;
  void Release() { answers_.Release(); }
  bool fail = false;
  bool& hold = answers_.hold;
  uint64_t calls = 0;

 private:
  struct Lease {
    int64_t count = 0;
    int64_t want = 0;
    absl::Time expires;
  };
  absl::Time* clock_;
  std::map<std::string, std::map<std::string, Lease>> leases_;
};

}  // namespace peregrine::cluster
