// What a Redis server (or anything answering in its place) sends the
// cluster: bytes read as RESP replies (mta/cluster/resp.h, hiredis's
// reader), each read as the events stream's XREAD answer
// (mta/cluster/events.h). Never crashes; every pause read is at most
// kMaxPause long and slows down to no less than 1% of the rates.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "absl/time/time.h"
#include "mta/cluster/events.h"
#include "mta/cluster/resp.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using peregrine::cluster::ClusterEvent;
  const absl::Time now = absl::FromUnixSeconds(1795848233);
  peregrine::cluster::RespReader reader;
  // In two pieces: a reply split across reads.
  size_t half = size / 2;
  reader.Feed(std::string(reinterpret_cast<const char*>(data), half));
  for (int round = 0; round < 2; ++round) {
    while (true) {
      auto reply = reader.Next();
      if (!reader.error().empty()) return 0;
      if (!reply.ok()) continue;  // An error reply: the next one.
      if (!reply->has_value()) break;
      auto batch = peregrine::cluster::ParseEvents(**reply, now);
      for (const ClusterEvent& e : batch.events) {
        if (e.type != ClusterEvent::Type::kPause) continue;
        if (e.until > now + peregrine::cluster::kMaxPause) abort();
        if (!(e.backoff.rate_factor >= 0.01 && e.backoff.rate_factor <= 1)) {
          abort();
        }
      }
    }
    reader.Feed(
        std::string(reinterpret_cast<const char*>(data) + half, size - half));
  }
  return 0;
}
