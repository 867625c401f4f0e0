#include "mta/cluster/shared_rate.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <utility>

namespace peregrine::cluster {

// TAT: the theoretical arrival time of the next token, in microseconds of
// Redis's clock. A request for k tokens is allowed while
// max(TAT, now) + k*T - now <= tau + T.
const char kGcraScript[] = R"lua(
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local want = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local room = math.floor((now + tolerance + interval - tat) / interval)
local granted = math.max(0, math.min(want, room))
if granted == 0 then
  return {0, tat - now - tolerance}
end
tat = tat + granted * interval
redis.call('SET', KEYS[1], tat, 'PX', math.ceil((tat - now) / 1000) + 1000)
return {granted, 0}
)lua";

SharedRate::SharedRate(std::string key, double per_second, double burst,
                       int expected_nodes, RateStore* store,
                       absl::Duration retry)
    : key_(std::move(key)),
      interval_(absl::Seconds(1) / std::max(per_second, 1e-9)),
      tolerance_(interval_ *
                 std::max(0.0, std::max(burst, static_cast<double>(
                                                   BatchFor(per_second))) -
                                   1)),
      batch_(BatchFor(per_second)),
      store_(store),
      retry_(retry),
      local_(per_second / std::max(1, expected_nodes), absl::Seconds(1),
             std::max(1.0, burst / std::max(1, expected_nodes))) {}

int64_t SharedRate::BatchFor(double per_second) {
  // About a tenth of a second of the rate: few requests, little lost.
  return std::clamp<int64_t>(static_cast<int64_t>(per_second / 10), 1, 1000);
}

bool SharedRate::TryTake(absl::Time now) {
  now_ = now;
  if (stock_ <= batch_ / 2) Ask(now);
  if (stock_ > 0) {
    --stock_;
    return true;
  }
  if (!sharing_) return local_.TryTake(now);
  return false;
}

absl::Time SharedRate::NextTry(absl::Time now) {
  // An answer from a store on the same machine or network comes in well
  // under this.
  constexpr absl::Duration kPoll = absl::Milliseconds(5);
  absl::Time ask = pending_ ? now + kPoll : std::max(next_ask_, now + kPoll);
  if (!sharing_) return std::min(ask, local_.NextAvailable(now));
  return ask;
}

void SharedRate::Ask(absl::Time now) {
  if (pending_ || now < next_ask_ || store_ == nullptr) return;
  pending_ = true;
  ++requests_;
  store_->Reserve(key_, interval_, tolerance_, batch_,
                  [this, alive = alive_](absl::StatusOr<Reservation> r) {
                    if (!*alive) return;
                    pending_ = false;
                    if (!r.ok()) {
                      // The store failed: the local share until it answers
                      // again.
                      sharing_ = false;
                      next_ask_ = now_ + retry_;
                      return;
                    }
                    sharing_ = true;
                    stock_ += r->granted;
                    // Less than a batch: the cluster is at its rate. Ask
                    // again once a batch's worth could have come in, not
                    // at every try: a request a batch, not a message.
                    if (r->granted < batch_) {
                      next_ask_ =
                          now_ +
                          std::max(r->wait, interval_ * (batch_ - r->granted));
                    }
                  });
}

void FakeGcraStore::Reserve(const std::string& key, absl::Duration interval,
                            absl::Duration tolerance, int64_t want, Done done) {
  ++calls;
  auto answer = [this, &done](absl::StatusOr<Reservation> r) {
    answers_.Give(std::move(done), std::move(r));
  };
  if (fail) return answer(absl::UnavailableError("store down"));
  absl::Time now = *clock_;
  auto [it, fresh] = tat_.try_emplace(key, now);
  absl::Time tat = std::max(it->second, now);
  int64_t room = static_cast<int64_t>(
      std::floor((now + tolerance + interval - tat) / interval));
  int64_t granted = std::max<int64_t>(0, std::min(want, room));
  if (granted == 0) return answer(Reservation{0, tat - now - tolerance});
  it->second = tat + interval * granted;
  answer(Reservation{granted, absl::ZeroDuration()});
}

}  // namespace peregrine::cluster
