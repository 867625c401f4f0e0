#include "mta/doctor/spf.h"

#include <sys/socket.h>

#include <algorithm>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace peregrine::doctor {
namespace {

constexpr int kMaxDnsTerms = 10;
constexpr int kMaxVoid = 2;
constexpr int kMaxNames = 10;

struct State {
  const SpfLookup& lookup;
  dns::IpAddress ip;
  std::string sender;  // local@domain
  int dns_terms = 0;
  int voids = 0;
  int depth = 0;
};

struct Outcome {
  SpfResult result;
  std::string why;
};

// A failure of evaluation that ends it: temperror or permerror.
struct Abort {
  SpfResult result;
  std::string why;
};

bool PrefixMatch(const dns::IpAddress& a, const dns::IpAddress& b, int bits) {
  if (a.family() != b.family()) return false;
  int total = a.family() == AF_INET ? 32 : 128;
  bits = std::min(bits, total);
  for (int i = 0; i < bits / 8; ++i) {
    if (a.bytes()[i] != b.bytes()[i]) return false;
  }
  if (bits % 8 != 0) {
    uint8_t mask = static_cast<uint8_t>(0xff << (8 - bits % 8));
    if ((a.bytes()[bits / 8] & mask) != (b.bytes()[bits / 8] & mask)) {
      return false;
    }
  }
  return true;
}

// The IP as macros write it: dotted for IPv4, dotted nibbles for IPv6.
std::string MacroIp(const dns::IpAddress& ip) {
  if (ip.family() == AF_INET) return ip.ToString();
  std::string out;
  for (int i = 0; i < 16; ++i) {
    absl::StrAppend(
        &out, i ? "." : "",
        absl::string_view(&"0123456789abcdef"[ip.bytes()[i] >> 4], 1), ".",
        absl::string_view(&"0123456789abcdef"[ip.bytes()[i] & 15], 1));
  }
  return out;
}

// Expands a domain-spec's macros (RFC 7208 7). InvalidArgument: malformed.
absl::StatusOr<std::string> Expand(const State& s, absl::string_view spec,
                                   const std::string& domain) {
  std::string out;
  size_t at = s.sender.rfind('@');
  std::string local = s.sender.substr(0, at);
  std::string sender_domain = s.sender.substr(at + 1);
  for (size_t i = 0; i < spec.size(); ++i) {
    char c = spec[i];
    if (c != '%') {
      out += c;
      continue;
    }
    if (++i >= spec.size()) return absl::InvalidArgumentError("a lone %");
    char n = spec[i];
    if (n == '%') {
      out += '%';
    } else if (n == '_') {
      out += ' ';
    } else if (n == '-') {
      out += "%20";
    } else if (n == '{') {
      size_t close = spec.find('}', i);
      if (close == absl::string_view::npos || close == i + 1) {
        return absl::InvalidArgumentError("an unclosed %{");
      }
      absl::string_view m = spec.substr(i + 1, close - i - 1);
      i = close;
      char letter = absl::ascii_tolower(m[0]);
      std::string value;
      switch (letter) {
        case 's':
          value = s.sender;
          break;
        case 'l':
          value = local;
          break;
        case 'o':
          value = sender_domain;
          break;
        case 'd':
          value = domain;
          break;
        case 'i':
          value = MacroIp(s.ip);
          break;
        case 'p':
          value = "unknown";
          break;
        case 'v':
          value = s.ip.family() == AF_INET ? "in-addr" : "ip6";
          break;
        case 'h':
          value = domain;
          break;
        default:
          return absl::InvalidArgumentError(absl::StrCat(
              "unknown macro letter '", std::string(1, m[0]), "'"));
      }
      m.remove_prefix(1);
      size_t digits = 0;
      while (digits < m.size() && absl::ascii_isdigit(m[digits])) ++digits;
      int keep = 0;
      if (digits > 0 && (!absl::SimpleAtoi(m.substr(0, digits), &keep) ||
                         keep == 0 || keep > 128)) {
        return absl::InvalidArgumentError("a bad macro digit count");
      }
      m.remove_prefix(digits);
      bool reverse = !m.empty() && absl::ascii_tolower(m[0]) == 'r';
      if (reverse) m.remove_prefix(1);
      std::string delims = m.empty() ? "." : std::string(m);
      for (char d : delims) {
        if (!absl::StrContains(".-+,/_=", d)) {
          return absl::InvalidArgumentError("a bad macro delimiter");
        }
      }
      std::vector<std::string> parts =
          absl::StrSplit(value, absl::ByAnyChar(delims));
      if (reverse) std::reverse(parts.begin(), parts.end());
      if (keep > 0 && static_cast<size_t>(keep) < parts.size()) {
        parts.erase(parts.begin(), parts.end() - keep);
      }
      out += absl::StrJoin(parts, ".");
    } else {
      return absl::InvalidArgumentError(
          absl::StrCat("'%", std::string(1, n), "' is no macro"));
    }
  }
  // Longer than 253: drop labels from the left (7.3).
  while (out.size() > 253 && absl::StrContains(out, '.')) {
    out = out.substr(out.find('.') + 1);
  }
  return out;
}

// Counts a term that looks up DNS; past ten: permerror.
void CountDnsTerm(State& s) {
  if (++s.dns_terms > kMaxDnsTerms) {
    throw Abort{SpfResult::kPermError,
                absl::StrCat("more than ", kMaxDnsTerms,
                             " DNS-querying terms (include, a, mx, ptr, "
                             "exists, redirect); receivers stop there "
                             "(RFC 7208 4.6.4): flatten the record")};
  }
}

// The records of `type` at `name`; a void answer is counted.
std::vector<dns::Record> Ask(State& s, const std::string& name, uint16_t type,
                             bool count_void = true) {
  auto a = s.lookup(name, type);
  if (!a.ok()) {
    throw Abort{SpfResult::kTempError,
                absl::StrCat("DNS: ", a.status().message())};
  }
  if (a->records.empty() && count_void && ++s.voids > kMaxVoid) {
    throw Abort{SpfResult::kPermError,
                absl::StrCat("more than ", kMaxVoid,
                             " look-ups found nothing (RFC 7208 4.6.4); "
                             "last: ",
                             dns::TypeName(type), " ", name)};
  }
  return std::move(a->records);
}

bool AnyAddressMatches(State& s, const std::string& host, int cidr4,
                       int cidr6) {
  uint16_t type = s.ip.family() == AF_INET ? dns::kA : dns::kAaaa;
  for (const dns::Record& r : Ask(s, host, type)) {
    if (PrefixMatch(r.address, s.ip,
                    s.ip.family() == AF_INET ? cidr4 : cidr6)) {
      return true;
    }
  }
  return false;
}

// "target/24//64" → target, cidr4, cidr6.
absl::Status SplitCidr(absl::string_view arg, std::string* target, int* c4,
                       int* c6) {
  *c4 = 32;
  *c6 = 128;
  size_t dbl = arg.find("//");
  if (dbl != absl::string_view::npos) {
    if (!absl::SimpleAtoi(arg.substr(dbl + 2), c6) || *c6 < 0 || *c6 > 128) {
      return absl::InvalidArgumentError("a bad IPv6 prefix length");
    }
    arg = arg.substr(0, dbl);
  }
  size_t slash = arg.rfind('/');
  if (slash != absl::string_view::npos) {
    if (!absl::SimpleAtoi(arg.substr(slash + 1), c4) || *c4 < 0 || *c4 > 32) {
      return absl::InvalidArgumentError("a bad IPv4 prefix length");
    }
    arg = arg.substr(0, slash);
  }
  *target = std::string(arg);
  return absl::OkStatus();
}

bool ValidDomain(const std::string& d) {
  if (d.empty() || d.size() > 253 || !absl::StrContains(d, '.')) return false;
  for (absl::string_view label : absl::StrSplit(d, '.')) {
    if (label.empty() || label.size() > 63) return false;
  }
  return true;
}

// A term's target domain: its macro-expanded argument, or `domain`.
std::string Target(State& s, absl::string_view arg, const std::string& domain) {
  if (arg.empty()) return domain;
  auto t = Expand(s, arg, domain);
  if (!t.ok()) {
    throw Abort{SpfResult::kPermError,
                absl::StrCat("'", arg, "': ", t.status().message())};
  }
  return absl::AsciiStrToLower(absl::StripSuffix(*t, "."));
}

Outcome Evaluate(State& s, const std::string& domain, std::string* record_out) {
  if (!ValidDomain(domain)) {
    return {SpfResult::kNone, absl::StrCat("'", domain, "' is no domain")};
  }
  if (++s.depth > 30) {
    throw Abort{SpfResult::kPermError, "includes nest too deep"};
  }
  std::vector<std::string> records;
  for (const dns::Record& r : Ask(s, domain, dns::kTxt, false)) {
    std::string text = absl::StrJoin(r.texts, "");
    if (absl::EqualsIgnoreCase(text, "v=spf1") ||
        absl::StartsWithIgnoreCase(text, "v=spf1 ")) {
      records.push_back(text);
    }
  }
  if (records.empty()) {
    return {SpfResult::kNone, absl::StrCat(domain, " publishes no SPF record")};
  }
  if (records.size() > 1) {
    throw Abort{SpfResult::kPermError,
                absl::StrCat(domain, " publishes ", records.size(),
                             " SPF records; receivers need exactly one: "
                             "merge them")};
  }
  if (record_out != nullptr) *record_out = records[0];
  std::vector<std::string> terms =
      absl::StrSplit(records[0].substr(6), ' ', absl::SkipEmpty());
  std::string redirect;
  bool seen_exp = false;
  // Modifiers first (their place does not matter), and syntax of all.
  for (const std::string& term : terms) {
    size_t eq = term.find('=');
    size_t colon = term.find(':');
    if (eq != std::string::npos && (colon == std::string::npos || eq < colon) &&
        absl::ascii_isalpha(term[0])) {
      std::string name = absl::AsciiStrToLower(term.substr(0, eq));
      if (name == "redirect") {
        if (!redirect.empty()) {
          throw Abort{SpfResult::kPermError, "two redirect= modifiers"};
        }
        redirect = term.substr(eq + 1);
        if (redirect.empty()) {
          throw Abort{SpfResult::kPermError, "redirect= names no domain"};
        }
      } else if (name == "exp") {
        if (seen_exp) throw Abort{SpfResult::kPermError, "two exp= modifiers"};
        seen_exp = true;
      }
    }
  }
  for (const std::string& term : terms) {
    absl::string_view t = term;
    SpfResult qualifier = SpfResult::kPass;
    switch (t[0]) {
      case '+':
        qualifier = SpfResult::kPass;
        t.remove_prefix(1);
        break;
      case '-':
        qualifier = SpfResult::kFail;
        t.remove_prefix(1);
        break;
      case '~':
        qualifier = SpfResult::kSoftFail;
        t.remove_prefix(1);
        break;
      case '?':
        qualifier = SpfResult::kNeutral;
        t.remove_prefix(1);
        break;
      default:
        break;
    }
    size_t split = t.find_first_of(":/");
    std::string name =
        absl::AsciiStrToLower(t.substr(0, std::min(split, t.size())));
    absl::string_view arg;
    if (split != absl::string_view::npos) {
      arg = t.substr(split + (t[split] == ':' ? 1 : 0));
    }
    size_t eq = term.find('=');
    if (eq != std::string::npos && t.size() == term.size() &&
        (split == absl::string_view::npos || eq < split)) {
      continue;  // A modifier.
    }
    bool match = false;
    if (name == "all") {
      if (!arg.empty()) throw Abort{SpfResult::kPermError, "all takes nothing"};
      match = true;
    } else if (name == "include") {
      CountDnsTerm(s);
      if (arg.empty())
        throw Abort{SpfResult::kPermError, "include: needs a domain"};
      std::string target = Target(s, arg, domain);
      Outcome inner = Evaluate(s, target, nullptr);
      switch (inner.result) {
        case SpfResult::kPass:
          match = true;
          break;
        case SpfResult::kTempError:
          throw Abort{inner.result, inner.why};
        case SpfResult::kNone:
          throw Abort{SpfResult::kPermError,
                      absl::StrCat("include:", target, " has no SPF record")};
        case SpfResult::kPermError:
          throw Abort{inner.result, inner.why};
        default:
          break;
      }
    } else if (name == "a" || name == "mx") {
      CountDnsTerm(s);
      std::string target_spec;
      int c4, c6;
      if (absl::Status st = SplitCidr(arg, &target_spec, &c4, &c6); !st.ok()) {
        throw Abort{SpfResult::kPermError,
                    absl::StrCat(term, ": ", st.message())};
      }
      std::string target = Target(s, target_spec, domain);
      if (name == "a") {
        match = AnyAddressMatches(s, target, c4, c6);
      } else {
        std::vector<dns::Record> mx = Ask(s, target, dns::kMx);
        if (mx.size() > kMaxNames) {
          throw Abort{SpfResult::kPermError,
                      absl::StrCat(target, " has more than ", kMaxNames,
                                   " MX hosts for an mx mechanism")};
        }
        for (const dns::Record& r : mx) {
          if (!r.target.empty() && AnyAddressMatches(s, r.target, c4, c6)) {
            match = true;
            break;
          }
        }
      }
    } else if (name == "ptr") {
      CountDnsTerm(s);
      std::string target = Target(s, arg, domain);
      std::vector<dns::Record> names = Ask(s, s.ip.ReverseName(), dns::kPtr);
      int checked = 0;
      for (const dns::Record& r : names) {
        if (++checked > kMaxNames) break;
        std::string host = dns::NormalizeName(r.target);
        if (host != target && !absl::EndsWith(host, "." + target)) continue;
        if (AnyAddressMatches(s, host, 128, 128)) {
          match = true;
          break;
        }
      }
    } else if (name == "ip4" || name == "ip6") {
      absl::string_view a = arg;
      int bits = name == "ip4" ? 32 : 128;
      size_t slash = a.find('/');
      if (slash != absl::string_view::npos) {
        if (!absl::SimpleAtoi(a.substr(slash + 1), &bits) || bits < 0 ||
            bits > (name == "ip4" ? 32 : 128)) {
          throw Abort{SpfResult::kPermError,
                      absl::StrCat(term, ": a bad prefix length")};
        }
        a = a.substr(0, slash);
      }
      auto net = dns::IpAddress::Parse(a);
      if (!net.ok() || (net->family() == AF_INET) != (name == "ip4")) {
        throw Abort{SpfResult::kPermError,
                    absl::StrCat(term, ": not an ", name, " address")};
      }
      match = PrefixMatch(*net, s.ip, bits);
    } else if (name == "exists") {
      CountDnsTerm(s);
      if (arg.empty())
        throw Abort{SpfResult::kPermError, "exists: needs a domain"};
      match = !Ask(s, Target(s, arg, domain), dns::kA).empty();
    } else {
      throw Abort{SpfResult::kPermError,
                  absl::StrCat("unknown mechanism '", term, "'")};
    }
    if (match) {
      return {qualifier, absl::StrCat("'", term, "' in ", domain, "'s record")};
    }
  }
  if (!redirect.empty()) {
    CountDnsTerm(s);
    std::string target = Target(s, redirect, domain);
    Outcome r = Evaluate(s, target, nullptr);
    if (r.result == SpfResult::kNone) {
      throw Abort{SpfResult::kPermError,
                  absl::StrCat("redirect=", target, " has no SPF record")};
    }
    return r;
  }
  return {SpfResult::kNeutral,
          absl::StrCat("no term of ", domain, "'s record matched")};
}

}  // namespace

const char* SpfResultName(SpfResult r) {
  switch (r) {
    case SpfResult::kNone:
      return "none";
    case SpfResult::kNeutral:
      return "neutral";
    case SpfResult::kPass:
      return "pass";
    case SpfResult::kFail:
      return "fail";
    case SpfResult::kSoftFail:
      return "softfail";
    case SpfResult::kTempError:
      return "temperror";
    case SpfResult::kPermError:
      return "permerror";
  }
  return "?";
}

SpfVerdict CheckHost(const SpfLookup& lookup, const dns::IpAddress& ip,
                     const std::string& domain, const std::string& sender) {
  State s{lookup, ip,
          sender.empty() || !absl::StrContains(sender, '@')
              ? absl::StrCat("postmaster@", domain)
              : sender};
  SpfVerdict v;
  try {
    Outcome o = Evaluate(s, absl::AsciiStrToLower(domain), &v.record);
    v.result = o.result;
    v.explanation = o.why;
  } catch (const Abort& a) {
    v.result = a.result;
    v.explanation = a.why;
  }
  v.dns_terms = s.dns_terms;
  return v;
}

}  // namespace peregrine::doctor
