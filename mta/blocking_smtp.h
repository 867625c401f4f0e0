// BlockingSmtp: the command-line tools' SMTP client (sendmail,
// send-test): one blocking connection, in the clear or TLS (certificates
// not checked: these talk to the local daemon, whose certificate is often
// self-signed, or test a path), replies read whole (multi-line joined).
// ListenerAddress: where a tool reaches a local listener of the
// configuration (a wildcard address on loopback).
#pragma once

#include <openssl/ssl.h>

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "mta/config.h"
#include "mta/shard/address.h"

namespace peregrine {

// The first address of the `kind` listener, 0.0.0.0 and :: as loopback.
// FailedPrecondition naming the key when the listener is off.
absl::StatusOr<shard::SocketAddress> ListenerAddress(const Config& config,
                                                     ListenerKind kind);

// A message as DATA carries it: a line that starts with "." gets another,
// and the final ".\r\n" is added.
std::string DotStuffed(absl::string_view message);

// One message to one recipient through the listener at `address` (the
// daemon's own, for mail it makes itself): greeting, EHLO `helo`, MAIL,
// RCPT, DATA. Unavailable with the step and the reply when one fails.
absl::Status SubmitMail(const shard::SocketAddress& address,
                        const std::string& helo, const std::string& from,
                        const std::string& to, const std::string& message);

class BlockingSmtp {
 public:
  BlockingSmtp() = default;
  ~BlockingSmtp();
  BlockingSmtp(const BlockingSmtp&) = delete;
  BlockingSmtp& operator=(const BlockingSmtp&) = delete;

  // With `timeout` on every read and write. Unavailable: the reason
  // ("Connection refused", "Connection timed out").
  // From `source` (port 0) when given: FailedPrecondition when this host
  // cannot send from it.
  absl::Status Connect(const shard::SocketAddress& address, int timeout_s = 60,
                       const shard::SocketAddress* source = nullptr);
  // Resolves `host` first.
  absl::Status Connect(const std::string& host, const std::string& port,
                       int timeout_s = 30);
  // The handshake; the version and cipher.
  absl::StatusOr<std::string> StartTls();
  bool Send(const std::string& data);
  // The next reply's code (0: the connection broke or the reply is not
  // SMTP) and its text, lines joined with " / ".
  int Reply(std::string* text);

 private:
  int fd_ = -1;
  std::string buffer_;
  std::unique_ptr<SSL_CTX, decltype(&SSL_CTX_free)> ctx_{nullptr, SSL_CTX_free};
  std::unique_ptr<SSL, decltype(&SSL_free)> ssl_{nullptr, SSL_free};
};

}  // namespace peregrine
