// SRS, the Sender Rewriting Scheme (Shevek's, as libsrs2 and postsrsd
// write it): mail forwarded to another domain keeps passing SPF there
// because its return path becomes one of ours, and a bounce to that path
// finds its way back to the original sender.
//
//   alice@sender.example    → SRS0=HHHH=TT=sender.example=alice@SRS-DOMAIN
//   SRS0=HHHH=TT=d=u@other  → SRS1=HHHH=other==HHHH=TT=d=u@SRS-DOMAIN
//
// TT is the day (base32, mod 1024) and HHHH the first 4 base64 characters
// of HMAC-SHA1(secret, the lower-cased parts). Reverse() takes an address
// back only with a right hash and a day less than `max_age_days` old, so
// nobody can use the SRS domain as an open relay for bounces.
//
// Pure functions; no state. Written by hand: Debian 12 has no libsrs2, and
// postsrsd is a daemon (a socketmap for Postfix), not a library.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace peregrine::local {

struct SrsOptions {
  std::string domain;  // The domain of rewritten addresses.
  std::string secret;  // At least 16 bytes.
  int max_age_days = 21;
};

// The rewritten return path for `sender` (mail forwarded now). An address
// already in `options.domain`, or whose domain holds '=', is returned as
// it is.
std::string SrsForward(const SrsOptions& options, absl::string_view sender,
                       absl::Time now);

// True when `address` is shaped as an SRS address of ours (SRS0= or SRS1=
// at options.domain, any case).
bool IsSrsAddress(const SrsOptions& options, absl::string_view address);

// The address an SRS address stands for: the original sender (SRS0), or
// the previous forwarder's SRS0 address (SRS1). PermissionDenied for a
// wrong hash, DeadlineExceeded when too old, InvalidArgument when
// malformed.
absl::StatusOr<std::string> SrsReverse(const SrsOptions& options,
                                       absl::string_view address,
                                       absl::Time now);

}  // namespace peregrine::local
