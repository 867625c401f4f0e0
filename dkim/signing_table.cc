#include "dkim/signing_table.h"

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace peregrine::dkim {
namespace {

bool Matches(const KeySpec& spec, absl::string_view from_domain) {
  if (spec.match.empty()) {
    return !from_domain.empty() &&
           absl::EqualsIgnoreCase(from_domain, spec.domain);
  }
  for (const std::string& m : spec.match) {
    if (m == "*") return true;
    if (from_domain.empty()) continue;
    if (absl::StartsWith(m, "*.")) {
      absl::string_view suffix = absl::string_view(m).substr(1);  // ".x.com"
      if (absl::EndsWithIgnoreCase(from_domain, suffix)) return true;
    } else if (absl::EqualsIgnoreCase(from_domain, m)) {
      return true;
    }
  }
  return false;
}

}  // namespace

std::string SigningTable::FromDomain(const SplitMessage& message) {
  for (const HeaderField& f : message.headers) {
    if (!absl::EqualsIgnoreCase(f.name, "From")) continue;
    absl::string_view value = f.raw.substr(f.raw.find(':') + 1);
    // "Name <user@domain>" or "user@domain"; the address is in <> if any.
    size_t open = value.rfind('<');
    if (open != absl::string_view::npos) {
      size_t close = value.find('>', open);
      value = value.substr(open + 1, close == absl::string_view::npos
                                         ? absl::string_view::npos
                                         : close - open - 1);
    }
    size_t at = value.rfind('@');
    if (at == absl::string_view::npos) return "";
    absl::string_view domain = value.substr(at + 1);
    size_t end = domain.find_first_of(" \t\r\n>,;()");
    domain = domain.substr(0, end);
    return absl::AsciiStrToLower(domain);
  }
  return "";
}

std::shared_ptr<const SigningTable> SigningTable::Load(const Policy& policy) {
  auto table = std::make_shared<SigningTable>();
  for (const KeySpec& spec : policy.keys) {
    Entry entry{spec, absl::UnknownError("not loaded")};
    auto key = PrivateKey::LoadPemFile(spec.key_file);
    if (!key.ok()) {
      entry.signer = key.status();
    } else if (!spec.algorithm.empty() &&
               spec.algorithm != (*key)->algorithm()) {
      entry.signer = absl::InvalidArgumentError(
          absl::StrCat("DKIM key ", spec.key_file, " is ", (*key)->algorithm(),
                       " but the configuration says ", spec.algorithm,
                       " (mismatched key: fix key_file or algorithm)"));
    } else {
      SignerOptions options;
      options.domain = spec.domain;
      options.selector = spec.selector;
      options.headers = policy.headers;
      options.oversign = policy.oversign;
      options.header_canon = policy.header_canon;
      options.body_canon = policy.body_canon;
      options.expiration = policy.expiration;
      entry.signer = Signer::Create(std::move(options), *key);
    }
    table->entries_.push_back(std::move(entry));
  }
  return table;
}

absl::StatusOr<std::string> SigningTable::Sign(
    absl::string_view message, absl::Time now,
    absl::string_view also_as) const {
  SplitMessage split = Split(message);
  std::string from = FromDomain(split);
  std::string fields;
  for (const Entry& e : entries_) {
    if (!Matches(e.spec, from) &&
        (also_as.empty() || !absl::EqualsIgnoreCase(e.spec.domain, also_as))) {
      continue;
    }
    if (!e.signer.ok()) {
      return absl::UnavailableError(absl::StrCat(
          "DKIM key for d=", e.spec.domain, " s=", e.spec.selector,
          " is unusable, so mail from ", from.empty() ? "<no From>" : from,
          " is held: ", e.signer.status().message()));
    }
    auto field = e.signer->Sign(message, now);
    if (!field.ok()) return field.status();
    fields += *field;
  }
  return fields;
}

}  // namespace peregrine::dkim
