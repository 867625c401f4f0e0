// Category: the kinds of delivery failure Peregrine tells apart (see
// classifier.h for how a reply gets one). A plain value, carried by
// outcomes and events.
#pragma once

#include <optional>
#include <vector>

#include "absl/strings/string_view.h"

namespace peregrine::bounce {

enum class Category {
  kInvalidRecipient,
  kBadDomain,
  kMailboxFull,
  kInactiveMailbox,
  kMessageTooLarge,
  kContentRejected,
  kSpamBlock,
  kIpReputation,
  kAuthFailure,  // SPF, DKIM, DMARC.
  kPolicy,
  kRateLimited,
  kTlsRequired,
  kDnsFailure,
  kConnection,
  kExpired,
  kUnknown,
};
// "invalid_recipient", ..., as in rule files and events.
absl::string_view CategoryName(Category c);
std::optional<Category> ParseCategory(absl::string_view name);
// Every category, in the order above.
const std::vector<Category>& AllCategories();

}  // namespace peregrine::bounce
