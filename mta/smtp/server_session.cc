// Over 800 lines, one concern: the server side of SMTP as one state
// machine (commands, DATA, BDAT, AUTH, replies); splitting it by command
// would scatter the state every command reads.
#include "mta/smtp/server_session.h"

#include <algorithm>
#include <cstring>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace peregrine::smtp {
namespace {

bool IsAscii(absl::string_view s) {
  for (unsigned char c : s) {
    if (c >= 0x80) return false;
  }
  return true;
}

// RFC 3461 §4: xtext is printable ASCII without '=' and '+', or "+XX".
bool ValidXtext(absl::string_view s) {
  for (size_t i = 0; i < s.size(); ++i) {
    unsigned char c = s[i];
    if (c == '+') {
      if (i + 2 >= s.size() + 0 || !absl::ascii_isxdigit(s[i + 1]) ||
          !absl::ascii_isxdigit(s[i + 2])) {
        return false;
      }
      i += 2;
    } else if (c < 33 || c > 126 || c == '=') {
      return false;
    }
  }
  return true;
}

// A mailbox as RFC 5321 §4.1.2 allows it, loosely: local@domain, no
// spaces or controls, within the length limits of §4.5.3.1.
bool ValidMailbox(absl::string_view a) {
  if (a.size() > 254) return false;
  size_t at = a.rfind('@');
  if (at == absl::string_view::npos || at == 0 || at + 1 == a.size()) {
    return false;
  }
  if (at > 64) return false;
  for (unsigned char c : a) {
    if (c <= 32 || c == 127 || c == '<' || c == '>') return false;
  }
  absl::string_view domain = a.substr(at + 1);
  if (domain.front() == '[') return domain.back() == ']';  // Address literal.
  return domain.find("..") == absl::string_view::npos &&
         domain.front() != '.' && domain.back() != '.';
}

}  // namespace

bool ParsePath(absl::string_view arg, std::string* address,
               absl::string_view* params) {
  arg = absl::StripLeadingAsciiWhitespace(arg);
  if (arg.empty() || arg.front() != '<') return false;
  size_t close = arg.find('>');
  if (close == absl::string_view::npos) return false;
  absl::string_view path = arg.substr(1, close - 1);
  // A source route "@a,@b:user@c" is accepted and ignored (§4.1.2).
  if (!path.empty() && path.front() == '@') {
    size_t colon = path.find(':');
    if (colon == absl::string_view::npos) return false;
    path = path.substr(colon + 1);
  }
  *address = std::string(path);
  *params = absl::StripAsciiWhitespace(arg.substr(close + 1));
  return true;
}

ServerSession::ServerSession(SessionConfig config)
    : config_(std::move(config)) {}

void ServerSession::Start() {
  Reply(absl::StrCat("220 ", config_.hostname, " ESMTP Peregrine"));
}

std::string ServerSession::TakeOutput() {
  std::string out;
  out.swap(out_);
  return out;
}

std::optional<Message> ServerSession::TakeMessage() {
  std::optional<Message> out;
  out.swap(ready_);
  return out;
}

void ServerSession::Reply(absl::string_view text) {
  absl::StrAppend(&out_, text, "\r\n");
}

void ServerSession::Error(absl::string_view text) {
  Reply(text);
  if (++errors_ >= config_.max_errors) {
    std::string bye =
        absl::StrCat("421 4.7.0 ", config_.hostname, " Error: too many errors");
    Reply(bye);
    phase_ = Phase::kClosed;
    refusals_.push_back(
        {Refusal::Kind::kTooManyErrors, std::move(bye),
         absl::StrCat(config_.max_errors,
                      " errors in one connection, the last answered \"", text,
                      "\": probably not a mail client, or one speaking "
                      "another protocol"),
         helo_, have_mail_ ? message_.sender : "", ""});
  }
}

void ServerSession::Refuse(Refusal::Kind kind, std::string reply,
                           std::string hint, std::string recipient) {
  uint32_t bit = 1u << static_cast<int>(kind);
  if ((refused_kinds_ & bit) == 0) {
    refused_kinds_ |= bit;
    refusals_.push_back({kind, reply, std::move(hint), helo_,
                         have_mail_ ? message_.sender : "",
                         std::move(recipient)});
  }
  Error(reply);
}

std::vector<Refusal> ServerSession::TakeRefusals() {
  std::vector<Refusal> out;
  out.swap(refusals_);
  return out;
}

void ServerSession::TimedOut() {
  if (phase_ == Phase::kClosed) return;
  Reply(
      absl::StrCat("421 4.4.2 ", config_.hostname, " Error: timeout exceeded"));
  phase_ = Phase::kClosed;
}

void ServerSession::Shutdown() {
  shutting_down_ = true;
  if (phase_ == Phase::kCommand && !have_mail_ &&
      auth_stage_ == AuthStage::kNone) {
    ShutdownNow();
  }
}

void ServerSession::ShutdownNow() {
  Reply(absl::StrCat("421 4.3.2 ", config_.hostname,
                     " Service shutting down, closing connection"));
  phase_ = Phase::kClosed;
}

void ServerSession::ResetTransaction() {
  have_mail_ = false;
  message_ = Message{};
  declared_size_ = 0;
  too_big_ = false;
  bdat_started_ = false;
  bdat_failed_ = false;
  chunk_left_ = 0;
  chunk_last_ = false;
  bdat_cr_ = false;
}

void ServerSession::Feed(absl::string_view bytes) {
  if (phase_ == Phase::kClosed) return;
  in_.append(bytes.data(), bytes.size());
  Process();
}

void ServerSession::Resume() {
  if (!blocked_) return;
  blocked_ = false;
  Process();
}

void ServerSession::Process() {
  while (phase_ == Phase::kCommand || phase_ == Phase::kData ||
         phase_ == Phase::kBdat) {
    if (phase_ == Phase::kData) {
      if (!DataBytes()) return;
      continue;
    }
    if (phase_ == Phase::kBdat) {
      if (!BdatBytes()) return;
      continue;
    }
    if (out_.size() >= config_.max_output_bytes) {
      blocked_ = true;  // Resume() goes on once the output is taken.
      return;
    }
    size_t eol = in_.find('\n');
    if (eol == std::string::npos) {
      if (in_.size() > config_.max_command_bytes) {
        // Keep nothing of an endless line; what follows its end is fresh.
        in_.clear();
        discarding_ = true;
      }
      return;
    }
    std::string line = in_.substr(0, eol);
    in_.erase(0, eol + 1);
    if (discarding_) {
      discarding_ = false;
      Error("500 5.5.2 Error: line too long");
      continue;
    }
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.size() > config_.max_command_bytes) {
      Error("500 5.5.2 Error: line too long");
      continue;
    }
    Command(line);
  }
}

void ServerSession::Command(absl::string_view line) {
  if (auth_stage_ != AuthStage::kNone) return AuthResponse(line);
  if (shutting_down_ && !have_mail_) return ShutdownNow();
  size_t space = line.find(' ');
  std::string verb = absl::AsciiStrToUpper(line.substr(0, space));
  absl::string_view arg =
      space == absl::string_view::npos ? "" : line.substr(space + 1);
  if (verb == "EHLO" || verb == "HELO") return Ehlo(arg, verb == "EHLO");
  if (verb == "MAIL") return Mail(arg);
  if (verb == "RCPT") return Rcpt(arg);
  if (verb == "DATA") {
    if (!arg.empty()) return Error("501 5.5.4 Syntax: DATA");
    return Data();
  }
  if (verb == "BDAT") return Bdat(arg);
  if (verb == "RSET") {
    ResetTransaction();
    return Reply("250 2.0.0 Ok");
  }
  if (verb == "NOOP") return Reply("250 2.0.0 Ok");
  if (verb == "QUIT") {
    Reply("221 2.0.0 Bye");
    phase_ = Phase::kClosed;
    return;
  }
  if (verb == "VRFY") {
    return Reply(
        "252 2.0.0 Cannot VRFY user, but will accept message and attempt "
        "delivery");
  }
  if (verb == "HELP") {
    return Reply(
        "214 2.0.0 Commands: EHLO HELO MAIL RCPT DATA BDAT RSET NOOP "
        "VRFY QUIT");
  }
  if (verb == "STARTTLS") {
    if (config_.tls_active) return Error("503 5.5.1 Error: TLS already active");
    if (!config_.tls_available) return Error("454 4.7.0 TLS not available");
    if (!arg.empty()) return Error("501 5.5.4 Syntax: STARTTLS");
    Reply("220 2.0.0 Ready to start TLS");
    // Whatever came in the same packet after STARTTLS was sent in the
    // clear: it must not run inside the TLS session (the STARTTLS
    // command injection bug, CVE-2011-0411). Drop it.
    in_.clear();
    phase_ = Phase::kWaitTls;
    return;
  }
  if (verb == "AUTH") return Auth(arg);
  if (verb == "EXPN" || verb == "TURN" || verb == "ETRN") {
    return Error("502 5.5.1 Error: command not implemented");
  }
  Error("502 5.5.2 Error: command not recognized");
}

bool IsHeloArgument(absl::string_view arg) {
  if (arg.empty() || arg.size() > 255) return false;
  if (arg.front() == '[') {
    // RFC 5321 §4.1.3 address literals: IPv4, "IPv6:..." and the general
    // form "tag:content", whose content is printable ASCII but [ ] \.
    if (arg.size() < 3 || arg.back() != ']') return false;
    for (char c : arg.substr(1, arg.size() - 2)) {
      if (c <= ' ' || c >= 0x7f || c == '[' || c == ']' || c == '\\') {
        return false;
      }
    }
    return true;
  }
  // A domain (RFC 5321 §4.1.2): labels of letters, digits and hyphens. Real
  // clients also send underscores (Windows host names) and, with SMTPUTF8,
  // UTF-8 labels: both are accepted; a trailing dot too. Nothing else: no
  // controls, spaces or punctuation that could end up in a header.
  size_t label = 0;
  for (size_t i = 0; i < arg.size(); ++i) {
    unsigned char c = static_cast<unsigned char>(arg[i]);
    if (c == '.') {
      if (label == 0) return false;  // ".." or a leading dot.
      label = 0;
      continue;
    }
    if (!(absl::ascii_isalnum(c) || c == '-' || c == '_' || c >= 0x80)) {
      return false;
    }
    if (++label > 63) return false;
  }
  return true;
}

void ServerSession::Ehlo(absl::string_view arg, bool extended) {
  arg = absl::StripAsciiWhitespace(arg);
  if (arg.empty()) {
    return Error(extended ? "501 5.5.4 Syntax: EHLO hostname"
                          : "501 5.5.4 Syntax: HELO hostname");
  }
  if (!IsHeloArgument(arg)) {
    return Refuse(
        Refusal::Kind::kBadHelo,
        "501 5.5.2 Error: invalid EHLO/HELO argument: give your "
        "host's domain name or an address literal such as "
        "[192.0.2.1]",
        "the client's EHLO/HELO name is neither a domain nor an address "
        "literal");
  }
  ResetTransaction();
  helo_ = std::string(arg);
  ehlo_ = extended;
  if (!extended) return Reply(absl::StrCat("250 ", config_.hostname));
  Reply(absl::StrCat("250-", config_.hostname, " Hello ", helo_,
                     config_.client_address.empty()
                         ? ""
                         : absl::StrCat(" [", config_.client_address, "]")));
  Reply("250-PIPELINING");
  Reply(absl::StrCat("250-SIZE ", config_.max_message_bytes));
  Reply("250-8BITMIME");
  Reply("250-SMTPUTF8");
  Reply("250-ENHANCEDSTATUSCODES");
  Reply("250-DSN");
  if (config_.tls_available && !config_.tls_active) Reply("250-STARTTLS");
  if (config_.auth_available &&
      (config_.tls_active || config_.auth_without_tls)) {
    Reply("250-AUTH PLAIN LOGIN");
  }
  Reply("250 CHUNKING");
}

void ServerSession::Mail(absl::string_view arg) {
  if (helo_.empty()) return Error("503 5.5.1 Error: send HELO/EHLO first");
  if (have_mail_) return Error("503 5.5.1 Error: nested MAIL command");
  if (config_.auth_required && authenticated_.empty()) {
    bool tls_first = !config_.tls_active && config_.tls_available;
    return Refuse(
        Refusal::Kind::kAuthRequired,
        tls_first ? "530 5.7.0 Must issue a STARTTLS command first"
                  : "530 5.7.0 Authentication required",
        tls_first ? "the client sent MAIL on a submission port without "
                    "STARTTLS and AUTH: set it to use STARTTLS and a user name"
                  : "the client sent MAIL on a submission port without "
                    "AUTH: set a user name and password in it");
  }
  if (!absl::StartsWithIgnoreCase(arg, "FROM:")) {
    return Error("501 5.5.4 Syntax: MAIL FROM:<address>");
  }
  std::string address;
  absl::string_view params;
  if (!ParsePath(arg.substr(5), &address, &params)) {
    return Error("501 5.1.7 Bad sender address syntax");
  }
  Message m;
  size_t size = 0;
  for (absl::string_view p : absl::StrSplit(params, ' ', absl::SkipEmpty())) {
    if (!ehlo_) return Error("555 5.5.4 Error: parameters need EHLO");
    size_t eq = p.find('=');
    std::string key = absl::AsciiStrToUpper(p.substr(0, eq));
    absl::string_view value =
        eq == absl::string_view::npos ? "" : p.substr(eq + 1);
    if (key == "SIZE") {
      if (!absl::SimpleAtoi(value, &size)) {
        return Error("501 5.5.4 Error: bad SIZE parameter");
      }
    } else if (key == "BODY") {
      std::string body = absl::AsciiStrToUpper(value);
      if (body == "8BITMIME") {
        m.eight_bit = true;
      } else if (body != "7BIT") {
        return Error("555 5.5.4 Error: unsupported BODY parameter");
      }
    } else if (key == "SMTPUTF8" && value.empty()) {
      m.smtputf8 = true;
    } else if (key == "RET") {
      std::string ret = absl::AsciiStrToUpper(value);
      if (ret == "FULL") {
        m.ret = 1;
      } else if (ret == "HDRS") {
        m.ret = 2;
      } else {
        return Error("501 5.5.4 Error: bad RET parameter");
      }
    } else if (key == "ENVID") {
      if (value.empty() || value.size() > 100 || !ValidXtext(value)) {
        return Error("501 5.5.4 Error: bad ENVID parameter");
      }
      m.envid = std::string(value);
    } else if (key == "AUTH") {
      // RFC 4954 §5: ignored unless the client is authenticated.
    } else {
      return Error(absl::StrCat("555 5.5.4 Error: unsupported option ", key));
    }
  }
  if (!address.empty() && !ValidMailbox(address)) {
    return Error("501 5.1.7 Bad sender address syntax");
  }
  if (!IsAscii(address) && !m.smtputf8) {
    return Error("553 5.6.7 Error: non-ASCII address needs SMTPUTF8");
  }
  if (size > config_.max_message_bytes) {
    return Refuse(Refusal::Kind::kTooBig,
                  "552 5.3.4 Error: message size exceeds fixed limit",
                  absl::StrCat("the client declared SIZE=", size,
                               " over smtp.max_message_size (",
                               config_.max_message_bytes, " bytes)"));
  }
  if (config_.has_room && !config_.has_room(size)) {
    // Transient, and not the client's error: it may try again later.
    return Reply("452 4.3.1 Insufficient system storage");
  }
  if (!authenticated_.empty() && config_.check_sender) {
    std::string why = config_.check_sender(authenticated_, address);
    if (!why.empty()) {
      return Error(absl::StrCat("553 5.7.1 <", address,
                                ">: sender address not allowed: ", why));
    }
  }
  if (!authenticated_.empty() && config_.take_message) {
    std::string over = config_.take_message(authenticated_);
    if (!over.empty()) return Reply(over);
  }
  declared_size_ = size;
  m.sender = address;
  m.helo = helo_;
  m.auth_user = authenticated_;
  message_ = std::move(m);
  have_mail_ = true;
  Reply("250 2.1.0 Ok");
}

void ServerSession::Rcpt(absl::string_view arg) {
  if (!have_mail_) return Error("503 5.5.1 Error: need MAIL command");
  if (!absl::StartsWithIgnoreCase(arg, "TO:")) {
    return Error("501 5.5.4 Syntax: RCPT TO:<address>");
  }
  std::string address;
  absl::string_view params;
  if (!ParsePath(arg.substr(3), &address, &params)) {
    return Error("501 5.1.3 Bad recipient address syntax");
  }
  Recipient r;
  for (absl::string_view p : absl::StrSplit(params, ' ', absl::SkipEmpty())) {
    size_t eq = p.find('=');
    std::string key = absl::AsciiStrToUpper(p.substr(0, eq));
    absl::string_view value =
        eq == absl::string_view::npos ? "" : p.substr(eq + 1);
    if (key == "NOTIFY") {
      for (absl::string_view v : absl::StrSplit(value, ',')) {
        std::string n = absl::AsciiStrToUpper(v);
        if (n == "NEVER") {
          r.notify |= 1;
        } else if (n == "SUCCESS") {
          r.notify |= 2;
        } else if (n == "FAILURE") {
          r.notify |= 4;
        } else if (n == "DELAY") {
          r.notify |= 8;
        } else {
          return Error("501 5.5.4 Error: bad NOTIFY parameter");
        }
      }
      if ((r.notify & 1) && r.notify != 1) {
        return Error("501 5.5.4 Error: NOTIFY=NEVER cannot be combined");
      }
    } else if (key == "ORCPT") {
      size_t semi = value.find(';');
      if (semi == absl::string_view::npos || value.size() > 500 ||
          !ValidXtext(value.substr(semi + 1))) {
        return Error("501 5.5.4 Error: bad ORCPT parameter");
      }
      r.orcpt = std::string(value);
    } else {
      return Error(absl::StrCat("555 5.5.4 Error: unsupported option ", key));
    }
  }
  if (!ValidMailbox(address) &&
      !absl::EqualsIgnoreCase(address, "postmaster")) {
    return Error("501 5.1.3 Bad recipient address syntax");
  }
  if (!IsAscii(address) && !message_.smtputf8) {
    return Error("553 5.6.7 Error: non-ASCII address needs SMTPUTF8");
  }
  size_t at = address.rfind('@');
  bool ours = config_.accepts_for && at != std::string::npos &&
              config_.accepts_for(absl::string_view(address).substr(at + 1));
  if (!config_.relay_allowed && authenticated_.empty() && !ours) {
    return Refuse(
        Refusal::Kind::kRelayDenied,
        absl::StrCat("554 5.7.1 <", address, ">: Relay access denied"),
        "the client is not in relay.trusted_networks and did not "
        "authenticate: an application "
        "should submit on the submission port with AUTH, or its network be "
        "added to relay.trusted_networks",
        address);
  }
  if (message_.recipients.size() >= config_.max_recipients) {
    // Not counted as an error: the client sends the rest later.
    return Reply("452 4.5.3 Error: too many recipients");
  }
  if (config_.check_recipient) {
    // Not counted as an error: a list with dead addresses is no attack.
    std::string refusal = config_.check_recipient(message_.sender, address);
    if (!refusal.empty()) return Reply(refusal);
  }
  r.address = address;
  message_.recipients.push_back(std::move(r));
  Reply("250 2.1.5 Ok");
}

void ServerSession::Data() {
  if (!have_mail_) return Error("503 5.5.1 Error: need MAIL command");
  if (message_.recipients.empty()) {
    return Error("554 5.5.1 Error: no valid recipients");
  }
  if (bdat_started_) return Error("503 5.5.1 Error: DATA after BDAT");
  Reply("354 End data with <CR><LF>.<CR><LF>");
  phase_ = Phase::kData;
  line_start_ = true;
  previous_crlf_ = true;
}

namespace {

// The first CR or LF at or after `from` (npos: none). Two vectorized
// memchr calls; std::string::find_first_of tests every byte against the
// set one by one.
size_t LineEnd(const std::string& s, size_t from) {
  const char* begin = s.data() + from;
  size_t len = s.size() - from;
  const void* lf = memchr(begin, '\n', len);
  size_t span = lf ? static_cast<const char*>(lf) - begin : len;
  const void* cr = memchr(begin, '\r', span);
  if (cr != nullptr) return from + (static_cast<const char*>(cr) - begin);
  return lf ? from + span : std::string::npos;
}

}  // namespace

bool ServerSession::DataBytes() {
  size_t p = 0;
  bool ended = false;
  const size_t n = in_.size();
  while (p < n) {
    if (line_start_ && in_[p] == '.') {
      // A lone "." needs its line end to be known first.
      if (p + 1 >= n) break;
      if (in_[p + 1] == '\r' && p + 2 >= n) break;
      bool crlf_after = in_[p + 1] == '\r' && in_[p + 2] == '\n';
      if (crlf_after && previous_crlf_) {
        p += 3;
        ended = true;
        break;
      }
      ++p;  // Dot-unstuffing: drop the leading dot of a line.
    }
    size_t end = LineEnd(in_, p);
    if (end == std::string::npos) {
      Append(absl::string_view(in_).substr(p));
      line_start_ = false;
      p = n;
      break;
    }
    if (in_[end] == '\r' && end + 1 >= n) {
      // A CR at the end of the input: its LF may be in the next packet.
      Append(absl::string_view(in_).substr(p, end - p));
      line_start_ = false;
      p = end;
      break;
    }
    bool crlf = in_[end] == '\r' && in_[end + 1] == '\n';
    if (crlf) {
      Append(absl::string_view(in_).substr(p, end + 2 - p));  // With CRLF.
    } else {
      // A bare LF or bare CR ends a line too: normalized to CRLF, and never
      // the start of an end-of-data marker.
      Append(absl::string_view(in_).substr(p, end - p));
      Append("\r\n");
    }
    previous_crlf_ = crlf;
    line_start_ = true;
    p = end + (crlf ? 2 : 1);
  }
  in_.erase(0, p);
  if (!ended) return false;
  FinishMessage();
  return true;
}

void ServerSession::Append(absl::string_view bytes) {
  if (too_big_) return;
  if (message_.data.size() + bytes.size() > config_.max_message_bytes) {
    too_big_ = true;
    message_.data.clear();
    message_.data.shrink_to_fit();
    return;
  }
  message_.data.append(bytes.data(), bytes.size());
}

void ServerSession::AppendBdat(absl::string_view bytes) {
  size_t p = 0;
  if (bdat_cr_ && !bytes.empty()) {
    bdat_cr_ = false;
    Append("\r\n");
    if (bytes[0] == '\n') p = 1;  // The CR's own LF, in the next piece.
  }
  const size_t n = bytes.size();
  while (p < n) {
    const char* begin = bytes.data() + p;
    const void* lf = memchr(begin, '\n', n - p);
    size_t span = lf ? static_cast<const char*>(lf) - begin : n - p;
    const void* cr = memchr(begin, '\r', span);
    if (cr != nullptr) span = static_cast<const char*>(cr) - begin;
    if (cr == nullptr && lf == nullptr) {
      Append(bytes.substr(p));
      return;
    }
    size_t eol = p + span;
    Append(bytes.substr(p, span));
    if (bytes[eol] == '\r' && eol + 1 == n) {
      bdat_cr_ = true;  // Its LF, if any, comes with the next bytes.
      return;
    }
    Append("\r\n");
    p = eol + (bytes[eol] == '\r' && bytes[eol + 1] == '\n' ? 2 : 1);
  }
}

void ServerSession::Bdat(absl::string_view arg) {
  std::vector<absl::string_view> parts =
      absl::StrSplit(arg, ' ', absl::SkipEmpty());
  size_t size = 0;
  if (parts.empty() || parts.size() > 2 || !absl::SimpleAtoi(parts[0], &size) ||
      (parts.size() == 2 && !absl::EqualsIgnoreCase(parts[1], "LAST"))) {
    // The chunk's length is unknown, so the connection cannot go on.
    Reply("501 5.5.4 Syntax: BDAT size [LAST]");
    phase_ = Phase::kClosed;
    return;
  }
  chunk_left_ = size;
  chunk_last_ = parts.size() == 2;
  if (!have_mail_) {
    bdat_failed_ = true;
    bdat_error_ = "503 5.5.1 Error: need MAIL command";
  } else if (message_.recipients.empty()) {
    bdat_failed_ = true;
    bdat_error_ = "554 5.5.1 Error: no valid recipients";
  }
  bdat_started_ = true;
  phase_ = Phase::kBdat;
}

bool ServerSession::BdatBytes() {
  size_t take = std::min(chunk_left_, in_.size());
  if (!bdat_failed_) AppendBdat(absl::string_view(in_).substr(0, take));
  in_.erase(0, take);
  chunk_left_ -= take;
  if (chunk_left_ > 0) return false;
  phase_ = Phase::kCommand;
  if (bdat_failed_) {
    std::string error = bdat_error_;
    ResetTransaction();
    Error(error);
    return true;
  }
  if (too_big_) {
    if (chunk_last_) {
      ResetTransaction();
      Refuse(
          Refusal::Kind::kTooBig, "552 5.3.4 Error: message file too big",
          absl::StrCat("the client sent a message over smtp.max_message_size (",
                       config_.max_message_bytes, " bytes)"));
    } else {
      Reply("552 5.3.4 Error: message file too big");
      bdat_failed_ = true;
      bdat_error_ = "552 5.3.4 Error: message file too big";
    }
    return true;
  }
  if (chunk_last_) {
    if (bdat_cr_) Append("\r\n");  // A final bare CR.
    bdat_cr_ = false;
    FinishMessage();
    return true;
  }
  Reply(
      absl::StrCat("250 2.0.0 Ok: ", message_.data.size(), " octets received"));
  return true;
}

void ServerSession::FinishMessage() {
  if (too_big_) {
    phase_ = Phase::kCommand;
    ResetTransaction();
    Refuse(
        Refusal::Kind::kTooBig, "552 5.3.4 Error: message file too big",
        absl::StrCat("the client sent a message over smtp.max_message_size (",
                     config_.max_message_bytes, " bytes)"));
    return;
  }
  ready_ = std::move(message_);
  phase_ = Phase::kWaitQueue;
}

void ServerSession::Auth(absl::string_view arg) {
  if (!config_.auth_available) {
    return Error("503 5.5.1 Error: authentication not enabled");
  }
  if (helo_.empty()) return Error("503 5.5.1 Error: send HELO/EHLO first");
  if (!config_.tls_active && !config_.auth_without_tls) {
    return Refuse(Refusal::Kind::kAuthNeedsTls,
                  "538 5.7.11 Encryption required for requested "
                  "authentication mechanism",
                  "the client tried AUTH without TLS: set it to use STARTTLS "
                  "(port 587) or TLS on connect (port 465)");
  }
  if (!authenticated_.empty()) {
    return Error("503 5.5.1 Error: already authenticated");
  }
  if (have_mail_) return Error("503 5.5.1 Error: MAIL transaction in progress");
  std::vector<absl::string_view> parts =
      absl::StrSplit(arg, ' ', absl::SkipEmpty());
  if (parts.empty() || parts.size() > 2) {
    return Error("501 5.5.4 Syntax: AUTH mechanism [initial-response]");
  }
  std::string mechanism = absl::AsciiStrToUpper(parts[0]);
  if (mechanism == "PLAIN") {
    auth_stage_ = AuthStage::kPlain;
    if (parts.size() == 2) return AuthResponse(parts[1]);
    return Reply("334 ");
  }
  if (mechanism == "LOGIN") {
    auth_stage_ = AuthStage::kLoginUser;
    if (parts.size() == 2) return AuthResponse(parts[1]);
    return Reply("334 VXNlcm5hbWU6");  // "Username:"
  }
  Error("504 5.5.4 Error: unsupported authentication mechanism");
}

void ServerSession::AuthResponse(absl::string_view line) {
  AuthStage stage = auth_stage_;
  auth_stage_ = AuthStage::kNone;
  if (line == "*") return Error("501 5.7.0 Error: authentication aborted");
  std::string decoded;
  if (line != "=" && !absl::Base64Unescape(line, &decoded)) {
    return Error("501 5.5.2 Error: cannot decode response");
  }
  switch (stage) {
    case AuthStage::kPlain: {
      // authzid NUL authcid NUL password (RFC 4616).
      std::vector<std::string> f = absl::StrSplit(decoded, '\0');
      if (f.size() != 3 || f[1].empty()) {
        return Error("501 5.5.2 Error: bad PLAIN response");
      }
      if (!f[0].empty() && f[0] != f[1]) {
        return Error("535 5.7.8 Error: authentication failed");
      }
      return Credentials(f[1], f[2]);
    }
    case AuthStage::kLoginUser:
      login_user_ = decoded;
      auth_stage_ = AuthStage::kLoginPassword;
      return Reply("334 UGFzc3dvcmQ6");  // "Password:"
    case AuthStage::kLoginPassword:
      return Credentials(std::move(login_user_), decoded);
    case AuthStage::kNone:
      return;
  }
}

void ServerSession::Credentials(std::string user, std::string password) {
  pending_user_ = user;
  login_user_.clear();
  auth_request_ = AuthRequest{std::move(user), std::move(password)};
  phase_ = Phase::kWaitAuth;
}

std::optional<AuthRequest> ServerSession::TakeAuthRequest() {
  std::optional<AuthRequest> out;
  out.swap(auth_request_);
  return out;
}

void ServerSession::AuthResult(AuthVerdict verdict, absl::string_view why) {
  if (phase_ != Phase::kWaitAuth) return;
  phase_ = Phase::kCommand;
  if (verdict == AuthVerdict::kAccepted) {
    authenticated_ = pending_user_;
    Reply("235 2.7.0 Authentication successful");
  } else {
    if (verdict == AuthVerdict::kTryLater) {
      Error(absl::StrCat("454 4.7.0 Temporary authentication failure",
                         why.empty() ? "" : ": ", why));
    } else {
      Error("535 5.7.8 Error: authentication failed");
    }
    if (phase_ != Phase::kClosed && ++auth_failures_ >= 3) {
      Reply(absl::StrCat("421 4.7.0 ", config_.hostname,
                         " Error: too many failed authentications"));
      phase_ = Phase::kClosed;
    }
  }
  login_user_.clear();
  pending_user_.clear();
  Process();
}

void ServerSession::TlsStarted() {
  if (phase_ != Phase::kWaitTls) return;
  config_.tls_active = true;
  helo_.clear();
  ehlo_ = false;
  ResetTransaction();
  in_.clear();
  phase_ = Phase::kCommand;
}

void ServerSession::MessageRefused(absl::string_view reply) {
  if (phase_ != Phase::kWaitQueue) return;
  Reply(std::string(reply));
  ResetTransaction();
  phase_ = Phase::kCommand;
  if (shutting_down_) return ShutdownNow();
  Process();
}

void ServerSession::MessageQueued(const absl::Status& status,
                                  absl::string_view queue_id) {
  if (phase_ != Phase::kWaitQueue) return;
  if (status.ok()) {
    Reply(absl::StrCat("250 2.0.0 Ok: queued as ", queue_id));
  } else if (absl::IsResourceExhausted(status)) {
    Reply("452 4.3.1 Error: insufficient system storage");
  } else {
    Reply("451 4.3.0 Error: queue file write error");
  }
  ResetTransaction();
  phase_ = Phase::kCommand;
  if (shutting_down_) return ShutdownNow();
  Process();  // What the client pipelined after the message.
}

}  // namespace peregrine::smtp
