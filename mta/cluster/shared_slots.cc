#include "mta/cluster/shared_slots.h"

#include <algorithm>
#include <utility>

namespace peregrine::cluster {

const char kLeaseScript[] = R"lua(
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local me = ARGV[1]
local want = tonumber(ARGV[2])
local max = tonumber(ARGV[3])
local ttl = tonumber(ARGV[4])
local gone = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)
for _, h in ipairs(gone) do
  redis.call('HDEL', KEYS[2], h)
  redis.call('HDEL', KEYS[3], h)
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local holds = {}
local all = redis.call('HGETALL', KEYS[2])
for i = 1, #all, 2 do holds[all[i]] = tonumber(all[i + 1]) end
local others = 0
for h, n in pairs(holds) do
  if h ~= me then others = others + n end
end
local wanting = want > 0 and 1 or 0
local starved = false
local wants = redis.call('HGETALL', KEYS[3])
for i = 1, #wants, 2 do
  local h, w = wants[i], tonumber(wants[i + 1])
  if h ~= me and w > 0 then
    wanting = wanting + 1
    if w > (holds[h] or 0) then starved = true end
  end
end
local grant = math.min(want, max - others)
if starved then
  grant = math.min(grant, math.max(1, math.floor(max / wanting)))
end
grant = math.max(0, grant)
if want > 0 then
  redis.call('HSET', KEYS[2], me, grant)
  redis.call('HSET', KEYS[3], me, want)
  redis.call('ZADD', KEYS[1], now + ttl, me)
else
  redis.call('HDEL', KEYS[2], me)
  redis.call('HDEL', KEYS[3], me)
  redis.call('ZREM', KEYS[1], me)
end
for i = 1, 3 do redis.call('PEXPIRE', KEYS[i], ttl * 2) end
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
  // Growing: at once, unless the last answer was short (the others hold
  // the rest), then every kShort. Giving back, and renewing (which also
  // gives back what exceeds a fair part while another node waits): each
  // kRenew.
  bool grow = want > held_ && (!short_ || now - asked_ >= kShort);
  bool renew = (held_ > 0 || want > 0) && now - asked_ >= kRenew;
  if (!sharing_) {
    if (now >= retry_at_) Ask(want, now);
  } else if (grow || renew) {
    Ask(want, now);
  }
  int64_t slots = sharing_ ? held_ : local_share_;
  if (slots < want) {
    *wake = std::min(*wake, pending_   ? now + absl::Milliseconds(5)
                            : sharing_ ? std::max(asked_ + kShort, now)
                                       : retry_at_);
  }
  return static_cast<int>(slots);
}

void SharedSlots::Ask(int64_t want, absl::Time now) {
  if (pending_ || store_ == nullptr) return;
  pending_ = true;
  asked_ = now;
  ++requests_;
  store_->Hold(
      key_, holder_, want, max_, ttl_,
      [this, alive = alive_, now, want](absl::StatusOr<int64_t> granted) {
        if (!*alive) return;
        pending_ = false;
        if (!granted.ok()) {
          sharing_ = false;
          retry_at_ = now + retry_;
          return;
        }
        sharing_ = true;
        short_ = *granted < want;
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
    for (auto it = leases.begin(); it != leases.end();) {
      it = it->second.expires <= *clock_ ? leases.erase(it) : std::next(it);
    }
    int64_t others = 0;
    int64_t wanting = want > 0 ? 1 : 0;
    bool starved = false;
    for (const auto& [h, l] : leases) {
      if (h == holder) continue;
      others += l.count;
      if (l.want > 0) ++wanting;
      if (l.want > l.count) starved = true;
    }
    int64_t grant = std::min(want, max - others);
    if (starved) {
      grant = std::min(grant, std::max<int64_t>(1, max / wanting));
    }
    grant = std::max<int64_t>(0, grant);
    if (want > 0) {
      leases[holder] = {grant, want, *clock_ + ttl};
    } else {
      leases.erase(holder);
    }
    answer = grant;
  }
  answers_.Give(std::move(done), std::move(answer));
}

}  // namespace peregrine::cluster
