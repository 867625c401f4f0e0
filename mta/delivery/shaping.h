// Traffic shaping for one destination site: pure logic, time passed in.
//
// Owned by the shard that owns the site; no locks, no clocks, no I/O, so the
// scheduler is tested with a fake clock.
//   TokenBucket        a rate (per second, minute or hour) with a burst
//   ConcurrencyWindow  Postfix-style: slow start, +1 per window of successes,
//                      halved on failure, never below 1
//   RetrySchedule      exponential back-off with jitter up to a maximum
//                      age, then expiry (a permanent failure)
//   BackoffRules       replies that mean "slow down" (421, or text that
//                      matches a configured pattern): pause the site
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace re2 {
class RE2;
}

namespace peregrine::delivery {

class TokenBucket {
 public:
  // `rate` tokens per `per`; up to `burst` saved. rate 0: unlimited.
  TokenBucket(double rate, absl::Duration per, double burst);
  // "20/s", "600/m", "10000/h"; "0" or "unlimited" for none.
  static absl::StatusOr<TokenBucket> Parse(absl::string_view text,
                                           double burst = 0);

  bool TryTake(absl::Time now);
  // When the next token is there (now if one is).
  absl::Time NextAvailable(absl::Time now);
  // Runs at `factor` of the configured rate (back-off); 1 restores.
  void Scale(double factor) { factor_ = factor; }
  bool unlimited() const { return rate_per_second_ <= 0; }
  double per_second() const { return rate_per_second_; }
  double burst() const { return burst_; }

 private:
  void Refill(absl::Time now);

  double rate_per_second_;
  double burst_;
  double tokens_;
  double factor_ = 1.0;
  absl::Time last_ = absl::InfinitePast();
};

class ConcurrencyWindow {
 public:
  ConcurrencyWindow(int initial, int max);
  int limit() const { return static_cast<int>(window_); }
  int in_flight() const { return in_flight_; }
  // A new maximum (configuration reloaded); the window shrinks to it.
  void SetMax(int max);
  bool TryAcquire();
  void Release();
  // One delivery went well: the window grows by one per window's worth of
  // successes (additive increase).
  void OnSuccess();
  // A connection or delivery failed: halve (multiplicative decrease).
  void OnFailure();

 private:
  double window_;
  int max_;
  int in_flight_ = 0;
};

struct RetryOptions {
  absl::Duration first = absl::Minutes(5);
  absl::Duration max_delay = absl::Hours(4);
  absl::Duration max_age = absl::Hours(24 * 5);
  double jitter = 0.1;  // +-10%.
};

class RetrySchedule {
 public:
  explicit RetrySchedule(RetryOptions options) : options_(options) {}
  // The next attempt after `attempts` failed ones, or nullopt when the
  // message is too old: it expires.
  std::optional<absl::Time> Next(uint32_t attempts, absl::Time received,
                                 absl::Time now, std::mt19937_64& rng) const;

 private:
  RetryOptions options_;
};

struct BackoffRule {
  std::string pattern;  // RE2, matched against the reply text.
  absl::Duration pause = absl::Minutes(5);
  double rate_factor = 0.5;  // Of the configured rates while it lasts.
};

struct Backoff {
  absl::Duration pause;
  double rate_factor;
  std::string why;
};

class BackoffRules {
 public:
  // Fails naming the pattern that does not compile.
  // `on_421`: the pause and rate factor a 421 reply brings when no
  // pattern matches.
  static absl::StatusOr<BackoffRules> Create(std::vector<BackoffRule> rules,
                                             BackoffRule on_421 = {
                                                 "", absl::Minutes(1), 0.5});
  BackoffRules(BackoffRules&&);
  ~BackoffRules();
  // What a reply asks for: 421 always pauses; other replies when their text
  // matches a rule.
  std::optional<Backoff> Match(int code, absl::string_view text) const;

 private:
  BackoffRules() = default;
  std::vector<BackoffRule> rules_;
  BackoffRule on_421_;
  std::vector<std::unique_ptr<re2::RE2>> compiled_;
};

}  // namespace peregrine::delivery
