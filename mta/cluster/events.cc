#include "mta/cluster/events.h"

#include <algorithm>
#include <map>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace peregrine::cluster {

EventBatch ParseEvents(const RedisValue& xread, absl::Time now) {
  EventBatch batch;
  // [[stream, [[id, [field, value, ...]], ...]]]; nil: nothing new.
  if (xread.type != RedisValue::Type::kArray || xread.elements.empty()) {
    return batch;
  }
  const RedisValue& stream = xread.elements[0];
  if (stream.elements.size() != 2) return batch;
  for (const RedisValue& entry : stream.elements[1].elements) {
    if (entry.elements.size() != 2 ||
        entry.elements[0].type != RedisValue::Type::kString) {
      continue;
    }
    batch.last_id = entry.elements[0].str;
    std::map<std::string, std::string> f;
    const auto& kv = entry.elements[1].elements;
    for (size_t i = 0; i + 1 < kv.size(); i += 2) {
      f[kv[i].str] = kv[i + 1].str;
    }
    ClusterEvent e;
    e.node = f["n"];
    const std::string& type = f["t"];
    if (type == "pause") {
      int64_t until = 0;
      double factor = 1;
      if (f["site"].empty() || !absl::SimpleAtoi(f["until"], &until) ||
          !absl::SimpleAtod(f["factor"], &factor) || !(factor > 0)) {
        continue;
      }
      e.type = ClusterEvent::Type::kPause;
      e.site = f["site"];
      e.until = std::min(absl::FromUnixMillis(until), now + kMaxPause);
      e.backoff.rate_factor = std::clamp(factor, 0.01, 1.0);
      e.backoff.why = absl::StrCat("node ", e.node, ": ", f["why"]);
    } else if (type == "suppress" || type == "unsuppress") {
      auto entry_or = bounce::ParseCsvLine(f["v"], {});
      if (!entry_or.ok() || !entry_or->has_value()) continue;
      e.type = type == "suppress" ? ClusterEvent::Type::kSuppress
                                  : ClusterEvent::Type::kUnsuppress;
      e.entry = **entry_or;
    } else {
      continue;  // A newer node's kind of event: not ours to act on.
    }
    batch.events.push_back(std::move(e));
  }
  return batch;
}

std::vector<std::string> PauseFields(const std::string& node,
                                     const std::string& site,
                                     const delivery::Backoff& backoff,
                                     absl::Time until) {
  return {"t",      "pause",
          "n",      node,
          "site",   site,
          "until",  absl::StrCat(absl::ToUnixMillis(until)),
          "factor", absl::StrCat(backoff.rate_factor),
          "why",    backoff.why};
}

}  // namespace peregrine::cluster
