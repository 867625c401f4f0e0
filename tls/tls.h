// TLS for the shards: server contexts and sans-I/O sessions (OpenSSL 3).
//
// ServerContext: one SSL_CTX made from a PEM certificate chain and key
// (TLS 1.2 minimum), built on the main thread at start and on SIGHUP and
// shared read-only (shared_ptr) by every shard. When no certificate is
// configured, EnsureSelfSigned() makes one in the data directory at first
// start so that STARTTLS works out of the box (receivers then see an
// unverified certificate: fine for opportunistic TLS, not for submission
// clients that verify).
//
// TlsSession: one connection's TLS state over memory BIOs: ciphertext from
// the socket goes in, plaintext comes out, and the other way round. The
// connection driver moves bytes; the session never sees a socket.
#pragma once

#include <openssl/ssl.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace peregrine::tls {

class ServerContext {
 public:
  static absl::StatusOr<std::shared_ptr<const ServerContext>> FromFiles(
      const std::string& cert_file, const std::string& key_file);
  ~ServerContext();
  SSL_CTX* ctx() const { return ctx_; }

 private:
  explicit ServerContext(SSL_CTX* ctx) : ctx_(ctx) {}
  SSL_CTX* ctx_;
};

// Makes dir/tls/self-signed.{crt,key} for `hostname` unless they exist;
// returns their paths.
absl::StatusOr<std::pair<std::string, std::string>> EnsureSelfSigned(
    const std::string& data_dir, const std::string& hostname);

// For delivery: TLS 1.2 minimum, the system's trust store
// (/etc/ssl/certs) for sessions that verify.
class ClientContext {
 public:
  // `ca_file`: PEM certificates to trust instead of the system's.
  static absl::StatusOr<std::shared_ptr<const ClientContext>> Create(
      const std::string& ca_file = "");
  ~ClientContext();
  SSL_CTX* ctx() const { return ctx_; }

 private:
  explicit ClientContext(SSL_CTX* ctx) : ctx_(ctx) {}
  SSL_CTX* ctx_;
};

// A DANE TLSA record (RFC 6698) to authenticate a server with (RFC 7672):
// usage 2 (DANE-TA) or 3 (DANE-EE), selector 0 (certificate) or 1 (public
// key), matching type 0 (exact), 1 (SHA-256) or 2 (SHA-512).
struct Tlsa {
  uint8_t usage = 0;
  uint8_t selector = 0;
  uint8_t matching = 0;
  std::string data;
};

class TlsSession {
 public:
  static std::unique_ptr<TlsSession> Server(
      std::shared_ptr<const ServerContext> context);
  // The client side towards `host` (SNI). `verify`: the handshake fails
  // unless the chain is trusted and names `host` (RFC 6125); otherwise any
  // certificate is taken and Verified() tells what it was worth.
  // With `dane` records (RFC 7672): the handshake fails unless the server's
  // chain matches one of them (OpenSSL's DANE: a DANE-EE match needs no
  // name and no trusted chain; DANE-TA needs the chain to lead to the
  // matched certificate and to name `host`); `verify` is then implied.
  static std::unique_ptr<TlsSession> Client(
      std::shared_ptr<const ClientContext> context, const std::string& host,
      bool verify, const std::vector<Tlsa>& dane = {});
  ~TlsSession();

  // Ciphertext from the peer; appends whatever plaintext it yields. An
  // error means the connection is beyond repair (bad handshake, alert).
  absl::Status Feed(absl::string_view ciphertext, std::string* plaintext);
  // Plaintext to send; encrypted into the outgoing buffer.
  absl::Status Write(absl::string_view plaintext);
  // Ciphertext to send now (handshake messages, records, alerts).
  std::string TakeCiphertext();

  bool handshake_done() const { return SSL_is_init_finished(ssl_); }
  // "TLSv1.3 TLS_AES_256_GCM_SHA384" once the handshake is done.
  std::string Description() const;
  // Its two parts: "TLSv1.3" and "TLS_AES_256_GCM_SHA384".
  std::string Version() const;
  std::string Cipher() const;
  // Client side: the peer's certificate chain is trusted and names the
  // host; else why not ("self-signed certificate", ...).
  bool Verified(std::string* why = nullptr) const;
  // Client side with DANE: a TLSA record matched.
  bool DaneVerified() const;
  // Why the certificate check failed, in OpenSSL's words ("hostname
  // mismatch", "no matching DANE TLSA records", ...), also after a failed
  // handshake; "" when it did not fail.
  std::string VerifyError() const;
  // Ciphertext to send before any input (the client's hello).
  absl::Status Begin();

 private:
  TlsSession() = default;
  absl::Status Advance(std::string* plaintext);

  std::shared_ptr<const ServerContext> context_;
  std::shared_ptr<const ClientContext> client_context_;
  SSL* ssl_ = nullptr;
  BIO* in_ = nullptr;   // Owned by ssl_.
  BIO* out_ = nullptr;  // Owned by ssl_.
};

}  // namespace peregrine::tls
