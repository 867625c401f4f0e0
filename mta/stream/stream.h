// Stream: one connected socket's bytes for a protocol driver (SMTP
// reception, outbound delivery), in the clear or through TLS, on the
// socket's shard.
//
// Reading: Read() keeps at most one read in flight; what the peer sends
// reaches the handler as plaintext (TLS records decrypted, handshake
// messages answered by the stream itself, which queues the replies).
// Writing: Send() queues plaintext (encrypted once the TLS handshake is
// done, in the clear before it: "220 Ready to start TLS" goes out in the
// clear); Flush() writes what is queued, one write at a time, and the
// handler hears when each write completes.
// TLS: StartTlsServer() / StartTlsClient() turn the stream to TLS; every
// byte read from then on is TLS. Bytes the driver read before the switch
// that belong to TLS go in with Received().
//
// Lifetime: the driver owns the stream and must not free it before the
// `then` of Close() has run. From Close() on the handler is called no more:
// a read or write that completes afterwards is dropped, and `then` runs
// after every other callback of the socket (shard::Connection's rule). The
// handler is called only from the stream's callbacks and Received(), never
// from Send(), Flush() or the Start functions.
#pragma once

#include <memory>
#include <string>

#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "mta/shard/connection.h"
#include "mta/shard/reactor.h"
#include "tls/tls.h"

namespace peregrine {

class Stream {
 public:
  class Handler {
   public:
    virtual ~Handler() = default;
    // Plaintext from the peer; empty when a read carried only TLS
    // handshake bytes (the stream has queued its answer: Flush()).
    virtual void OnData(absl::string_view plaintext) = 0;
    // The peer closed (0) or the read failed (-errno).
    virtual void OnEnd(int error) = 0;
    // The TLS handshake completed (before the OnData of the same read).
    virtual void OnTlsUp() = 0;
    // TLS failed beyond repair (a bad handshake, an alert, a bad record).
    // `first`: these were the first bytes the peer ever sent, `bytes`.
    // An alert for the peer may be queued; the stream reads no more.
    virtual void OnTlsError(const absl::Status& status, bool handshake_done,
                            bool first, absl::string_view bytes) = 0;
    // A write completed: `result` < 0 is -errno.
    virtual void OnWritten(int result) = 0;
  };

  Stream(shard::Reactor& reactor, int fd, Handler& handler);
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;

  // Starts a read unless one is in flight, TLS failed or the stream closes.
  void Read();
  bool reading() const { return reading_; }

  // Queues plaintext; fails only when TLS refuses to encrypt it.
  absl::Status Send(absl::string_view plaintext);
  // Writes what is queued unless a write is in flight.
  void Flush();
  bool writing() const { return writing_; }
  // Queued and in flight, not yet written.
  size_t unsent() const { return out_.size() + sending_.size(); }

  // The server side of TLS (implicit TLS, or after "220 Ready to start TLS").
  void StartTlsServer(std::shared_ptr<const tls::ServerContext> context);
  // The client side towards `host` (SNI, and the name checked when
  // `verify`; with `dane`, authenticated by those TLSA records); queues the
  // client's hello.
  absl::Status StartTlsClient(std::shared_ptr<const tls::ClientContext> context,
                              const std::string& host, bool verify,
                              const std::vector<tls::Tlsa>& dane = {});
  // Bytes the driver read that belong to the stream's TLS: handled as if
  // read now (the handler may be called).
  void Received(absl::string_view bytes);
  // The TLS session once started (nullptr in the clear).
  const tls::TlsSession* tls() const { return tls_.get(); }
  bool tls_up() const { return tls_ != nullptr && tls_->handshake_done(); }

  bool closing() const { return closed_ || conn_.closing(); }
  // The socket, for a half-close (shutdown(SHUT_WR)) in the clear.
  int fd() const { return conn_.fd(); }
  // Closes the socket; `then` runs once every callback of it has.
  void Close(absl::AnyInvocable<void()> then);

 private:
  void OnBytes(absl::string_view bytes);

  shard::Connection conn_;
  Handler& handler_;
  std::unique_ptr<tls::TlsSession> tls_;
  bool tls_failed_ = false;
  bool got_bytes_ = false;
  bool reading_ = false;
  bool writing_ = false;
  bool closed_ = false;
  std::string out_;      // Queued.
  std::string sending_;  // The write in flight.
  char buffer_[16 * 1024];
};

}  // namespace peregrine
