#include "tls/tls.h"

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>

#include "absl/strings/str_cat.h"

namespace peregrine::tls {
namespace {

std::string OpenSslErrors() {
  std::string out;
  unsigned long e;
  while ((e = ERR_get_error()) != 0) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof(buf));
    if (!out.empty()) out += "; ";
    out += buf;
  }
  return out.empty() ? "unknown error" : out;
}

// Writes a PEM file whole or not at all (a temporary file renamed into
// place): a key cut short by a full disk would fail every later start.
absl::Status WritePem(const std::string& path, bool private_key, EVP_PKEY* key,
                      X509* cert) {
  std::string tmp = path + ".tmp";
  FILE* f = fopen(tmp.c_str(), "w");
  if (f == nullptr) {
    return absl::UnavailableError(
        absl::StrCat("cannot create ", tmp, ": ", std::strerror(errno)));
  }
  if (private_key) fchmod(fileno(f), 0600);
  bool ok = private_key ? PEM_write_PrivateKey(f, key, nullptr, nullptr, 0,
                                               nullptr, nullptr)
                        : PEM_write_X509(f, cert);
  errno = 0;
  ok = ok && fflush(f) == 0 && fsync(fileno(f)) == 0;
  int err = errno;
  if (fclose(f) != 0 && ok) {
    ok = false;
    err = errno;
  }
  if (ok && rename(tmp.c_str(), path.c_str()) != 0) {
    ok = false;
    err = errno;
  }
  if (ok) return absl::OkStatus();
  unlink(tmp.c_str());
  if (err == ENOSPC || err == EDQUOT) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "cannot write ", path,
        ": no space left on the device holding it; free some space there"));
  }
  return absl::UnavailableError(
      absl::StrCat("cannot write ", path, ": ",
                   err != 0 ? std::strerror(err) : OpenSslErrors()));
}

}  // namespace

absl::StatusOr<std::shared_ptr<const ServerContext>> ServerContext::FromFiles(
    const std::string& cert_file, const std::string& key_file) {
  SSL_CTX* ctx = SSL_CTX_new(TLS_server_method());
  if (ctx == nullptr) return absl::InternalError(OpenSslErrors());
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  SSL_CTX_set_options(
      ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE);
  auto fail = [&](absl::string_view what, const std::string& file) {
    std::string why = OpenSslErrors();
    SSL_CTX_free(ctx);
    return absl::InvalidArgumentError(absl::StrCat(what, " ", file, ": ", why));
  };
  if (SSL_CTX_use_certificate_chain_file(ctx, cert_file.c_str()) != 1) {
    return fail("cannot load the TLS certificate chain", cert_file);
  }
  if (SSL_CTX_use_PrivateKey_file(ctx, key_file.c_str(), SSL_FILETYPE_PEM) !=
      1) {
    return fail("cannot load the TLS private key", key_file);
  }
  if (SSL_CTX_check_private_key(ctx) != 1) {
    return fail("the TLS key does not match the certificate", key_file);
  }
  return std::shared_ptr<const ServerContext>(new ServerContext(ctx));
}

ServerContext::~ServerContext() { SSL_CTX_free(ctx_); }

absl::StatusOr<std::pair<std::string, std::string>> EnsureSelfSigned(
    const std::string& data_dir, const std::string& hostname) {
  std::string dir = data_dir + "/tls";
  std::string crt = dir + "/self-signed.crt";
  std::string key_path = dir + "/self-signed.key";
  if (std::filesystem::exists(crt) && std::filesystem::exists(key_path)) {
    return std::make_pair(crt, key_path);
  }
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  EVP_PKEY* key = EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256");
  X509* cert = X509_new();
  if (key == nullptr || cert == nullptr) {
    EVP_PKEY_free(key);
    X509_free(cert);
    return absl::InternalError(OpenSslErrors());
  }
  X509_set_version(cert, 2);
  ASN1_INTEGER_set(X509_get_serialNumber(cert), 1);
  X509_gmtime_adj(X509_getm_notBefore(cert), -3600);
  X509_gmtime_adj(X509_getm_notAfter(cert), 10L * 365 * 24 * 3600);
  X509_set_pubkey(cert, key);
  X509_NAME* name = X509_get_subject_name(cert);
  X509_NAME_add_entry_by_txt(
      name, "CN", MBSTRING_ASC,
      reinterpret_cast<const unsigned char*>(hostname.c_str()), -1, -1, 0);
  X509_set_issuer_name(cert, name);
  X509V3_CTX v3;
  X509V3_set_ctx_nodb(&v3);
  X509V3_set_ctx(&v3, cert, cert, nullptr, nullptr, 0);
  std::string san = "DNS:" + hostname;
  if (X509_EXTENSION* ext = X509V3_EXT_conf_nid(
          nullptr, &v3, NID_subject_alt_name, san.c_str())) {
    X509_add_ext(cert, ext, -1);
    X509_EXTENSION_free(ext);
  }
  absl::Status written =
      X509_sign(cert, key, EVP_sha256()) > 0
          ? WritePem(key_path, true, key, nullptr)
          : absl::InternalError(absl::StrCat("cannot sign: ", OpenSslErrors()));
  if (written.ok()) written = WritePem(crt, false, nullptr, cert);
  EVP_PKEY_free(key);
  X509_free(cert);
  if (!written.ok()) {
    return absl::Status(written.code(),
                        absl::StrCat("cannot make a self-signed certificate: ",
                                     written.message()));
  }
  return std::make_pair(crt, key_path);
}

std::unique_ptr<TlsSession> TlsSession::Server(
    std::shared_ptr<const ServerContext> context) {
  std::unique_ptr<TlsSession> s(new TlsSession);
  s->context_ = std::move(context);
  s->ssl_ = SSL_new(s->context_->ctx());
  s->in_ = BIO_new(BIO_s_mem());
  s->out_ = BIO_new(BIO_s_mem());
  BIO_set_mem_eof_return(s->in_, -1);  // Empty means "more later", not EOF.
  SSL_set_bio(s->ssl_, s->in_, s->out_);
  SSL_set_accept_state(s->ssl_);
  return s;
}

absl::StatusOr<std::shared_ptr<const ClientContext>> ClientContext::Create(
    const std::string& ca_file) {
  SSL_CTX* ctx = SSL_CTX_new(TLS_client_method());
  if (ctx == nullptr) {
    return absl::InternalError(
        absl::StrCat("TLS client context: ", OpenSslErrors()));
  }
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  // DANE (RFC 7672) for the sessions given TLSA records; the default digest
  // table (SHA-256 for type 1, SHA-512 for type 2).
  if (SSL_CTX_dane_enable(ctx) <= 0) {
    SSL_CTX_free(ctx);
    return absl::InternalError(
        absl::StrCat("TLS client context: DANE: ", OpenSslErrors()));
  }
  // Without a trust store nothing verifies; opportunistic TLS still works.
  if (ca_file.empty()) {
    SSL_CTX_set_default_verify_paths(ctx);
  } else if (SSL_CTX_load_verify_locations(ctx, ca_file.c_str(), nullptr) !=
             1) {
    SSL_CTX_free(ctx);
    return absl::InvalidArgumentError(absl::StrCat(
        "cannot read CA certificates from ", ca_file, ": ", OpenSslErrors()));
  }
  return std::shared_ptr<const ClientContext>(new ClientContext(ctx));
}

ClientContext::~ClientContext() { SSL_CTX_free(ctx_); }

std::unique_ptr<TlsSession> TlsSession::Client(
    std::shared_ptr<const ClientContext> context, const std::string& host,
    bool verify, const std::vector<Tlsa>& dane) {
  std::unique_ptr<TlsSession> s(new TlsSession);
  s->client_context_ = std::move(context);
  s->ssl_ = SSL_new(s->client_context_->ctx());
  s->in_ = BIO_new(BIO_s_mem());
  s->out_ = BIO_new(BIO_s_mem());
  BIO_set_mem_eof_return(s->in_, -1);
  SSL_set_bio(s->ssl_, s->in_, s->out_);
  SSL_set_connect_state(s->ssl_);
  if (!host.empty()) {
    SSL_set_tlsext_host_name(s->ssl_, host.c_str());
    SSL_set1_host(s->ssl_, host.c_str());
  }
  if (!dane.empty() && SSL_dane_enable(s->ssl_, host.c_str()) > 0) {
    // RFC 7672 3.1.1: a DANE-EE match says nothing about names.
    SSL_dane_set_flags(s->ssl_, DANE_FLAG_NO_DANE_EE_NAMECHECKS);
    for (const Tlsa& t : dane) {
      // An unusable record (a digest OpenSSL lacks, a bad length) is
      // skipped; the caller gave only the usages DANE for SMTP uses.
      SSL_dane_tlsa_add(s->ssl_, t.usage, t.selector, t.matching,
                        reinterpret_cast<const unsigned char*>(t.data.data()),
                        t.data.size());
    }
    verify = true;
  }
  SSL_set_verify(s->ssl_, verify ? SSL_VERIFY_PEER : SSL_VERIFY_NONE, nullptr);
  return s;
}

bool TlsSession::DaneVerified() const {
  return SSL_get0_dane_authority(ssl_, nullptr, nullptr) >= 0 &&
         SSL_get_verify_result(ssl_) == X509_V_OK;
}

std::string TlsSession::VerifyError() const {
  long result = SSL_get_verify_result(ssl_);
  return result == X509_V_OK ? "" : X509_verify_cert_error_string(result);
}

absl::Status TlsSession::Begin() {
  std::string ignored;
  return Advance(&ignored);
}

bool TlsSession::Verified(std::string* why) const {
  if (SSL_get0_peer_certificate(ssl_) == nullptr) {
    if (why != nullptr) *why = "no certificate";
    return false;
  }
  long result = SSL_get_verify_result(ssl_);
  if (result == X509_V_OK) return true;
  if (why != nullptr) *why = X509_verify_cert_error_string(result);
  return false;
}

TlsSession::~TlsSession() { SSL_free(ssl_); }

absl::Status TlsSession::Advance(std::string* plaintext) {
  if (!SSL_is_init_finished(ssl_)) {
    int rc = SSL_do_handshake(ssl_);
    if (rc != 1) {
      int err = SSL_get_error(ssl_, rc);
      if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) {
        return absl::OkStatus();
      }
      return absl::PermissionDeniedError(
          absl::StrCat("TLS handshake failed: ", OpenSslErrors()));
    }
  }
  char buf[16384];
  while (true) {
    int n = SSL_read(ssl_, buf, sizeof(buf));
    if (n > 0) {
      plaintext->append(buf, n);
      continue;
    }
    int err = SSL_get_error(ssl_, n);
    if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) {
      return absl::OkStatus();
    }
    if (err == SSL_ERROR_ZERO_RETURN) {
      return absl::CancelledError("TLS closed by the peer");
    }
    return absl::DataLossError(absl::StrCat("TLS: ", OpenSslErrors()));
  }
}

absl::Status TlsSession::Feed(absl::string_view ciphertext,
                              std::string* plaintext) {
  if (!ciphertext.empty()) {
    BIO_write(in_, ciphertext.data(), static_cast<int>(ciphertext.size()));
  }
  return Advance(plaintext);
}

absl::Status TlsSession::Write(absl::string_view plaintext) {
  while (!plaintext.empty()) {
    int n =
        SSL_write(ssl_, plaintext.data(), static_cast<int>(plaintext.size()));
    if (n <= 0) {
      return absl::DataLossError(absl::StrCat("TLS write: ", OpenSslErrors()));
    }
    plaintext.remove_prefix(static_cast<size_t>(n));
  }
  return absl::OkStatus();
}

std::string TlsSession::TakeCiphertext() {
  std::string out;
  char* data = nullptr;
  long n = BIO_get_mem_data(out_, &data);
  if (n > 0) {
    out.assign(data, n);
    (void)BIO_reset(out_);
  }
  return out;
}

std::string TlsSession::Description() const {
  return absl::StrCat(Version(), " ", Cipher());
}

std::string TlsSession::Version() const { return SSL_get_version(ssl_); }

std::string TlsSession::Cipher() const {
  const SSL_CIPHER* cipher = SSL_get_current_cipher(ssl_);
  return cipher == nullptr ? "" : SSL_CIPHER_get_name(cipher);
}

}  // namespace peregrine::tls
