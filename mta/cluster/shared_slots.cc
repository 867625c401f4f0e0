#include "mta/cluster/shared_slots.h"

#include <algorithm>
#include <utility>

namespace peregrine::cluster {

const char kLeaseScript[] = R"lua(
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[4])
local gone = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)
for _, h in ipairs(gone) do redis.call('HDEL', KEYS[2], h) end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local others = 0
local all = redis.call('HGETALL', KEYS[2])
for i = 1, #all, 2 do
  if all[i] ~= ARGV[1] then others = others + tonumber(all[i + 1]) end
end
local grant = math.max(0, math.min(tonumber(ARGV[2]), tonumber(ARGV[3]) - others))
if grant > 0 then
  redis.call('HSET', KEYS[2], ARGV[1], grant)
  redis.call('ZADD', KEYS[1], now + ttl, ARGV[1])
else
  redis.call('HDEL', KEYS[2], ARGV[1])
  redis.call('ZREM', KEYS[1], ARGV[1])
end
redis.call('PEXPIRE', KEYS[1], ttl * 2)
redis.call('PEXPIRE', KEYS[2], ttl * 2)
return grant
)lua";

SharedSlots::SharedSlots(std::string key, std::string holder, int max,
                         int expected_nodes, SlotStore* store,
                         absl::Duration ttl, absl::Duration retry)
    : key_(std::move(key)),
      holder_(std::move(holder)),
      max_(std::max(1, max)),
      local_share_(std::max(1, max / std::max(1, expected_nodes))),
      store_(store),
      ttl_(ttl),
      retry_(retry) {}

int SharedSlots::Slots(int wanted, absl::Time now, absl::Time* wake) {
  int64_t want = std::clamp<int64_t>(wanted, 0, max_);
  bool grow = want > held_;
  bool shrink = want < held_ && now - asked_ >= absl::Seconds(1);
  bool renew = held_ > 0 && now - asked_ >= ttl_ / 3;
  if (!sharing_) {
    if (now >= retry_at_) Ask(want, now);
  } else if (grow || shrink || renew) {
    Ask(want, now);
  }
  int64_t slots = sharing_ ? held_ : local_share_;
  if (slots < want) {
    *wake = std::min(*wake, pending_ ? now + absl::Milliseconds(5)
                            : sharing_ ? now + absl::Milliseconds(200)
                                       : retry_at_);
  }
  return static_cast<int>(slots);
}

void SharedSlots::Ask(int64_t want, absl::Time now) {
  if (pending_ || store_ == nullptr) return;
  pending_ = true;
  asked_ = now;
  ++requests_;
  store_->Hold(key_, holder_, want, max_, ttl_,
               [this, alive = alive_, now](absl::StatusOr<int64_t> granted) {
                 if (!*alive) return;
                 pending_ = false;
                 if (!granted.ok()) {
                   sharing_ = false;
                   retry_at_ = now + retry_;
                   return;
                 }
                 sharing_ = true;
                 held_ = *granted;
               });
}

void FakeSlotStore::Hold(const std::string& key, const std::string& holder,
                         int64_t want, int64_t max, absl::Duration ttl,
                         Done done) {
  ++calls;
  absl::StatusOr<int64_t> answer = absl::UnavailableError("store down");
  if (!fail) {
    auto& leases = leases_[key];
    int64_t others = 0;
    for (auto it = leases.begin(); it != leases.end();) {
      if (it->second.expires <= *clock_) {
        it = leases.erase(it);
        continue;
      }
      if (it->first != holder) others += it->second.count;
      ++it;
    }
    int64_t grant = std::max<int64_t>(0, std::min(want, max - others));
    if (grant > 0) {
      leases[holder] = {grant, *clock_ + ttl};
    } else {
      leases.erase(holder);
    }
    answer = grant;
  }
  if (hold) {
    held_.emplace_back(std::move(done), std::move(answer));
  } else {
    done(std::move(answer));
  }
}

void FakeSlotStore::Release() {
  auto held = std::move(held_);
  held_.clear();
  for (auto& [done, r] : held) done(std::move(r));
}

}  // namespace peregrine::cluster
