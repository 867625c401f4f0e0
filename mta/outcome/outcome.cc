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

std::optional<Kind> ParseKind(absl::string_view name) {
  for (int k = 0; k <= static_cast<int>(Kind::kAdmin); ++k) {
    if (KindName(static_cast<Kind>(k)) == name) return static_cast<Kind>(k);
  }
  return std::nullopt;
}

Outcome OperatorFailure(const queue::RecipientRecord& r, bool deleted) {
  Outcome o;
  o.kind = Kind::kFailed;
  o.recipient = r.spec.address;
  o.site = r.spec.site;
  o.record = r;
  o.attempt = r.attempts;
  o.attempted = false;
  o.operator_action = deleted ? "delete" : "bounce";
  o.reply = Reply{550, "5.0.0",
                  deleted ? "deleted from the queue by the operator"
                          : "bounced by the operator"};
  o.reason = deleted ? "deleted by the operator (admin API), no DSN"
                     : "bounced by the operator (admin API)";
  o.category = bounce::Category::kPolicy;
  o.category_rule = "operator";
  return o;
}

}  // namespace peregrine::outcome
