#include "mta/local/srs.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <cstring>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace peregrine::local {
namespace {

constexpr char kBase32[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
constexpr int kHashLength = 4;

std::string Hash(const SrsOptions& o, std::vector<absl::string_view> parts) {
  std::string data;
  for (absl::string_view p : parts) data += absl::AsciiStrToLower(p);
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  HMAC(EVP_sha1(), o.secret.data(), static_cast<int>(o.secret.size()),
       reinterpret_cast<const unsigned char*>(data.data()), data.size(), out,
       &len);
  return absl::Base64Escape(
             absl::string_view(reinterpret_cast<char*>(out), len))
      .substr(0, kHashLength);
}

int Day(absl::Time now) {
  return static_cast<int>((absl::ToUnixSeconds(now) / 86400) % 1024);
}

std::string Stamp(absl::Time now) {
  int day = Day(now);
  return {kBase32[(day >> 5) & 31], kBase32[day & 31]};
}

// The day a stamp names, or -1.
int StampDay(absl::string_view stamp) {
  if (stamp.size() != 2) return -1;
  int day = 0;
  for (char c : stamp) {
    const char* p = strchr(kBase32, absl::ascii_toupper(c));
    if (p == nullptr || *p == '\0') return -1;
    day = day * 32 + static_cast<int>(p - kBase32);
  }
  return day;
}

bool IsSeparator(char c) { return c == '=' || c == '-' || c == '+'; }

// "SRS0" or "SRS1" followed by a separator, any case.
bool HasTag(absl::string_view user, char digit) {
  return user.size() > 4 && absl::StartsWithIgnoreCase(user, "SRS") &&
         user[3] == digit && IsSeparator(user[4]);
}

}  // namespace

std::string SrsForward(const SrsOptions& o, absl::string_view sender,
                       absl::Time now) {
  size_t at = sender.rfind('@');
  if (at == absl::string_view::npos) return std::string(sender);
  absl::string_view user = sender.substr(0, at);
  absl::string_view host = sender.substr(at + 1);
  // Ours already; or no domain name (an '=' would make the address
  // impossible to take apart again): left as it is.
  if (absl::EqualsIgnoreCase(host, o.domain) || absl::StrContains(host, '=')) {
    return std::string(sender);
  }
  if (HasTag(user, '0')) {
    // Another forwarder's SRS0: keep it, and name that forwarder.
    absl::string_view rest = user.substr(4);  // "=HHHH=TT=d=u"
    return absl::StrCat("SRS1=", Hash(o, {host, rest}), "=", host, "=", rest,
                        "@", o.domain);
  }
  if (HasTag(user, '1')) {
    // SRS1=HHHH=first==...: the first forwarder stays; a new hash.
    std::vector<absl::string_view> f =
        absl::StrSplit(user.substr(5), absl::MaxSplits(user[4], 2));
    if (f.size() == 3 && !f[0].empty() && !f[1].empty() && !f[2].empty()) {
      absl::string_view rest = f[2];
      return absl::StrCat("SRS1=", Hash(o, {f[1], rest}), "=", f[1], "=", rest,
                          "@", o.domain);
    }
  }
  std::string stamp = Stamp(now);
  return absl::StrCat("SRS0=", Hash(o, {stamp, host, user}), "=", stamp, "=",
                      host, "=", user, "@", o.domain);
}

bool IsSrsAddress(const SrsOptions& o, absl::string_view address) {
  size_t at = address.rfind('@');
  if (at == absl::string_view::npos ||
      !absl::EqualsIgnoreCase(address.substr(at + 1), o.domain)) {
    return false;
  }
  absl::string_view user = address.substr(0, at);
  return HasTag(user, '0') || HasTag(user, '1');
}

absl::StatusOr<std::string> SrsReverse(const SrsOptions& o,
                                       absl::string_view address,
                                       absl::Time now) {
  if (!IsSrsAddress(o, address)) {
    return absl::InvalidArgumentError(
        absl::StrCat(address, " is no SRS address of ", o.domain));
  }
  absl::string_view user = address.substr(0, address.rfind('@'));
  char sep = user[4];
  auto bad_hash = [&] {
    return absl::PermissionDeniedError(
        absl::StrCat(address,
                     ": the SRS hash is wrong (forged, or made with "
                     "another key)"));
  };
  if (HasTag(user, '1')) {
    // SRS1=HHHH=host==HHHH=TT=d=u → SRS0=HHHH=TT=d=u@host
    std::vector<absl::string_view> f =
        absl::StrSplit(user.substr(5), absl::MaxSplits(sep, 2));
    if (f.size() != 3 || f[0].empty() || f[1].empty() || f[2].empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat(address, ": malformed SRS1 address"));
    }
    if (!absl::EqualsIgnoreCase(f[0], Hash(o, {f[1], f[2]}))) {
      return bad_hash();
    }
    return absl::StrCat("SRS0", f[2], "@", f[1]);
  }
  // SRS0=HHHH=TT=host=user (the user may hold separators of its own).
  std::vector<absl::string_view> f =
      absl::StrSplit(user.substr(5), absl::MaxSplits(sep, 3));
  if (f.size() != 4 || f[0].empty() || f[2].empty() || f[3].empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(address, ": malformed SRS0 address"));
  }
  int day = StampDay(f[1]);
  if (day < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(address, ": the SRS time stamp is malformed"));
  }
  if (!absl::EqualsIgnoreCase(f[0], Hash(o, {f[1], f[2], f[3]}))) {
    return bad_hash();
  }
  int age = (Day(now) - day + 1024) % 1024;
  if (age > o.max_age_days) {
    return absl::DeadlineExceededError(
        absl::StrCat(address, ": the SRS address is ", age,
                     " days old (at most ", o.max_age_days, ")"));
  }
  return absl::StrCat(f[3], "@", f[2]);
}

}  // namespace peregrine::local
