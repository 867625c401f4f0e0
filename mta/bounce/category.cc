#include "mta/bounce/category.h"

namespace peregrine::bounce {
namespace {

struct Named {
  Category category;
  const char* name;
};
constexpr Named kNames[] = {
    {Category::kInvalidRecipient, "invalid_recipient"},
    {Category::kBadDomain, "bad_domain"},
    {Category::kMailboxFull, "mailbox_full"},
    {Category::kInactiveMailbox, "inactive_mailbox"},
    {Category::kMessageTooLarge, "message_too_large"},
    {Category::kContentRejected, "content_rejected"},
    {Category::kSpamBlock, "spam_block"},
    {Category::kIpReputation, "ip_reputation"},
    {Category::kAuthFailure, "auth_failure"},
    {Category::kPolicy, "policy"},
    {Category::kRateLimited, "rate_limited"},
    {Category::kTlsRequired, "tls_required"},
    {Category::kDnsFailure, "dns_failure"},
    {Category::kConnection, "connection"},
    {Category::kExpired, "expired"},
    {Category::kUnknown, "unknown"},
};

}  // namespace

absl::string_view CategoryName(Category c) {
  for (const Named& n : kNames) {
    if (n.category == c) return n.name;
  }
  return "unknown";
}

std::optional<Category> ParseCategory(absl::string_view name) {
  for (const Named& n : kNames) {
    if (name == n.name) return n.category;
  }
  return std::nullopt;
}

const std::vector<Category>& AllCategories() {
  static const auto* all = [] {
    auto* v = new std::vector<Category>;
    for (const Named& n : kNames) v->push_back(n.category);
    return v;
  }();
  return *all;
}

}  // namespace peregrine::bounce
