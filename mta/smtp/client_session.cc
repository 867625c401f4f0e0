#include "mta/smtp/client_session.h"

#include <cstring>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"

namespace peregrine::smtp {
namespace {

// A reply longer than this is not a reply: end the connection.
constexpr size_t kMaxReplyBytes = 64 * 1024;

// "2.1.5 " at the start of a reply's text (RFC 3463).
bool SplitEnhanced(absl::string_view text, std::string* enhanced,
                   absl::string_view* rest) {
  size_t space = text.find(' ');
  absl::string_view code = text.substr(0, space);
  std::vector<absl::string_view> parts = absl::StrSplit(code, '.');
  if (parts.size() != 3 || parts[0].size() != 1 ||
      (parts[0] != "2" && parts[0] != "4" && parts[0] != "5")) {
    return false;
  }
  for (absl::string_view p : parts) {
    if (p.empty() || p.size() > 3) return false;
    for (char c : p) {
      if (!absl::ascii_isdigit(c)) return false;
    }
  }
  *enhanced = std::string(code);
  *rest = space == absl::string_view::npos ? "" : text.substr(space + 1);
  return true;
}

Reply Made(int code, absl::string_view enhanced, absl::string_view text) {
  Reply r;
  r.code = code;
  r.enhanced = std::string(enhanced);
  r.text = std::string(text);
  return r;
}

}  // namespace

ClientSession::ClientSession(ClientConfig config)
    : config_(std::move(config)) {}

std::string ClientSession::TakeOutput() {
  std::string out;
  out.swap(out_);
  return out;
}

std::optional<MessageResult> ClientSession::TakeResult() {
  std::optional<MessageResult> out;
  out.swap(result_);
  return out;
}

void ClientSession::Send(absl::string_view line) {
  absl::StrAppend(&out_, line, "\r\n");
}

void ClientSession::Feed(absl::string_view bytes) {
  if (phase_ == Phase::kClosed) return;
  in_.append(bytes.data(), bytes.size());
  Reply reply;
  // After "220" to STARTTLS the rest is the server's TLS, not SMTP: a
  // reply "pipelined" behind it would be injected in the clear.
  while (phase_ != Phase::kClosed && phase_ != Phase::kTlsHandshake &&
         NextReply(&reply)) {
    OnReply(reply);
  }
  if (phase_ == Phase::kTlsHandshake) return;
  if (phase_ != Phase::kClosed && in_.size() > kMaxReplyBytes) {
    Fail(Made(0, "4.5.0", "server reply too long"));
  }
}

bool ClientSession::NextReply(Reply* reply) {
  // A reply is complete once a line "ddd " (or "ddd" alone) ends it.
  size_t pos = 0;
  std::vector<absl::string_view> texts;
  int code = 0;
  while (true) {
    size_t eol = in_.find('\n', pos);
    if (eol == std::string::npos) return false;
    absl::string_view line(in_.data() + pos, eol - pos);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    int line_code = 0;
    if (line.size() < 3 || !absl::SimpleAtoi(line.substr(0, 3), &line_code) ||
        line_code < 200 || line_code > 599 ||
        (line.size() > 3 && line[3] != ' ' && line[3] != '-') ||
        (code != 0 && line_code != code)) {
      Fail(Made(0, "4.5.0",
                absl::StrCat("malformed reply from server: ",
                             absl::CHexEscape(line.substr(0, 80)))));
      return false;
    }
    code = line_code;
    texts.push_back(line.size() > 4 ? line.substr(4) : absl::string_view());
    pos = eol + 1;
    if (line.size() == 3 || line[3] == ' ') break;
  }
  reply->code = code;
  reply->enhanced.clear();
  ehlo_lines_.clear();
  for (absl::string_view t : texts) ehlo_lines_.emplace_back(t);
  std::vector<std::string> parts;
  for (absl::string_view t : texts) {
    std::string enhanced;
    absl::string_view rest;
    if (SplitEnhanced(t, &enhanced, &rest)) {
      if (reply->enhanced.empty()) reply->enhanced = enhanced;
      t = rest;
    }
    parts.push_back(std::string(t));
  }
  reply->text = absl::StrJoin(parts, " ");
  in_.erase(0, pos);
  return true;
}

void ClientSession::Fail(Reply reply) {
  failure_ = std::move(reply);
  if (phase_ == Phase::kEnvelope || phase_ == Phase::kData) {
    // Whatever has no final answer takes the failure; a 2xx RCPT whose
    // data never got its final reply is not delivered.
    MessageResult r;
    for (size_t i = 0; i < message_.recipients.size(); ++i) {
      bool final = i < results_.size() && results_[i].code >= 400;
      r.recipients.push_back(final ? results_[i] : failure_);
    }
    result_ = std::move(r);
  }
  phase_ = Phase::kClosed;
}

void ClientSession::OnReply(const Reply& reply) {
  if (reply.code == 421 && phase_ != Phase::kQuit) return Fail(reply);
  switch (phase_) {
    case Phase::kGreeting:
      if (reply.code != 220) return Fail(reply);
      phase_ = Phase::kHello;
      return Send(absl::StrCat("EHLO ", config_.helo));
    case Phase::kHello:
      return Hello(reply);
    case Phase::kStartTls:
      if (reply.code == 220) {
        phase_ = Phase::kTlsHandshake;
        return;
      }
      if (config_.tls == TlsPolicy::kRequired) {
        return Fail(Made(0, "4.7.0",
                         absl::StrCat("TLS is required but STARTTLS failed: ",
                                      reply.ToString())));
      }
      starttls_ = false;  // Opportunistic: go on in the clear.
      return AfterHello();
    case Phase::kAuth:
      // 235 (RFC 4954); some servers (smtp-sink) say 250: also success.
      if (reply.code / 100 == 2) {
        phase_ = Phase::kReady;
        return;
      }
      // Never bounce mail for our own login problem: defer it.
      return Fail(
          Made(451, "4.7.0",
               absl::StrCat("the relay refused our AUTH (", reply.ToString(),
                            "); check the user and password (an app "
                            "password for Gmail/Office 365)")));
    case Phase::kEnvelope: {
      // Replies come in command order: MAIL, each RCPT, DATA.
      size_t answered = message_.recipients.size() + 2 - replies_expected_;
      --replies_expected_;
      if (answered == 0) {  // MAIL.
        mail_ok_ = reply.code / 100 == 2;
        if (!mail_ok_) {
          results_.assign(message_.recipients.size(), reply);
          if (!pipelining_) return FinishMessage();
        } else if (!pipelining_) {
          SendEnvelopeCommand(0);
        }
        return;
      }
      if (answered <= message_.recipients.size()) {  // RCPT.
        if (mail_ok_) {
          results_[answered - 1] = reply;
          if (reply.code / 100 == 2) ++accepted_;
        }
        if (!pipelining_) SendEnvelopeCommand(answered);
        return;
      }
      if (bdat_) {
        // BDAT LAST: the final answer for the recipients it accepted.
        // Without MAIL or any RCPT accepted the server refused it too, and
        // the earlier replies stand.
        if (mail_ok_ && accepted_ > 0) {
          for (Reply& r : results_) {
            if (r.code / 100 == 2) r = reply;
          }
        }
        // Clean only when the message went; else RSET (RFC 3030 §2).
        if (reply.code / 100 == 2) phase_ = Phase::kData;
        return FinishMessage();
      }
      // DATA.
      if (reply.code == 354 && mail_ok_ && accepted_ > 0) return SendBody();
      if (reply.code == 354) {
        // Nothing to deliver, yet the server wants data: end it empty.
        Send(".");
        phase_ = Phase::kData;
        accepted_ = 0;
        return;
      }
      if (mail_ok_) {
        for (Reply& r : results_) {
          if (r.code / 100 == 2) r = reply;  // DATA refused: theirs too.
        }
      }
      return FinishMessage();
    }
    case Phase::kData:
      for (Reply& r : results_) {
        if (r.code / 100 == 2) r = reply;  // The final answer for them.
      }
      return FinishMessage();
    case Phase::kReset:
      phase_ = Phase::kReady;
      return;
    case Phase::kQuit:
      phase_ = Phase::kClosed;
      failure_ = reply;
      return;
    case Phase::kReady:
    case Phase::kTlsHandshake:
    case Phase::kClosed:
      // Nothing was asked: an unsolicited reply ends the connection.
      return Fail(reply);
  }
}

void ClientSession::Hello(const Reply& reply) {
  if (reply.code / 100 != 2) {
    if (esmtp_ && reply.code / 100 == 5) {
      esmtp_ = false;  // An old server: HELO (RFC 5321 §3.2).
      return Send(absl::StrCat("HELO ", config_.helo));
    }
    return Fail(reply);
  }
  pipelining_ = chunking_ = starttls_ = eight_bit_mime_ = smtputf8_ = dsn_ =
      false;
  auth_plain_ = enhanced_ = false;
  max_size_ = 0;
  if (esmtp_) {
    for (size_t i = 1; i < ehlo_lines_.size(); ++i) {
      std::vector<std::string> words = absl::StrSplit(
          absl::AsciiStrToUpper(ehlo_lines_[i]), ' ', absl::SkipEmpty());
      if (words.empty()) continue;
      const std::string& k = words[0];
      if (k == "PIPELINING") pipelining_ = true;
      if (k == "CHUNKING") chunking_ = true;
      if (k == "STARTTLS") starttls_ = true;
      if (k == "8BITMIME") eight_bit_mime_ = true;
      if (k == "SMTPUTF8") smtputf8_ = true;
      if (k == "DSN") dsn_ = true;
      if (k == "ENHANCEDSTATUSCODES") enhanced_ = true;
      if (k == "SIZE" && words.size() > 1) {
        (void)absl::SimpleAtoi(words[1], &max_size_);
      }
      if (k == "AUTH") {
        for (size_t w = 1; w < words.size(); ++w) {
          if (words[w] == "PLAIN") auth_plain_ = true;
        }
      }
    }
  }
  AfterHello();
}

void ClientSession::AfterHello() {
  if (!tls_active_ && config_.tls != TlsPolicy::kNone &&
      config_.tls_available && starttls_) {
    phase_ = Phase::kStartTls;
    return Send("STARTTLS");
  }
  if (!tls_active_ && config_.tls == TlsPolicy::kRequired) {
    return Fail(Made(0, "4.7.0",
                     "TLS is required for this destination but the server "
                     "does not offer STARTTLS"));
  }
  if (!config_.auth_user.empty()) {
    if (!auth_plain_) {
      return Fail(Made(451, "4.7.0",
                       "the relay does not offer AUTH PLAIN here (does it "
                       "want TLS first, or another port?)"));
    }
    phase_ = Phase::kAuth;
    std::string token =
        absl::StrCat(std::string(1, '\0'), config_.auth_user,
                     std::string(1, '\0'), config_.auth_password);
    return Send(absl::StrCat("AUTH PLAIN ", absl::Base64Escape(token)));
  }
  phase_ = Phase::kReady;
}

std::string ClientSession::TakeTlsBytes() {
  std::string out;
  if (phase_ == Phase::kTlsHandshake) out.swap(in_);
  return out;
}

void ClientSession::TlsStarted() {
  if (phase_ != Phase::kTlsHandshake) return;
  in_.clear();  // Nothing from before TLS counts after it.
  tls_active_ = true;
  esmtp_ = true;
  phase_ = Phase::kHello;
  Send(absl::StrCat("EHLO ", config_.helo));  // RFC 3207 §4.2: start over.
}

void ClientSession::SendMessage(const OutMessage& message) {
  if (phase_ != Phase::kReady) return;
  message_ = message;
  const size_t n = message_.recipients.size();
  results_.assign(n, Reply());
  accepted_ = 0;
  auto refuse_all = [&](Reply r) {
    result_ = MessageResult{std::vector<Reply>(n, r)};
  };
  size_t size = message_.body ? message_.body->size() : 0;
  if (max_size_ > 0 && size > max_size_) {
    return refuse_all(
        Made(552, "5.3.4",
             absl::StrCat("message of ", size,
                          " bytes exceeds the server's limit of ", max_size_)));
  }
  if (message_.smtputf8 && !smtputf8_) {
    return refuse_all(Made(553, "5.6.7",
                           "the server cannot take UTF-8 addresses (no "
                           "SMTPUTF8)"));
  }
  if (message_.eight_bit && !eight_bit_mime_ && esmtp_) {
    return refuse_all(Made(554, "5.6.3",
                           "the server cannot take 8-bit content (no "
                           "8BITMIME)"));
  }
  std::string mail = absl::StrCat("MAIL FROM:<", message_.sender, ">");
  if (esmtp_) {
    if (max_size_ > 0) absl::StrAppend(&mail, " SIZE=", size);
    if (message_.eight_bit) absl::StrAppend(&mail, " BODY=8BITMIME");
    if (message_.smtputf8) absl::StrAppend(&mail, " SMTPUTF8");
    if (dsn_ && message_.ret != 0) {
      absl::StrAppend(&mail, message_.ret == 1 ? " RET=FULL" : " RET=HDRS");
    }
    if (dsn_ && !message_.envid.empty()) {
      absl::StrAppend(&mail, " ENVID=", message_.envid);
    }
  }
  replies_expected_ = n + 2;
  phase_ = Phase::kEnvelope;
  bdat_ = pipelining_ && chunking_;
  Send(mail);
  if (pipelining_) {
    for (size_t i = 0; i < n; ++i) SendEnvelopeCommand(i);
    if (!bdat_) return Send("DATA");
    // The message goes with its envelope: if MAIL or every RCPT is
    // refused, the server discards it and refuses the BDAT.
    std::string converted;
    absl::string_view chunk = ChunkContent(
        message_.body ? *message_.body : absl::string_view(), &converted);
    Send(absl::StrCat("BDAT ", chunk.size(), " LAST"));
    out_.append(chunk.data(), chunk.size());
  }
}

void ClientSession::SendEnvelopeCommand(size_t index) {
  if (index >= message_.recipients.size()) {
    if (!pipelining_ && accepted_ == 0) return FinishMessage();
    return Send("DATA");
  }
  const OutRecipient& r = message_.recipients[index];
  std::string rcpt = absl::StrCat("RCPT TO:<", r.address, ">");
  if (dsn_ && r.notify != 0) {
    std::vector<std::string> n;
    if (r.notify & 1) n.push_back("NEVER");
    if (r.notify & 2) n.push_back("SUCCESS");
    if (r.notify & 4) n.push_back("FAILURE");
    if (r.notify & 8) n.push_back("DELAY");
    absl::StrAppend(&rcpt, " NOTIFY=", absl::StrJoin(n, ","));
  }
  if (dsn_ && !r.orcpt.empty()) absl::StrAppend(&rcpt, " ORCPT=", r.orcpt);
  Send(rcpt);
}

namespace {

// Every line of `body` with CRLF, a bare CR or LF made one, a last line
// without its end given one; with `dots`, a line starting with "." gets a
// second one.
void AppendLines(absl::string_view body, bool dots, std::string* out) {
  out->reserve(out->size() + body.size() + body.size() / 64 + 8);
  const char* p = body.data();
  const char* const end = p + body.size();
  while (p < end) {
    // At the start of a line.
    if (dots && *p == '.') out->push_back('.');
    // The line's end: the first CR or LF (two vectorized scans).
    const char* lf = static_cast<const char*>(memchr(p, '\n', end - p));
    const char* stop = lf ? lf : end;
    const char* cr = static_cast<const char*>(memchr(p, '\r', stop - p));
    const char* eol = cr ? cr : lf;
    if (eol == nullptr) {
      out->append(p, end - p);
      out->append("\r\n");
      break;
    }
    out->append(p, eol - p);
    out->append("\r\n");
    p = eol + (*eol == '\r' && eol + 1 < end && eol[1] == '\n' ? 2 : 1);
  }
}

// Every line ends in CRLF, the last one too, and no CR stands alone.
bool CrlfOnly(absl::string_view body) {
  if (body.empty()) return true;
  if (body.size() < 2 || body.substr(body.size() - 2) != "\r\n") return false;
  size_t lfs = 0;
  const char* p = body.data();
  const char* const end = p + body.size();
  while (const char* lf = static_cast<const char*>(memchr(p, '\n', end - p))) {
    if (lf == body.data() || lf[-1] != '\r') return false;
    ++lfs;
    p = lf + 1;
  }
  size_t crs = 0;
  p = body.data();
  while (const char* cr = static_cast<const char*>(memchr(p, '\r', end - p))) {
    ++crs;
    p = cr + 1;
  }
  return crs == lfs;
}

}  // namespace

void EncodeDataContent(absl::string_view body, std::string* out) {
  AppendLines(body, /*dots=*/true, out);
  out->append(".\r\n");
}

absl::string_view ChunkContent(absl::string_view body, std::string* out) {
  if (CrlfOnly(body)) return body;
  AppendLines(body, /*dots=*/false, out);
  return *out;
}

void ClientSession::SendBody() {
  EncodeDataContent(message_.body ? *message_.body : absl::string_view(),
                    &out_);
  phase_ = Phase::kData;
}

void ClientSession::FinishMessage() {
  result_ = MessageResult{results_};
  // A transaction that did not end with DATA's final reply is reset.
  bool clean = phase_ == Phase::kData;
  if (clean) {
    phase_ = Phase::kReady;
  } else {
    phase_ = Phase::kReset;
    Send("RSET");
  }
}

void ClientSession::Quit() {
  if (phase_ == Phase::kClosed) return;
  phase_ = Phase::kQuit;
  Send("QUIT");
}

}  // namespace peregrine::smtp
