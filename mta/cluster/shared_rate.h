// SharedRate: one site's message rate held across every node of a cluster
// (issue 20), through a shared store (Redis), without asking it per
// message.
//
// The store keeps one GCRA state per key (the "theoretical arrival time",
// kGcraScript below, run atomically by Redis with its own clock, so nodes'
// clocks need not agree). A node reserves tokens in small batches
// (Reserve(): up to about a tenth of a second of the rate) and spends them
// locally; it asks again when its stock runs low, one request at a time.
// Tokens a node reserved and did not use lapse with it: the cluster may
// send slightly less than the limit, never more.
//
// When the store fails (down, slow, an error), the node falls back to its
// local share, rate / expected_nodes, in a local token bucket, asks the
// store again after `retry`, and goes back to sharing when it answers.
//
// Pure: time is passed in, the store is an interface; tests use a fake
// store with the same arithmetic as the script (FakeGcraStore).
//
// Threads: one SharedRate belongs to one site on one shard. The store's
// answer must come back on that shard (the Redis client posts it there).
// Lifetime: the site owns it. An answer that arrives after the SharedRate
// is gone finds its `alive_` flag false and does nothing.
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
#include "mta/delivery/shaping.h"

namespace peregrine::cluster {

// GCRA in Redis (for EVAL): KEYS[1] the site's key; ARGV[1] the emission
// interval T (microseconds a token), ARGV[2] the burst tolerance tau
// (microseconds: T x (burst - 1)), ARGV[3] the tokens wanted. Returns
// {granted, wait}: granted 0..wanted, and when none, the microseconds
// until one is. The key expires when its state no longer matters.
extern const char kGcraScript[];

struct Reservation {
  int64_t granted = 0;
  absl::Duration wait = absl::ZeroDuration();  // When granted is 0.
};

// The shared store, asked for `want` tokens of `key`.
class RateStore {
 public:
  using Done = absl::AnyInvocable<void(absl::StatusOr<Reservation>)>;
  virtual ~RateStore() = default;
  virtual void Reserve(const std::string& key, absl::Duration interval,
                       absl::Duration tolerance, int64_t want, Done done) = 0;
};

class SharedRate {
 public:
  // `per_second` tokens a second across the cluster, up to `burst` at
  // once; `expected_nodes` (at least 1) sizes the local share.
  SharedRate(std::string key, double per_second, double burst,
             int expected_nodes, RateStore* store,
             absl::Duration retry = absl::Seconds(1));
  ~SharedRate() { *alive_ = false; }
  SharedRate(const SharedRate&) = delete;
  SharedRate& operator=(const SharedRate&) = delete;

  // Tokens asked of the store at a time: about a tenth of a second of the
  // rate, 1 to 1000. The burst allowed is at least one batch.
  static int64_t BatchFor(double per_second);

  // Takes a token when one is there (reserved, or the local share while
  // the store is failing); asks the store for more when the stock is low.
  bool TryTake(absl::Time now);
  // After TryTake said no: when to try again (an answer due, the next ask,
  // or the local share's next token).
  absl::Time NextTry(absl::Time now);

  bool sharing() const { return sharing_; }
  int64_t stock() const { return stock_; }
  uint64_t requests() const { return requests_; }  // Asked of the store.
  int64_t batch() const { return batch_; }

 private:
  void Ask(absl::Time now);

  const std::string key_;
  const absl::Duration interval_;
  const absl::Duration tolerance_;
  const int64_t batch_;
  RateStore* const store_;
  const absl::Duration retry_;
  delivery::TokenBucket local_;  // The local share, when not sharing.
  int64_t stock_ = 0;
  bool pending_ = false;
  bool sharing_ = true;
  absl::Time next_ask_ = absl::InfinitePast();
  absl::Time now_ = absl::InfinitePast();  // Of the last TryTake.
  uint64_t requests_ = 0;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

// Answers a fake store (below, shared_slots.h) gives at once, or keeps
// until Release() with `hold` (tests of late answers).
template <typename Done, typename Value>
class HeldAnswers {
 public:
  bool hold = false;
  void Give(Done done, Value answer) {
    if (!hold) return done(std::move(answer));
    held_.emplace_back(std::move(done), std::move(answer));
  }
  void Release() {
    auto held = std::move(held_);
    held_.clear();
    for (auto& [done, answer] : held) done(std::move(answer));
  }

 private:
  std::vector<std::pair<Done, Value>> held_;
};

// The script's arithmetic in memory, for tests (one process's "Redis");
// answers at once, or holds the answers until Release() with `hold`.
// `fail`: answer with an error instead.
class FakeGcraStore : public RateStore {
 private:
  HeldAnswers<Done, absl::StatusOr<Reservation>> answers_;

 public:
  explicit FakeGcraStore(absl::Time* clock) : clock_(clock) {}
  void Reserve(const std::string& key, absl::Duration interval,
               absl::Duration tolerance, int64_t want, Done done) override;
  void Release() { answers_.Release(); }
  bool fail = false;
  bool& hold = answers_.hold;
  uint64_t calls = 0;

 private:
  absl::Time* clock_;
  std::map<std::string, absl::Time> tat_;
};

}  // namespace peregrine::cluster
