// MTA-STS (RFC 8461): the policy a receiving domain publishes over HTTPS
// and the TXT record that announces it, parsed; and which MX hosts a
// policy allows. Pure: text in, values out; fetching and caching come with
// the delivery engine's MTA-STS support (issue 19, not yet built).
//
// Untrusted input (any web server's bytes): every error is a Status, never
// a crash; the policy is refused past 64 KiB (RFC 8461 3.3).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace peregrine::delivery {

enum class StsMode { kEnforce, kTesting, kNone };
// "enforce", "testing", "none": as the policy file says it.
absl::string_view StsModeName(StsMode mode);

struct StsPolicy {
  StsMode mode = StsMode::kNone;
  std::vector<std::string> mx;  // Patterns, lower case: "mx.example.com",
                                // "*.example.net".
  int64_t max_age = 0;          // Seconds, at most 31557600.
};

// The policy file (RFC 8461 3.2): "key: value" lines, CRLF or LF; version
// STSv1, mode, max_age and (unless mode is none) at least one mx are
// required; unknown keys are ignored; the first of a repeated key other
// than mx counts. InvalidArgument names the line and what is wrong.
absl::StatusOr<StsPolicy> ParseStsPolicy(absl::string_view text);

// The `_mta-sts.DOMAIN` TXT record (RFC 8461 3.1): "v=STSv1; id=...;".
// Returns the id (1 to 32 letters and digits).
absl::StatusOr<std::string> ParseStsRecord(absl::string_view text);

// Whether `host` (an MX name, any case, a final dot allowed) matches
// `pattern`: exactly, or "*.example.com" for one more leftmost label
// (RFC 8461 4.1).
bool StsMxMatches(absl::string_view pattern, absl::string_view host);

// Whether any of the policy's mx patterns matches `host`.
bool StsAllows(const StsPolicy& policy, absl::string_view host);

}  // namespace peregrine::delivery
