// SPF records from DNS are untrusted: check_host() (mta/doctor/spf.h) on
// any record. Every TXT name answers with the same bytes (so include and
// redirect recurse into them), every A name with one address. Never
// crashes or loops; at most 10 DNS-querying terms are evaluated (the
// eleventh is the permerror), and the look-ups stay bounded.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "mta/doctor/spf.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace peregrine;
  std::string record(reinterpret_cast<const char*>(data), size);
  int lookups = 0;
  doctor::SpfLookup lookup =
      [&](const std::string& name,
          uint16_t type) -> absl::StatusOr<dns::BlockingAnswer> {
    ++lookups;
    dns::BlockingAnswer a;
    dns::Record r;
    r.name = name;
    r.type = type;
    if (type == dns::kTxt) {
      r.texts = {std::string("v=spf1 ") + record};
    } else if (type == dns::kA) {
      r.address = *dns::IpAddress::Parse("192.0.2.1");
    } else if (type == dns::kMx) {
      r.target = "mx." + name;
    } else if (type == dns::kPtr) {
      r.target = "host.example.com";
    } else {
      return a;
    }
    a.records.push_back(r);
    return a;
  };
  for (const char* ip : {"192.0.2.1", "2001:db8::1"}) {
    auto v = doctor::CheckHost(lookup, *dns::IpAddress::Parse(ip),
                               "example.com", "a@example.com");
    if (v.dns_terms > 11) abort();
  }
  // 10 terms × (10 MX or PTR names × 2 look-ups + 1), twice.
  if (lookups > 2 * (1 + 11 * 22)) abort();
  return 0;
}
