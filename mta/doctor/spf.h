// SPF: does a domain authorise an IP address to send its mail? RFC 7208's
// check_host(), evaluated by `peregrine doctor` for each egress address.
//
// Every mechanism (all, include, a, mx, ptr, ip4, ip6, exists), the
// redirect modifier, macros (%{s l o d i p v h}, digits, r, delimiters),
// the limit of 10 terms that look up DNS (4.6.4), of 10 MX or PTR names
// each, and of 2 void look-ups. `exp=` is parsed, not fetched.
//
// Written by hand rather than with Debian's libspf2: libspf2 asks the
// system resolver only (doctor must ask the servers of [dns], and its
// tests a local NSD), and its upstream has been quiet since 2012 with CVEs
// patched downstream. Pure but for `lookup` (an evaluation ends early by
// an exception that never leaves spf.cc); tested against RFC 7208
// Appendix A's examples (tests/mta/doctor/spf_test.cc).
#pragma once

#include <functional>
#include <string>

#include "absl/status/statusor.h"
#include "dns/blocking_client.h"
#include "dns/message.h"

namespace peregrine::doctor {

enum class SpfResult {
  kNone,
  kNeutral,
  kPass,
  kFail,
  kSoftFail,
  kTempError,
  kPermError
};
const char* SpfResultName(SpfResult r);

// The records of a type at a name; Unavailable for a DNS failure.
using SpfLookup = std::function<absl::StatusOr<dns::BlockingAnswer>(
    const std::string& name, uint16_t type)>;

struct SpfVerdict {
  SpfResult result = SpfResult::kNone;
  std::string record;       // The domain's v=spf1 record, when found.
  std::string explanation;  // Which term decided, or what was wrong.
  int dns_terms = 0;        // Terms that looked up DNS (at most 10).
};

// check_host(ip, domain, sender). `sender` may be "" (postmaster@domain).
SpfVerdict CheckHost(const SpfLookup& lookup, const dns::IpAddress& ip,
                     const std::string& domain, const std::string& sender);

}  // namespace peregrine::doctor
