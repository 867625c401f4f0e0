#include "dkim/key.h"

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "base/files.h"

namespace peregrine::dkim {
namespace {

std::string OpenSslError() {
  unsigned long e = ERR_get_error();
  ERR_clear_error();
  if (e == 0) return "unknown OpenSSL error";
  char buf[256];
  ERR_error_string_n(e, buf, sizeof(buf));
  return buf;
}

}  // namespace

std::string Base64(absl::string_view bytes) {
  std::string out(4 * ((bytes.size() + 2) / 3) + 1, '\0');
  int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                          reinterpret_cast<const unsigned char*>(bytes.data()),
                          static_cast<int>(bytes.size()));
  out.resize(n);
  return out;
}

std::string QuoteTxt(absl::string_view value) {
  std::string out;
  while (!value.empty()) {
    absl::string_view chunk = value.substr(0, 255);
    value.remove_prefix(chunk.size());
    if (!out.empty()) out += ' ';
    absl::StrAppend(&out, "\"", chunk, "\"");
  }
  return out;
}

PrivateKey::~PrivateKey() { EVP_PKEY_free(pkey_); }

absl::string_view PrivateKey::algorithm() const {
  return type_ == KeyType::kRsa ? "rsa-sha256" : "ed25519-sha256";
}

absl::StatusOr<std::shared_ptr<const PrivateKey>> PrivateKey::Checked(
    std::shared_ptr<const PrivateKey> key, absl::string_view source) {
  // A damaged file can hold a key that parses but whose parts do not fit
  // together: found now, not at the first message (which it would hold).
  // One signature per load.
  if (auto signature = key->Sign("peregrine key check"); !signature.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(
        source, ": the key cannot sign (", signature.status().message(),
        "); the file is probably damaged: make a new key with peregrine dkim "
        "keygen and publish its TXT record"));
  }
  return key;
}

absl::StatusOr<std::shared_ptr<const PrivateKey>> PrivateKey::Adopt(
    EVP_PKEY* pkey, absl::string_view source) {
  int id = EVP_PKEY_get_base_id(pkey);
  if (id == EVP_PKEY_RSA) {
    int bits = EVP_PKEY_get_bits(pkey);
    if (bits < kMinRsaBits || bits > kMaxRsaBits) {
      EVP_PKEY_free(pkey);
      return absl::InvalidArgumentError(absl::StrCat(
          source, ": RSA key of ", bits, " bits; DKIM keys must have ",
          kMinRsaBits, " to ", kMaxRsaBits,
          " bits (2048 is what receivers expect today)"));
    }
    return Checked(std::shared_ptr<const PrivateKey>(
                       new PrivateKey(pkey, KeyType::kRsa, bits)),
                   source);
  }
  if (id == EVP_PKEY_ED25519) {
    return Checked(std::shared_ptr<const PrivateKey>(
                       new PrivateKey(pkey, KeyType::kEd25519, 256)),
                   source);
  }
  std::string type = OBJ_nid2sn(id) ? OBJ_nid2sn(id) : "unknown";
  EVP_PKEY_free(pkey);
  return absl::InvalidArgumentError(
      absl::StrCat(source, ": ", type,
                   " keys cannot sign DKIM; use RSA (2048 bits) or Ed25519 "
                   "(peregrine dkim keygen makes either)"));
}

absl::StatusOr<std::shared_ptr<const PrivateKey>> PrivateKey::FromPem(
    absl::string_view pem, absl::string_view source) {
  BIO* bio = BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size()));
  EVP_PKEY* pkey = PEM_read_bio_PrivateKey(bio, nullptr, nullptr, nullptr);
  BIO_free(bio);
  if (pkey == nullptr) {
    ERR_clear_error();
    return absl::InvalidArgumentError(absl::StrCat(
        source,
        ": not a PEM private key (expected \"-----BEGIN PRIVATE KEY-----\" or "
        "\"-----BEGIN RSA PRIVATE KEY-----\"; a public key or certificate "
        "cannot sign)"));
  }
  return Adopt(pkey, source);
}

absl::StatusOr<std::shared_ptr<const PrivateKey>> PrivateKey::LoadPemFile(
    const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    int err = errno;
    std::string why = std::strerror(err);
    if (err == EACCES) {
      return absl::PermissionDeniedError(absl::StrCat(
          "DKIM key ", path, ": cannot read: ", CannotReadReason(path, err)));
    }
    return absl::NotFoundError(
        absl::StrCat("DKIM key ", path, ": cannot read: ", why));
  }
  std::stringstream buffer;
  buffer << in.rdbuf();
  return FromPem(buffer.str(), absl::StrCat("DKIM key ", path));
}

absl::StatusOr<std::shared_ptr<const PrivateKey>> PrivateKey::Generate(
    KeyType type, int rsa_bits) {
  EVP_PKEY* pkey = nullptr;
  if (type == KeyType::kRsa) {
    if (rsa_bits < kMinRsaBits || rsa_bits > kMaxRsaBits) {
      return absl::InvalidArgumentError(
          absl::StrCat("RSA keys for DKIM have ", kMinRsaBits, " to ",
                       kMaxRsaBits, " bits, not ", rsa_bits));
    }
    pkey = EVP_RSA_gen(static_cast<unsigned int>(rsa_bits));
  } else {
    pkey = EVP_PKEY_Q_keygen(nullptr, nullptr, "ED25519");
  }
  if (pkey == nullptr) {
    return absl::InternalError(
        absl::StrCat("key generation: ", OpenSslError()));
  }
  return Adopt(pkey, "generated key");
}

absl::StatusOr<std::shared_ptr<const PrivateKey>> PrivateKey::FromEd25519Seed(
    absl::string_view seed) {
  if (seed.size() != 32) {
    return absl::InvalidArgumentError("an Ed25519 seed has 32 bytes");
  }
  EVP_PKEY* pkey = EVP_PKEY_new_raw_private_key(
      EVP_PKEY_ED25519, nullptr,
      reinterpret_cast<const unsigned char*>(seed.data()), seed.size());
  if (pkey == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("Ed25519 seed: ", OpenSslError()));
  }
  return Adopt(pkey, "Ed25519 seed");
}

std::string PrivateKey::ToPem() const {
  BIO* bio = BIO_new(BIO_s_mem());
  PEM_write_bio_PrivateKey(bio, pkey_, nullptr, nullptr, 0, nullptr, nullptr);
  char* data = nullptr;
  long n = BIO_get_mem_data(bio, &data);
  std::string out(data, n);
  BIO_free(bio);
  return out;
}

std::string PrivateKey::PublicKeyBase64() const {
  if (type_ == KeyType::kEd25519) {
    unsigned char raw[32];
    size_t len = sizeof(raw);
    EVP_PKEY_get_raw_public_key(pkey_, raw, &len);
    return Base64(absl::string_view(reinterpret_cast<char*>(raw), len));
  }
  unsigned char* der = nullptr;
  int n = i2d_PUBKEY(pkey_, &der);
  std::string out = Base64(absl::string_view(reinterpret_cast<char*>(der), n));
  OPENSSL_free(der);
  return out;
}

std::string PrivateKey::DnsRecord() const {
  return absl::StrCat("v=DKIM1; k=", type_ == KeyType::kRsa ? "rsa" : "ed25519",
                      "; p=", PublicKeyBase64());
}

absl::StatusOr<std::string> PrivateKey::Sign(absl::string_view data) const {
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  std::string sig(EVP_PKEY_get_size(pkey_), '\0');
  size_t len = sig.size();
  bool ok;
  if (type_ == KeyType::kRsa) {
    ok = EVP_DigestSignInit(ctx, nullptr, EVP_sha256(), nullptr, pkey_) == 1 &&
         EVP_DigestSign(ctx, reinterpret_cast<unsigned char*>(sig.data()), &len,
                        reinterpret_cast<const unsigned char*>(data.data()),
                        data.size()) == 1;
  } else {
    // RFC 8463: Ed25519 signs the SHA-256 of the data, not the data.
    unsigned char hash[32];
    unsigned int hash_len = 0;
    EVP_Digest(data.data(), data.size(), hash, &hash_len, EVP_sha256(),
               nullptr);
    ok = EVP_DigestSignInit(ctx, nullptr, nullptr, nullptr, pkey_) == 1 &&
         EVP_DigestSign(ctx, reinterpret_cast<unsigned char*>(sig.data()), &len,
                        hash, hash_len) == 1;
  }
  EVP_MD_CTX_free(ctx);
  if (!ok) return absl::InternalError(absl::StrCat("sign: ", OpenSslError()));
  sig.resize(len);
  return sig;
}

}  // namespace peregrine::dkim
