// MTA-STS policies and records from any web or DNS server
// (mta/delivery/mta_sts.h): never crash; a parsed policy has a valid
// max_age, an mx unless its mode is none, and every mx pattern matches a
// host made from it.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "absl/strings/match.h"
#include "mta/delivery/mta_sts.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace peregrine::delivery;
  std::string in(reinterpret_cast<const char*>(data), size);
  (void)ParseStsRecord(in);
  auto policy = ParseStsPolicy(in);
  if (!policy.ok()) return 0;
  if (policy->max_age < 0 || policy->max_age > 31557600) abort();
  if (policy->mode != StsMode::kNone && policy->mx.empty()) abort();
  for (const std::string& p : policy->mx) {
    std::string host = absl::StartsWith(p, "*.") ? "mx" + p.substr(1) : p;
    if (!StsMxMatches(p, host) || !StsAllows(*policy, host)) abort();
    (void)StsMxMatches(p, in);
  }
  return 0;
}
