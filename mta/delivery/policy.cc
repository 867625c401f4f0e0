#include "mta/delivery/policy.h"

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "dns/message.h"

namespace peregrine::delivery {

bool ParseTlsMode(absl::string_view text, TlsMode* mode) {
  static const std::pair<const char*, TlsMode> kModes[] = {
      {"none", TlsMode::kNone},
      {"opportunistic", TlsMode::kOpportunistic},
      {"required", TlsMode::kRequired},
      {"verify", TlsMode::kVerify}};
  for (const auto& [name, m] : kModes) {
    if (text == name) {
      *mode = m;
      return true;
    }
  }
  return false;
}

absl::string_view TlsModeName(TlsMode mode) {
  switch (mode) {
    case TlsMode::kNone:
      return "none";
    case TlsMode::kOpportunistic:
      return "opportunistic";
    case TlsMode::kRequired:
      return "required";
    case TlsMode::kVerify:
      return "verify";
  }
  return "?";
}

bool ParseTlsPolicyUse(absl::string_view text, TlsPolicyUse* use) {
  static const std::pair<const char*, TlsPolicyUse> kUses[] = {
      {"auto", TlsPolicyUse::kAuto},
      {"mta-sts", TlsPolicyUse::kMtaSts},
      {"dane", TlsPolicyUse::kDane},
      {"off", TlsPolicyUse::kOff}};
  for (const auto& [name, u] : kUses) {
    if (text == name) {
      *use = u;
      return true;
    }
  }
  return false;
}

absl::string_view TlsPolicyUseName(TlsPolicyUse use) {
  switch (use) {
    case TlsPolicyUse::kAuto:
      return "auto";
    case TlsPolicyUse::kMtaSts:
      return "mta-sts";
    case TlsPolicyUse::kDane:
      return "dane";
    case TlsPolicyUse::kOff:
      return "off";
  }
  return "?";
}

namespace {

bool DomainMatches(absl::string_view pattern, absl::string_view domain) {
  if (absl::StartsWith(pattern, "*.")) {
    return absl::EndsWithIgnoreCase(domain, pattern.substr(1));
  }
  return absl::EqualsIgnoreCase(pattern, domain);
}

bool SuffixMatches(absl::string_view suffix, absl::string_view host) {
  // ".google.com" and "google.com" both match "aspmx.l.google.com" and
  // "google.com" itself; trailing dots do not matter.
  std::string h = absl::AsciiStrToLower(host);
  std::string x = absl::AsciiStrToLower(suffix);
  while (!h.empty() && h.back() == '.') h.pop_back();
  while (!x.empty() && x.back() == '.') x.pop_back();
  if (!x.empty() && x.front() == '.') x.erase(0, 1);
  if (x.empty()) return false;
  return h == x || absl::EndsWith(h, absl::StrCat(".", x));
}

}  // namespace

bool SiteRule::Matches(absl::string_view domain,
                       const std::vector<dns::MxHost>& mx) const {
  for (const std::string& d : domains) {
    if (DomainMatches(d, domain)) return true;
  }
  for (const std::string& s : mx_suffixes) {
    for (const dns::MxHost& host : mx) {
      if (!host.implicit && SuffixMatches(s, host.host)) return true;
    }
  }
  return false;
}

bool Smarthost::Covers(absl::string_view domain) const {
  if (host.empty()) return false;
  if (domains.empty()) return true;
  for (const std::string& d : domains) {
    if (DomainMatches(d, domain)) return true;
  }
  return false;
}

TlsPolicyUse ResolveTlsPolicy(const DeliveryOptions& options,
                              absl::string_view domain,
                              const std::vector<dns::MxHost>& mx) {
  TlsPolicyUse use = options.defaults.tls_policy;
  for (const SiteRule& r : options.rules) {
    if (r.tls_policy && r.Matches(domain, mx)) use = *r.tls_policy;
  }
  return use;
}

SiteOptions ResolveSite(const DeliveryOptions& options,
                        absl::string_view domain,
                        const std::vector<dns::MxHost>& mx) {
  SiteOptions s = options.defaults;
  for (const SiteRule& r : options.rules) {
    if (!r.Matches(domain, mx)) continue;
    if (r.max_connections) s.max_connections = *r.max_connections;
    if (r.messages_per_connection) {
      s.messages_per_connection = *r.messages_per_connection;
    }
    if (r.recipients_per_transaction) {
      s.recipients_per_transaction = *r.recipients_per_transaction;
    }
    if (r.message_rate) s.message_rate = *r.message_rate;
    if (r.connection_rate) s.connection_rate = *r.connection_rate;
    if (r.tls) s.tls = *r.tls;
    if (r.tls_policy) s.tls_policy = *r.tls_policy;
    if (r.suspended) s.suspended = *r.suspended;
    if (r.shared) s.shared = *r.shared;
    if (r.pool) s.pool = *r.pool;
  }
  s.initial_connections = std::min(s.initial_connections, s.max_connections);
  // VERP names one recipient in the return path: one per transaction.
  if (options.verp != nullptr) s.recipients_per_transaction = 1;
  return s;
}

absl::Status Validate(const DeliveryOptions& options) {
  auto check_rates = [](const std::string& where, const std::string& message,
                        const std::string& connection) -> absl::Status {
    for (const auto& [key, text] :
         {std::pair{"message_rate", &message},
          std::pair{"connection_rate", &connection}}) {
      auto bucket = TokenBucket::Parse(*text);
      if (!bucket.ok()) {
        return absl::InvalidArgumentError(
            absl::StrCat(where, key, ": ", bucket.status().message()));
      }
    }
    return absl::OkStatus();
  };
  absl::Status s = check_rates("delivery.", options.defaults.message_rate,
                               options.defaults.connection_rate);
  if (!s.ok()) return s;
  auto pool_exists = [&](const std::string& pool) {
    if (pool.empty()) return true;
    for (const Source& src : options.sources) {
      if (src.pool == pool) return true;
    }
    return false;
  };
  int index = 0;
  for (const SiteRule& r : options.rules) {
    ++index;
    std::string where =
        absl::StrCat("delivery.sites entry ", index, " (line ", r.line, "): ");
    if (r.domains.empty() && r.mx_suffixes.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat(where,
                       "matches nothing: give domains = [\"example.com\"] or "
                       "mx_suffixes = [\".google.com\"]"));
    }
    s = check_rates(
        where, r.message_rate.value_or(options.defaults.message_rate),
        r.connection_rate.value_or(options.defaults.connection_rate));
    if (!s.ok()) return s;
    if (r.pool && !pool_exists(*r.pool)) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, "pool '", *r.pool,
                       "' has no [[delivery.sources]] entry with that pool"));
    }
  }
  if (!pool_exists(options.defaults.pool)) {
    return absl::InvalidArgumentError(
        absl::StrCat("delivery.pool: '", options.defaults.pool,
                     "' has no [[delivery.sources]] entry with that pool"));
  }
  for (const Source& src : options.sources) {
    if (!src.address.empty() && !dns::IpAddress::Parse(src.address).ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("delivery.sources '", src.name, "': address '",
                       src.address, "' is not an IP address"));
    }
  }
  auto rules = BackoffRules::Create(options.backoff);
  if (!rules.ok()) return rules.status();
  return absl::OkStatus();
}

const Source* PickSource(const DeliveryOptions& options, absl::string_view pool,
                         std::mt19937_64& rng) {
  if (pool.empty()) pool = "default";
  int total = 0;
  for (const Source& s : options.sources) {
    if (s.pool == pool) total += s.weight;
  }
  if (total <= 0) return nullptr;
  int pick = std::uniform_int_distribution<int>(0, total - 1)(rng);
  for (const Source& s : options.sources) {
    if (s.pool != pool) continue;
    if (pick < s.weight) return &s;
    pick -= s.weight;
  }
  return nullptr;
}

}  // namespace peregrine::delivery
