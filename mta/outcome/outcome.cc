#include "mta/outcome/outcome.h"

namespace peregrine::outcome {

absl::string_view KindName(Kind kind) {
  switch (kind) {
    case Kind::kReceived:
      return "received";
    case Kind::kRejected:
      return "rejected";
    case Kind::kDelivered:
      return "delivered";
    case Kind::kDeferred:
      return "deferred";
    case Kind::kFailed:
      return "failed";
    case Kind::kExpired:
      return "expired";
    case Kind::kBounce:
      return "bounce";
    case Kind::kDsnSent:
      return "dsn_sent";
    case Kind::kAsyncBounce:
      return "async_bounce";
    case Kind::kComplaint:
      return "complaint";
    case Kind::kSuppressed:
      return "suppressed";
    case Kind::kSuppressionHit:
      return "suppression_hit";
    case Kind::kAdmin:
      return "admin";
  }
  return "unknown";
}

bool IsTerminal(Kind kind) {
  return kind == Kind::kDelivered || kind == Kind::kFailed ||
         kind == Kind::kExpired;
}

}  // namespace peregrine::outcome
