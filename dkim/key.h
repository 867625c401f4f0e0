// PrivateKey: a DKIM signing key (RSA 1024-4096 bits, or Ed25519), loaded
// from PEM or generated, and what is published for it in DNS.
//
// Immutable once made; shared by every shard (OpenSSL keys may sign from
// several threads at once, each with its own context). Errors say which file
// and what to do; nothing here aborts on bad input.
//   rsa-sha256:     RSASSA-PKCS1-v1_5 with SHA-256 (RFC 6376 §3.3.1)
//   ed25519-sha256: Ed25519 over the SHA-256 of the data (RFC 8463 §3)
#pragma once

#include <openssl/evp.h>

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace peregrine::dkim {

enum class KeyType { kRsa, kEd25519 };

class PrivateKey {
 public:
  static constexpr int kMinRsaBits = 1024;
  static constexpr int kMaxRsaBits = 4096;

  static absl::StatusOr<std::shared_ptr<const PrivateKey>> LoadPemFile(
      const std::string& path);
  static absl::StatusOr<std::shared_ptr<const PrivateKey>> FromPem(
      absl::string_view pem, absl::string_view source);
  static absl::StatusOr<std::shared_ptr<const PrivateKey>> Generate(
      KeyType type, int rsa_bits = 2048);
  // The raw 32-byte Ed25519 seed (RFC 8463's test key is given this way).
  static absl::StatusOr<std::shared_ptr<const PrivateKey>> FromEd25519Seed(
      absl::string_view seed);

  ~PrivateKey();
  PrivateKey(const PrivateKey&) = delete;
  PrivateKey& operator=(const PrivateKey&) = delete;

  KeyType type() const { return type_; }
  int bits() const { return bits_; }
  // "rsa-sha256" or "ed25519-sha256": the a= tag.
  absl::string_view algorithm() const;

  // PKCS#8 PEM, for writing a generated key.
  std::string ToPem() const;
  // The p= value: base64 SubjectPublicKeyInfo (RSA) or raw key (Ed25519).
  std::string PublicKeyBase64() const;
  // The TXT record value: "v=DKIM1; k=rsa; p=...".
  std::string DnsRecord() const;

  // The raw signature of `data` (the canonical header hash input).
  absl::StatusOr<std::string> Sign(absl::string_view data) const;

  EVP_PKEY* pkey() const { return pkey_; }

 private:
  PrivateKey(EVP_PKEY* pkey, KeyType type, int bits)
      : pkey_(pkey), type_(type), bits_(bits) {}
  // `key` if it can sign, else an error naming `source`.
  static absl::StatusOr<std::shared_ptr<const PrivateKey>> Checked(
      std::shared_ptr<const PrivateKey> key, absl::string_view source);
  static absl::StatusOr<std::shared_ptr<const PrivateKey>> Adopt(
      EVP_PKEY* pkey, absl::string_view source);

  EVP_PKEY* pkey_;
  KeyType type_;
  int bits_;
};

std::string Base64(absl::string_view bytes);

// Splits a TXT record value into quoted strings of at most 255 bytes, as DNS
// panels and zone files want them: "v=DKIM1; k=rsa; p=MIIB..." "...".
std::string QuoteTxt(absl::string_view value);

}  // namespace peregrine::dkim
