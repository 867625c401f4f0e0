#include "mta/bounce/verp.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace peregrine::bounce {
namespace {

constexpr size_t kMacBytes = 8;

std::string Mac(const VerpOptions& o, queue::MessageId id, uint32_t index,
                absl::string_view recipient) {
  std::string data = absl::StrCat(queue::FormatMessageId(id), ".", index, ".",
                                  absl::AsciiStrToLower(recipient));
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  HMAC(EVP_sha256(), o.secret.data(), static_cast<int>(o.secret.size()),
       reinterpret_cast<const unsigned char*>(data.data()), data.size(), out,
       &len);
  return absl::BytesToHexString(absl::string_view(
      reinterpret_cast<const char*>(out), std::min<size_t>(len, kMacBytes)));
}

}  // namespace

std::string VerpAddress(const VerpOptions& o, queue::MessageId id,
                        uint32_t index, absl::string_view recipient) {
  size_t at = recipient.rfind('@');
  absl::string_view local = recipient.substr(0, at);
  absl::string_view domain =
      at == absl::string_view::npos ? "" : recipient.substr(at + 1);
  return absl::StrCat(o.prefix, "+", queue::FormatMessageId(id), ".", index,
                      ".", Mac(o, id, index, recipient), ".", local, "=",
                      domain, "@", o.domain);
}

absl::StatusOr<std::optional<VerpMatch>> ParseVerp(const VerpOptions& o,
                                                   absl::string_view address) {
  if (o.domain.empty()) return std::nullopt;
  size_t at = address.rfind('@');
  if (at == absl::string_view::npos ||
      !absl::EqualsIgnoreCase(address.substr(at + 1), o.domain)) {
    return std::nullopt;
  }
  absl::string_view local = address.substr(0, at);
  if (!absl::ConsumePrefix(&local, absl::StrCat(o.prefix, "+"))) {
    // Case-insensitive prefixes: some MTAs lower-case the local part.
    if (!absl::StartsWithIgnoreCase(local, absl::StrCat(o.prefix, "+"))) {
      return std::nullopt;
    }
    local.remove_prefix(o.prefix.size() + 1);
  }
  std::vector<absl::string_view> f =
      absl::StrSplit(local, absl::MaxSplits('.', 3));
  if (f.size() != 4) {
    return absl::InvalidArgumentError(
        absl::StrCat("<", address, ">: not ID.INDEX.MAC.ADDRESS"));
  }
  VerpMatch m;
  if (!queue::ParseMessageId(f[0], &m.id) ||
      !absl::SimpleAtoi(f[1], &m.index)) {
    return absl::InvalidArgumentError(
        absl::StrCat("<", address, ">: bad message id or index"));
  }
  absl::string_view encoded = f[3];
  size_t eq = encoded.rfind('=');
  if (eq == absl::string_view::npos || eq == 0 || eq + 1 == encoded.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("<", address, ">: no LOCAL=DOMAIN"));
  }
  m.recipient =
      absl::StrCat(encoded.substr(0, eq), "@", encoded.substr(eq + 1));
  std::string want = Mac(o, m.id, m.index, m.recipient);
  std::string got = absl::AsciiStrToLower(f[2]);
  if (got.size() != want.size() ||
      CRYPTO_memcmp(got.data(), want.data(), want.size()) != 0) {
    return absl::PermissionDeniedError(absl::StrCat(
        "<", address, ">: the token's signature is wrong (forged or damaged)"));
  }
  return m;
}

std::string NewVerpSecret() {
  unsigned char bytes[32];
  RAND_bytes(bytes, sizeof(bytes));
  return absl::BytesToHexString(
      absl::string_view(reinterpret_cast<const char*>(bytes), sizeof(bytes)));
}

}  // namespace peregrine::bounce
