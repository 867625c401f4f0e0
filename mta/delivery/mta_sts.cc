#include "mta/delivery/mta_sts.h"

#include "absl/algorithm/container.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace peregrine::delivery {
namespace {

constexpr size_t kMaxPolicyBytes = 64 * 1024;
constexpr int64_t kMaxAge = 31557600;

std::string Host(absl::string_view h) {
  return absl::AsciiStrToLower(absl::StripSuffix(h, "."));
}

bool ValidPattern(absl::string_view p) {
  if (p.empty() || p.size() > 253) return false;
  if (absl::StartsWith(p, "*.")) p.remove_prefix(2);
  if (p.empty() || p.front() == '.' || p.back() == '.') return false;
  for (absl::string_view label : absl::StrSplit(p, '.')) {
    if (label.empty() || label.size() > 63) return false;
    for (char c : label) {
      if (!absl::ascii_isalnum(c) && c != '-' && c != '_') return false;
    }
  }
  return true;
}

}  // namespace

absl::StatusOr<StsPolicy> ParseStsPolicy(absl::string_view text) {
  if (text.size() > kMaxPolicyBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("the policy is ", text.size(),
                     " bytes; RFC 8461 allows at most 64 KiB"));
  }
  StsPolicy policy;
  bool version = false, mode = false, max_age = false;
  int number = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    ++number;
    line = absl::StripSuffix(line, "\r");
    if (absl::StripAsciiWhitespace(line).empty()) continue;
    auto fail = [&](absl::string_view what) {
      return absl::InvalidArgumentError(
          absl::StrCat("policy line ", number, ": ", what));
    };
    size_t colon = line.find(':');
    if (colon == absl::string_view::npos) {
      return fail("expected \"key: value\"");
    }
    std::string key = absl::AsciiStrToLower(
        absl::StripAsciiWhitespace(line.substr(0, colon)));
    absl::string_view value =
        absl::StripAsciiWhitespace(line.substr(colon + 1));
    if (key == "version") {
      if (version) continue;
      if (value != "STSv1") {
        return fail(absl::StrCat("version '", value, "' is not STSv1"));
      }
      version = true;
    } else if (key == "mode") {
      if (mode) continue;
      if (value == "enforce") {
        policy.mode = StsMode::kEnforce;
      } else if (value == "testing") {
        policy.mode = StsMode::kTesting;
      } else if (value == "none") {
        policy.mode = StsMode::kNone;
      } else {
        return fail(
            absl::StrCat("mode '", value, "' is not enforce, testing or none"));
      }
      mode = true;
    } else if (key == "max_age") {
      if (max_age) continue;
      int64_t age = 0;
      if (value.empty() || value.size() > 10 ||
          !absl::c_all_of(value, absl::ascii_isdigit) ||
          !absl::SimpleAtoi(value, &age) || age > kMaxAge) {
        return fail(
            absl::StrCat("max_age '", value, "' is not 0 to 31557600 seconds"));
      }
      policy.max_age = age;
      max_age = true;
    } else if (key == "mx") {
      if (!ValidPattern(value)) {
        return fail(absl::StrCat("mx '", value, "' is not a host name"));
      }
      policy.mx.push_back(Host(value));
    }
    // Any other key is ignored (RFC 8461 3.2).
  }
  if (!version) return absl::InvalidArgumentError("the policy has no version");
  if (!mode) return absl::InvalidArgumentError("the policy has no mode");
  if (!max_age) return absl::InvalidArgumentError("the policy has no max_age");
  if (policy.mx.empty() && policy.mode != StsMode::kNone) {
    return absl::InvalidArgumentError("the policy names no mx");
  }
  return policy;
}

absl::StatusOr<std::string> ParseStsRecord(absl::string_view text) {
  std::vector<absl::string_view> fields = absl::StrSplit(text, ';');
  if (fields.empty() || absl::StripAsciiWhitespace(fields[0]) != "v=STSv1") {
    return absl::InvalidArgumentError("the record does not start v=STSv1");
  }
  std::string id;
  for (size_t i = 1; i < fields.size(); ++i) {
    absl::string_view f = absl::StripAsciiWhitespace(fields[i]);
    if (!absl::StartsWith(f, "id=")) continue;
    absl::string_view v = f.substr(3);
    if (v.empty() || v.size() > 32 || !absl::c_all_of(v, absl::ascii_isalnum)) {
      return absl::InvalidArgumentError(
          absl::StrCat("id '", v, "' is not 1 to 32 letters and digits"));
    }
    if (id.empty()) id = std::string(v);
  }
  if (id.empty()) return absl::InvalidArgumentError("the record has no id");
  return id;
}

bool StsMxMatches(absl::string_view pattern, absl::string_view host) {
  std::string p = Host(pattern);
  std::string h = Host(host);
  if (!absl::StartsWith(p, "*.")) return p == h;
  size_t dot = h.find('.');
  return dot != std::string::npos && dot > 0 &&
         absl::string_view(h).substr(dot) == absl::string_view(p).substr(1);
}

bool StsAllows(const StsPolicy& policy, absl::string_view host) {
  for (const std::string& p : policy.mx) {
    if (StsMxMatches(p, host)) return true;
  }
  return false;
}

absl::string_view StsModeName(StsMode mode) {
  switch (mode) {
    case StsMode::kEnforce:
      return "enforce";
    case StsMode::kTesting:
      return "testing";
    case StsMode::kNone:
      break;
  }
  return "none";
}

}  // namespace peregrine::delivery
