// ServerSession: the server side of one SMTP connection, sans I/O.
//
// Bytes from the client go in (Feed); reply bytes come out (TakeOutput); a
// finished message comes out as an event (TakeMessage) and the session
// waits, buffering what the client pipelined after it, until the driver
// says whether the message is on disk (MessageQueued). So "250" after the
// final dot is only ever sent once the queue has the message. The session
// never sees a socket, a thread or the queue; a connection driver on the
// shard moves bytes and events. One session per connection, on its shard.
//
// RFC 5321 (commands, replies, limits), RFC 1870 (SIZE), RFC 6152
// (8BITMIME), RFC 6531 (SMTPUTF8), RFC 2920 (PIPELINING), RFC 3030
// (CHUNKING/BDAT), RFC 3461 (DSN parameters), RFC 2034/3463 (enhanced
// status codes).
//
// Security stance: every input is untrusted. Lines over the limit, unknown
// commands and bad parameters are errors counted against a limit, never a
// crash. DATA ends only at CRLF.CRLF: a bare LF or CR is read as a line
// end inside the message (normalized to CRLF), so "\n.\n" and "\r.\r" can
// never end a message and start a second one (SMTP smuggling).
// BDAT content is normalized the same way (a CR at the end of a chunk
// waits for the next one), so what the next hop receives has CRLF line
// ends only, whichever command carried it.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace peregrine::smtp {

struct SessionConfig {
  std::string hostname = "localhost";
  std::string client_address;  // For the EHLO reply and Received.
  // May relay to any domain (trusted network); otherwise RCPT is refused
  // unless authenticated (AUTH comes with the submission listeners).
  bool relay_allowed = false;
  size_t max_message_bytes = 25 * 1024 * 1024;
  size_t max_recipients = 1000;
  int max_errors = 20;
  // RFC 5321 §4.5.3.1.4: 512 for commands; we allow a little more for long
  // ESMTP parameters, as common servers do.
  size_t max_command_bytes = 2048;
  // Replies not yet taken by the driver: past this, pipelined commands wait
  // in the input until the driver takes the output and calls Resume(), so
  // a client that sends without reading cannot grow memory.
  size_t max_output_bytes = 64 * 1024;
  // STARTTLS offered (a TLS context exists and TLS is not yet active).
  bool tls_available = false;
  // TLS already on (implicit TLS, port 465).
  bool tls_active = false;
  // Submission: MAIL needs an authenticated client (530 otherwise).
  bool auth_required = false;
  // AUTH PLAIN and LOGIN offered (there are users to check against).
  bool auth_available = false;
  // AUTH over a connection without TLS: off, so passwords never cross the
  // network in the clear (538 then).
  bool auth_without_tls = false;
  // Is there disk room for a message of this size (0: unknown)? Asked at
  // MAIL, with SIZE when given: 452 when not. Unset: always.
  std::function<bool(uint64_t bytes)> has_room;
  // Domains whose mail is taken from any client without relaying it (the
  // bounce domains); unset: none.
  std::function<bool(absl::string_view domain)> accepts_for;
  // Asked for each RCPT that passed every other check: "" accepts it, a
  // reply line (without CRLF) refuses it, e.g. a suppressed address's 550.
  // Unset: all accepted.
  std::function<std::string(absl::string_view sender,
                            absl::string_view recipient)>
      check_recipient;
  // Asked at MAIL of an authenticated client: "" when the user may send
  // as that address, else why not (the 553 says it). Unset: any.
  std::function<std::string(absl::string_view user, absl::string_view sender)>
      check_sender;
  // Asked at MAIL of an authenticated client, after the checks above: ""
  // to go on, else the whole reply line (a 452 for a user over its rate).
  std::function<std::string(absl::string_view user)> take_message;
};

// What the check of an AuthRequest found.
enum class AuthVerdict {
  kAccepted,  // 235
  kRejected,  // 535: wrong user name or password.
  kTryLater,  // 454 (RFC 4954 §6): not checked now, e.g. too many failures.
};

struct AuthRequest {
  std::string user;
  std::string password;
};

// A refusal worth an operator's attention (a client misconfigured or
// misbehaving), noted once per kind per session for the driver to log.
struct Refusal {
  enum class Kind {
    kRelayDenied,
    kTooBig,
    kAuthRequired,
    kAuthNeedsTls,
    kBadHelo,
    kTooManyErrors,
  };
  Kind kind;
  std::string reply;  // What the client was told, without CRLF.
  std::string hint;   // What the client probably did wrong.
  // What the session knew then: "" when not given yet.
  std::string helo;
  std::string sender;
  std::string recipient;  // The refused RCPT.
};

struct Recipient {
  std::string address;
  std::string orcpt;   // DSN ORCPT as given ("rfc822;user@example.com").
  uint8_t notify = 0;  // Bits: 1 never, 2 success, 4 failure, 8 delay.
};

struct Message {
  std::string helo;
  std::string sender;  // Empty for <>.
  std::vector<Recipient> recipients;
  std::string envid;
  uint8_t ret = 0;  // 0 unspecified, 1 FULL, 2 HDRS.
  bool eight_bit = false;
  bool smtputf8 = false;
  std::string auth_user;  // Empty when not authenticated.
  std::string data;       // Unstuffed, CRLF line ends.
};

class ServerSession {
 public:
  enum class Phase {
    kCommand,
    kData,
    kBdat,
    kWaitQueue,
    kWaitTls,
    kWaitAuth,
    kClosed
  };

  explicit ServerSession(SessionConfig config);

  // The 220 banner; call once at connect.
  void Start();
  void Feed(absl::string_view bytes);

  // Reply bytes to send now.
  std::string TakeOutput();
  // A finished message; the session waits for MessageQueued().
  std::optional<Message> TakeMessage();
  // Outcome of queueing the message from TakeMessage(): the 250 with the
  // queue id, or 451/452 from the status, then the session goes on with
  // what the client pipelined.
  void MessageQueued(const absl::Status& status, absl::string_view queue_id);
  // The message is refused after all (the driver's checks of its content):
  // `reply` is the whole reply line, 4xx or 5xx, without CRLF.
  void MessageRefused(absl::string_view reply);
  // After "220 Ready to start TLS": the driver sends it, runs the TLS
  // handshake, and calls TlsStarted(); input meanwhile is TLS, not SMTP.
  bool wants_tls() const { return phase_ == Phase::kWaitTls; }
  // TLS is up: the session starts over (RFC 3207 §4.2: forget EHLO).
  void TlsStarted();
  // Refusals noted since the last call (each kind once per session).
  std::vector<Refusal> TakeRefusals();
  // Credentials to check (RFC 4954); the session waits for AuthResult().
  std::optional<AuthRequest> TakeAuthRequest();
  // `why` goes with kTryLater's 454.
  void AuthResult(AuthVerdict verdict, absl::string_view why = "");
  void AuthResult(bool ok) {
    AuthResult(ok ? AuthVerdict::kAccepted : AuthVerdict::kRejected);
  }
  const std::string& authenticated_user() const { return authenticated_; }
  bool tls_active() const { return config_.tls_active; }
  // The driver should close after sending the output (QUIT, error limit).
  bool closing() const { return phase_ == Phase::kClosed; }
  Phase phase() const { return phase_; }
  // Commands are waiting because the output reached max_output_bytes; the
  // driver should not read more until it has called Resume().
  bool blocked() const { return blocked_; }
  // After taking the output: goes on with the waiting commands.
  void Resume();
  // Idle too long (RFC 5321 §4.5.3.2): say so and close.
  void TimedOut();
  // The daemon is stopping: between transactions the session says 421 and
  // closes now; in the middle of one it does so once that message has been
  // answered, so a message being sent is not cut off.
  void Shutdown();

 private:
  void Process();
  void Command(absl::string_view line);
  void Reply(absl::string_view text);  // One line, without CRLF.
  void Error(absl::string_view text);  // A reply that counts as an error.
  // Error(reply), and the refusal noted for the log.
  void Refuse(Refusal::Kind kind, std::string reply, std::string hint,
              std::string recipient = "");
  void ResetTransaction();
  void ShutdownNow();
  void Ehlo(absl::string_view arg, bool extended);
  void Mail(absl::string_view arg);
  void Rcpt(absl::string_view arg);
  void Data();
  void Bdat(absl::string_view arg);
  void Auth(absl::string_view arg);
  void AuthResponse(absl::string_view line);
  void Credentials(std::string user, std::string password);
  bool DataBytes();  // Consumes DATA input; true when the message ended.
  bool BdatBytes();  // Consumes a BDAT chunk; true when the chunk ended.
  void Append(absl::string_view bytes);  // To the message, within its limit.
  void AppendBdat(absl::string_view bytes);  // Line ends made CRLF.
  void FinishMessage();

  SessionConfig config_;
  Phase phase_ = Phase::kCommand;
  std::string in_;   // Unprocessed input.
  std::string out_;  // Replies not yet taken.
  int errors_ = 0;
  bool discarding_ = false;  // Skipping the rest of an over-long line.
  bool blocked_ = false;     // Output full; see blocked().
  std::vector<Refusal> refusals_;
  uint32_t refused_kinds_ = 0;  // Bits by Refusal::Kind: noted already.

  std::string helo_;
  bool ehlo_ = false;
  bool shutting_down_ = false;
  bool have_mail_ = false;
  Message message_;
  size_t declared_size_ = 0;
  bool too_big_ = false;
  std::optional<Message> ready_;
  // AUTH state.
  enum class AuthStage { kNone, kPlain, kLoginUser, kLoginPassword };
  AuthStage auth_stage_ = AuthStage::kNone;
  std::string login_user_;
  std::string pending_user_;  // Whose credentials are being checked.
  std::optional<AuthRequest> auth_request_;
  std::string authenticated_;
  int auth_failures_ = 0;
  // DATA state: at the start of a line; did the previous line end in CRLF
  // (only then can "." CRLF end the message).
  bool line_start_ = true;
  bool previous_crlf_ = true;
  // BDAT state.
  size_t chunk_left_ = 0;
  bool chunk_last_ = false;
  bool bdat_started_ = false;
  bool bdat_failed_ = false;
  bool bdat_cr_ = false;  // BDAT content ended in a CR: its LF may follow.
  std::string bdat_error_;
};

// Is `arg` acceptable after EHLO/HELO: a domain or an address literal
// (RFC 5321 §4.1.1.1), with no byte that could break a header line.
bool IsHeloArgument(absl::string_view arg);

// Parses "<user@domain>" (with optional ESMTP parameters after it) as in
// MAIL FROM / RCPT TO. Returns the address (empty for <>) and the rest.
bool ParsePath(absl::string_view arg, std::string* address,
               absl::string_view* params);

}  // namespace peregrine::smtp
