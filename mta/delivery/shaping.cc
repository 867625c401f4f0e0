#include "mta/delivery/shaping.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "re2/re2.h"

namespace peregrine::delivery {

TokenBucket::TokenBucket(double rate, absl::Duration per, double burst)
    : rate_per_second_(rate <= 0 ? 0 : rate / absl::ToDoubleSeconds(per)),
      burst_(burst > 0 ? burst : std::max(1.0, rate_per_second_)),
      tokens_(burst_) {}

absl::StatusOr<TokenBucket> TokenBucket::Parse(absl::string_view text,
                                               double burst) {
  std::string t = absl::AsciiStrToLower(absl::StripAsciiWhitespace(text));
  if (t == "0" || t == "unlimited") return TokenBucket(0, absl::Seconds(1), 0);
  size_t slash = t.find('/');
  double rate = 0;
  if (slash == std::string::npos ||
      !absl::SimpleAtod(t.substr(0, slash), &rate) || rate < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "'", text,
        "' is not a rate: expected \"20/s\", \"600/m\" or \"10000/h\""));
  }
  std::string unit = t.substr(slash + 1);
  absl::Duration per;
  if (unit == "s" || unit == "sec" || unit == "second") {
    per = absl::Seconds(1);
  } else if (unit == "m" || unit == "min" || unit == "minute") {
    per = absl::Minutes(1);
  } else if (unit == "h" || unit == "hour") {
    per = absl::Hours(1);
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("'", text, "': the unit is /s, /m or /h"));
  }
  return TokenBucket(rate, per, burst);
}

void TokenBucket::Refill(absl::Time now) {
  if (last_ == absl::InfinitePast()) {
    last_ = now;
    return;
  }
  double elapsed = absl::ToDoubleSeconds(now - last_);
  if (elapsed <= 0) return;
  tokens_ = std::min(burst_, tokens_ + elapsed * rate_per_second_ * factor_);
  last_ = now;
}

bool TokenBucket::TryTake(absl::Time now) {
  if (unlimited()) return true;
  Refill(now);
  if (tokens_ < 1) return false;
  tokens_ -= 1;
  return true;
}

absl::Time TokenBucket::NextAvailable(absl::Time now) {
  if (unlimited()) return now;
  Refill(now);
  if (tokens_ >= 1) return now;
  double rate = rate_per_second_ * factor_;
  if (rate <= 0) return absl::InfiniteFuture();
  return now + absl::Seconds((1 - tokens_) / rate);
}

ConcurrencyWindow::ConcurrencyWindow(int initial, int max)
    : window_(std::max(1, std::min(initial, max))), max_(std::max(1, max)) {}

bool ConcurrencyWindow::TryAcquire() {
  if (in_flight_ >= limit()) return false;
  ++in_flight_;
  return true;
}

void ConcurrencyWindow::Release() {
  if (in_flight_ > 0) --in_flight_;
}

void ConcurrencyWindow::OnSuccess() {
  window_ = std::min<double>(max_, window_ + 1.0 / window_);
}

void ConcurrencyWindow::SetMax(int max) {
  max_ = std::max(1, max);
  window_ = std::min<double>(window_, max_);
}

void ConcurrencyWindow::OnFailure() { window_ = std::max(1.0, window_ / 2); }

std::optional<absl::Time> RetrySchedule::Next(uint32_t attempts,
                                              absl::Time received,
                                              absl::Time now,
                                              std::mt19937_64& rng) const {
  if (now - received >= options_.max_age) return std::nullopt;
  // first, 2x first, 4x first, ... up to max_delay.
  double factor =
      std::pow(2.0, std::min<uint32_t>(attempts > 0 ? attempts - 1 : 0, 30));
  absl::Duration delay = std::min(options_.first * factor, options_.max_delay);
  std::uniform_real_distribution<double> jitter(1 - options_.jitter,
                                                1 + options_.jitter);
  delay = delay * jitter(rng);
  absl::Time next = now + delay;
  // The last try is at the maximum age, not after it.
  return std::min(next, received + options_.max_age);
}

BackoffRules::BackoffRules(BackoffRules&&) = default;
BackoffRules::~BackoffRules() = default;

absl::StatusOr<BackoffRules> BackoffRules::Create(
    std::vector<BackoffRule> rules, BackoffRule on_421) {
  BackoffRules out;
  out.on_421_ = std::move(on_421);
  for (const BackoffRule& rule : rules) {
    RE2::Options options;
    options.set_case_sensitive(false);
    options.set_log_errors(false);
    auto re = std::make_unique<re2::RE2>(rule.pattern, options);
    if (!re->ok()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "back-off pattern \"", rule.pattern, "\": ", re->error()));
    }
    out.compiled_.push_back(std::move(re));
  }
  out.rules_ = std::move(rules);
  return out;
}

std::optional<Backoff> BackoffRules::Match(int code,
                                           absl::string_view text) const {
  for (size_t i = 0; i < rules_.size(); ++i) {
    if (RE2::PartialMatch(re2::StringPiece(text.data(), text.size()),
                          *compiled_[i])) {
      return Backoff{rules_[i].pause, rules_[i].rate_factor,
                     absl::StrCat("reply matches \"", rules_[i].pattern, "\"")};
    }
  }
  if (code == 421) {
    return Backoff{on_421_.pause, on_421_.rate_factor,
                   "421: the server closes the connection"};
  }
  return std::nullopt;
}

}  // namespace peregrine::delivery
