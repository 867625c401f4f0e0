// ClientSession: the client side of one outbound SMTP connection, sans I/O.
//
// Replies from the server go in (Feed); command bytes come out
// (TakeOutput); events say when TLS should start, when a message's
// per-recipient results are known, and when the connection is over. The
// delivery driver owns the socket, TLS and timers (RFC 5321 §4.5.3.2: the
// session's phase tells which timeout applies). One session per
// connection, on the shard that owns the destination.
//
// RFC 5321 (EHLO with HELO fallback, replies, RSET, QUIT), RFC 2920
// (PIPELINING: MAIL, every RCPT and DATA in one write), RFC 3030
// (CHUNKING: with PIPELINING too, MAIL, every RCPT and "BDAT n LAST" with
// the whole message in one write, one round trip per message; the body is
// sent as it is, no dot-stuffing), RFC 1870 (SIZE:
// a message too big is failed before it is sent), RFC 6152 / 6531
// (8BITMIME, SMTPUTF8: a message the server cannot take fails with a clear
// permanent error), RFC 3207 (STARTTLS), RFC 4954 (AUTH PLAIN, for
// smarthosts), RFC 3461 (DSN parameters passed on when offered).
// Replies from the server are untrusted input: anything malformed ends the
// connection with a transient error, never a crash.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "base/reply.h"

namespace peregrine::smtp {

enum class TlsPolicy { kNone, kOpportunistic, kRequired };

struct ClientConfig {
  std::string helo = "localhost";
  TlsPolicy tls = TlsPolicy::kOpportunistic;
  bool tls_available = true;  // The driver can do TLS at all.
  // Smarthost login; empty user: no AUTH.
  std::string auth_user;
  std::string auth_password;
};

// One server reply, joined over its lines (base/reply.h).
using Reply = ::peregrine::Reply;

struct OutRecipient {
  std::string address;
  uint8_t notify = 0;  // As queue::DsnNotify.
  std::string orcpt;
};

struct OutMessage {
  std::string sender;
  std::vector<OutRecipient> recipients;
  std::string envid;
  uint8_t ret = 0;
  bool eight_bit = false;
  bool smtputf8 = false;
  // The message with CRLF line ends; the session dot-stuffs it.
  const std::string* body = nullptr;
};

// The outcome per recipient: 2xx delivered, 4xx try again, 5xx failed.
struct MessageResult {
  std::vector<Reply> recipients;  // Same order as OutMessage::recipients.
};

class ClientSession {
 public:
  enum class Phase {
    kGreeting,      // Waiting for 220.
    kHello,         // EHLO/HELO sent.
    kStartTls,      // STARTTLS sent.
    kTlsHandshake,  // The driver runs TLS; then TlsStarted().
    kAuth,          // AUTH sent.
    kReady,         // Idle: SendMessage() or Quit().
    kEnvelope,      // MAIL/RCPT/DATA (or BDAT) sent, replies pending.
    kData,          // Body sent, final reply pending.
    kReset,         // RSET sent.
    kQuit,          // QUIT sent.
    kClosed,
  };

  explicit ClientSession(ClientConfig config);

  void Feed(absl::string_view bytes);
  std::string TakeOutput();
  Phase phase() const { return phase_; }

  // TLS: when phase() is kTlsHandshake the driver starts TLS, then calls
  // TlsStarted(); the session says EHLO again.
  void TlsStarted();
  // In kTlsHandshake: bytes that came after the 220, which belong to TLS
  // (the driver feeds them to its TLS session; plain text there fails the
  // handshake).
  std::string TakeTlsBytes();
  bool tls_active() const { return tls_active_; }

  // In kReady only.
  void SendMessage(const OutMessage& message);
  std::optional<MessageResult> TakeResult();
  void Quit();

  // Why the connection ended (kClosed): the reply or the reason, to apply
  // to whatever was not delivered; transient unless the server said 5xx.
  const Reply& failure() const { return failure_; }
  // What the server offers, after EHLO.
  bool pipelining() const { return pipelining_; }
  bool chunking() const { return chunking_; }
  uint64_t max_size() const { return max_size_; }

 private:
  bool NextReply(Reply* reply);  // One complete reply from in_, if any.
  void OnReply(const Reply& reply);
  void Hello(const Reply& reply);
  void AfterHello();
  void Fail(Reply reply);                  // Ends the connection.
  void Send(absl::string_view line);       // Appends CRLF.
  void SendEnvelopeCommand(size_t index);  // Without PIPELINING.
  void FinishMessage();
  void SendBody();

  ClientConfig config_;
  Phase phase_ = Phase::kGreeting;
  std::string in_;
  std::string out_;
  Reply failure_;
  bool tls_active_ = false;
  bool esmtp_ = true;

  // Extensions.
  bool pipelining_ = false;
  bool chunking_ = false;
  bool starttls_ = false;
  bool eight_bit_mime_ = false;
  bool smtputf8_ = false;
  bool dsn_ = false;
  bool auth_plain_ = false;
  bool enhanced_ = false;
  uint64_t max_size_ = 0;
  std::vector<std::string> ehlo_lines_;

  // The message in flight.
  OutMessage message_;
  std::vector<Reply> results_;
  size_t replies_expected_ = 0;  // Envelope replies still to come.
  size_t next_command_ = 0;      // Without PIPELINING: next RCPT index.
  bool mail_ok_ = false;
  bool bdat_ = false;  // This message went as BDAT LAST, not DATA.
  size_t accepted_ = 0;
  std::optional<MessageResult> result_;
};

// Appends `body` to `out` as DATA content (RFC 5321 §4.5.2), final "."
// included: every line ends in CRLF, a bare CR or bare LF becoming CRLF,
// so no sequence in a body (one stored by an older version, or "\r.\r"
// from any source) can be read by the next hop as the end of the data; a
// line that starts with "." gets a second one.
void EncodeDataContent(absl::string_view body, std::string* out);
// The same line ends for a BDAT chunk, without dot-stuffing or the final
// ".": `body` itself when its lines already end in CRLF (then `out` is
// untouched and the result points into `body`), else the converted copy
// in `out`.
absl::string_view ChunkContent(absl::string_view body, std::string* out);

}  // namespace peregrine::smtp
