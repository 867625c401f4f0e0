// The admin port's live status page (GET /): one HTML document with its
// style and script inline, compiled into the binary. The script polls
// /api/v1/status every two seconds and shows the queue, the rates (from
// the counters' change between polls), a throughput chart of the last
// five minutes, the busiest and the most troubled sites and the failures
// by category. No library, nothing fetched from elsewhere. The page itself
// holds no data and is served without a token; off loopback open it as
// /#token=TOKEN and the script sends that token for the data (a fragment
// never leaves the browser: no token in logs or Referer headers).
#pragma once

namespace peregrine {

extern const char kStatusPageHtml[];

}  // namespace peregrine
