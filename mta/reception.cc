#include "mta/reception.h"

#include <cerrno>

#include "absl/container/flat_hash_set.h"
#include "absl/hash/hash.h"
#include "absl/random/random.h"
#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "base/log.h"
#include "mta/delivery/routing.h"
#include "mta/shard/socket.h"
#include "mta/submission.h"

namespace peregrine {
namespace {

// `message`'s header block, its last CRLF kept: all of it when no empty
// line ends the header.
absl::string_view HeaderBlock(absl::string_view message) {
  size_t end = message.find("\r\n\r\n");
  return end == absl::string_view::npos ? message : message.substr(0, end + 2);
}

// The first address of the From header field of `message` (its header
// block only, folded lines joined), lower case; "" when there is none.
std::string FromHeaderAddress(absl::string_view message) {
  absl::string_view head = HeaderBlock(message);
  std::string value;
  bool in_from = false;
  for (absl::string_view line : absl::StrSplit(head, "\r\n")) {
    if (in_from && !line.empty() && (line[0] == ' ' || line[0] == '\t')) {
      absl::StrAppend(&value, " ", line);
      continue;
    }
    if (in_from) break;
    if (absl::StartsWithIgnoreCase(line, "From:")) {
      in_from = true;
      value = std::string(line.substr(5));
    }
  }
  if (value.empty()) return "";
  size_t open = value.find('<');
  if (open != std::string::npos) {
    size_t close = value.find('>', open);
    if (close == std::string::npos) return "";
    return absl::AsciiStrToLower(value.substr(open + 1, close - open - 1));
  }
  for (absl::string_view token :
       absl::StrSplit(value, absl::ByAnyChar(" \t,"), absl::SkipEmpty())) {
    if (absl::StrContains(token, '@')) return absl::AsciiStrToLower(token);
  }
  return "";
}
constexpr const char* kLog = "smtpd";

// Past this many Received fields a message is going round in circles (an
// alias that forwards to a mailbox that forwards back): Postfix's
// hopcount_limit.
constexpr int kMaxHops = 50;

// The Received fields in `message`'s header block.
int ReceivedCount(absl::string_view message) {
  int count = 0;
  for (absl::string_view line : absl::StrSplit(HeaderBlock(message), "\r\n")) {
    if (absl::StartsWithIgnoreCase(line, "Received:")) ++count;
  }
  return count;
}

std::string Domain(absl::string_view address) {
  size_t at = address.rfind('@');
  return absl::AsciiStrToLower(at == absl::string_view::npos
                                   ? absl::string_view()
                                   : address.substr(at + 1));
}
// Text from outside (a PTR name, a user name) made safe for a header
// field: controls, which could end the field and start another, become '?'.
// The EHLO name needs none of this: the session refuses a bad one.
std::string HeaderSafe(absl::string_view text) {
  std::string out(text);
  for (char& c : out) {
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) c = '?';
  }
  return out;
}
}  // namespace

bool ConnectionLimiter::Acquire(const std::string& client, bool exempt) {
  absl::MutexLock lock(&mu_);
  if (total_ >= max_total_) return false;
  if (!exempt) {
    int& n = per_client_[client];
    if (n >= max_per_client_) return false;
    ++n;
  }
  ++total_;
  return true;
}

void ConnectionLimiter::Release(const std::string& client) {
  absl::MutexLock lock(&mu_);
  --total_;
  auto it = per_client_.find(client);
  if (it != per_client_.end() && --it->second <= 0) per_client_.erase(it);
}

// The connections of this shard's thread, for a drain.
thread_local absl::flat_hash_set<SmtpConnection*> live_connections;

int ShardForDomain(absl::string_view domain, int shards) {
  // Until delivery resolves MX records, a domain is its own site.
  return delivery::ShardForSite(absl::AsciiStrToLower(domain), shards);
}

void SmtpConnection::Start(shard::Reactor& reactor, int fd,
                           const ReceptionContext& context,
                           std::atomic<int>& open, ListenerKind mode) {
  auto peer = shard::PeerAddress(fd);
  (new SmtpConnection(reactor, fd, peer.ok() ? *peer : shard::SocketAddress(),
                      context, open, mode))
      ->Begin();
}

SmtpConnection::SmtpConnection(shard::Reactor& reactor, int fd,
                               const shard::SocketAddress& peer,
                               const ReceptionContext& context,
                               std::atomic<int>& open, ListenerKind mode)
    : reactor_(reactor),
      stream_(reactor, fd, *this),
      peer_(peer),
      context_(context),
      open_(open),
      mode_(mode),
      trusted_([&] {
        for (const shard::Cidr& net : context.trusted_networks) {
          if (net.Contains(peer)) return true;
        }
        return false;
      }()),
      tls_context_(context.tls ? context.tls() : nullptr),
      session_([&] {
        smtp::SessionConfig c;
        c.hostname = context.hostname;
        c.client_address = peer.HostString();
        c.max_message_bytes = context.max_message_bytes;
        c.max_recipients = context.max_recipients;
        c.tls_available = tls_context_ != nullptr;
        c.tls_active = mode == ListenerKind::kSubmissions;
        // Submission is for authenticated clients only, wherever they are.
        c.auth_required = mode != ListenerKind::kRelay;
        // Submission always offers AUTH (it is the only way in there);
        // the relay port only once there are users.
        c.auth_available = mode != ListenerKind::kRelay ||
                           (context.has_users && context.has_users());
        c.auth_without_tls = context.auth_without_tls;
        if (queue::Store* q = context.queue) {
          c.has_room = [q](uint64_t bytes) { return q->HasRoomFor(bytes); };
        }
        c.relay_allowed = mode == ListenerKind::kRelay && trusted_;
        c.check_recipient = context.check_recipient;
        c.check_sender = context.check_sender;
        c.take_message = context.take_message;
        c.accepts_for = context.bounce_domain;
        if (local::LocalMail* local = context.local) {
          c.accepts_for = [local, bounce = context.bounce_domain](
                              absl::string_view domain) {
            return local->Accepts(domain) || (bounce && bounce(domain));
          };
          c.check_recipient = [local, next = context.check_recipient](
                                  absl::string_view sender,
                                  absl::string_view recipient) {
            std::string refusal = local->CheckRecipient(recipient);
            if (!refusal.empty() || !next) return refusal;
            return next(sender, recipient);
          };
        }
        return c;
      }()) {
  open_.fetch_add(1, std::memory_order_relaxed);
  live_connections.insert(this);
}

void SmtpConnection::ShutdownAll() {
  std::vector<SmtpConnection*> all(live_connections.begin(),
                                   live_connections.end());
  for (SmtpConnection* c : all) c->Shutdown();
}

void SmtpConnection::CloseAll() {
  std::vector<SmtpConnection*> all(live_connections.begin(),
                                   live_connections.end());
  for (SmtpConnection* c : all) c->Finish();
}

void SmtpConnection::Shutdown() {
  if (finishing_ || !live_connections.contains(this)) return;
  if (stream_.tls() != nullptr && !stream_.tls_up()) {
    return Finish();  // In a TLS handshake: nothing can be said in SMTP.
  }
  session_.Shutdown();
  Pump();
}

void SmtpConnection::Begin() {
  ArmTimer();
  if (context_.limiter != nullptr) {
    if (!context_.limiter->Acquire(peer_.HostString(), trusted_)) {
      Rejected(Reply{421, "4.7.0", "too many connections, try again later"},
               "smtp.max_connections or smtp.max_connections_per_client "
               "reached");
      // Said in the clear even on port 465: the client gets a reason.
      (void)stream_.Send(
          absl::StrCat("421 4.7.0 ", context_.hostname,
                       " Error: too many connections, try again later\r\n"));
      finishing_after_send_ = true;
      SendPending();
      return;
    }
    counted_ = true;
  }
  // Look up the client's name now, while it says EHLO; a message that ends
  // before the answer gets "unknown" in its Received field.
  dns::Resolver* resolver =
      context_.resolver ? context_.resolver(reactor_.id()) : nullptr;
  auto ip = dns::IpAddress::Parse(peer_.HostString());
  std::string host = peer_.HostString();
  if (host == "127.0.0.1" || host == "::1" || host == "::ffff:127.0.0.1") {
    client_name_ = "localhost";  // Local: no DNS query for that.
  } else if (resolver != nullptr && ip.ok()) {
    resolver->ForwardConfirmed(
        *ip, [this, alive = alive_](absl::StatusOr<std::string> name) {
          if (!*alive) return;
          if (!name.ok()) {
            log::Debug(kLog, "no verified name for %s: %s", peer_.HostString(),
                       name.status().message());
          }
          client_name_ = name.ok() ? *name : "unknown";
        });
  }
  if (mode_ == ListenerKind::kSubmissions) {
    if (tls_context_ == nullptr) return Finish();  // Nothing to offer.
    // TLS first; the banner goes out once the handshake is done.
    stream_.StartTlsServer(tls_context_);
    ArmTimer(kFirstByteTimeout);
  } else {
    session_.Start();
  }
  Pump();
  ReadMore();
}

void SmtpConnection::OnData(absl::string_view plaintext) {
  // Read before a Finish() that is still waiting for the queue or an AUTH
  // check: dropped, and nothing may be armed or started.
  if (finishing_) return;
  got_bytes_ = true;
  ArmTimer();
  if (!plaintext.empty()) session_.Feed(plaintext);
  Pump();
  ReadMore();
}

void SmtpConnection::OnEnd(int) {
  if (finishing_) return;
  Finish();  // Closed by the client, or an error.
}

void SmtpConnection::OnTlsUp() {
  if (finishing_) return;
  const tls::TlsSession& tls = *stream_.tls();
  tls_description_ = tls.Description();
  tls_used_ = outcome::Tls{tls.Version(), tls.Cipher(), false};
  if (session_.wants_tls()) {
    session_.TlsStarted();
  } else {
    session_.Start();  // Implicit TLS: the banner, now encrypted.
  }
}

void SmtpConnection::OnTlsError(const absl::Status& status, bool was_up,
                                bool first, absl::string_view bytes) {
  if (finishing_) return;
  got_bytes_ = true;
  // A TLS record starts with 0x16 (handshake); SMTP text with a letter.
  bool plain_smtp = first && mode_ == ListenerKind::kSubmissions &&
                    !bytes.empty() && absl::ascii_isalpha(bytes[0]);
  if (plain_smtp) {
    log::Warn(kLog,
              "refused %s on the implicit-TLS port: it spoke plain SMTP "
              "(\"%s\"); set the client to TLS on connect (SMTPS), or use "
              "the submission port with STARTTLS",
              peer_.HostString(),
              absl::CHexEscape(
                  bytes.substr(0, std::min<size_t>(bytes.find('\r'), 20))));
  } else if (!was_up) {
    log::Warn(kLog,
              "TLS handshake with %s failed: %s (an old client without TLS "
              "1.2, or one that does not trust this certificate)",
              peer_.HostString(), status.message());
  } else {
    log::Info(kLog, "TLS with %s failed: %s", peer_.HostString(),
              status.message());
  }
  // The alert goes out, then the connection closes.
  finishing_after_send_ = true;
  Pump();
}

void SmtpConnection::OnWritten(int result) {
  if (finishing_) return;  // Cancelled by a Finish(); nothing more to do.
  if (result < 0) return Finish();
  // Room again: held commands go on, then reading resumes.
  Pump();
  ReadMore();
}

void SmtpConnection::ArmTimer() { ArmTimer(context_.command_timeout); }

void SmtpConnection::ArmTimer(absl::Duration timeout) {
  if (finishing_) return;  // A late callback: the timer would outlive us.
  if (timer_ != 0) reactor_.CancelTimer(timer_);
  timer_ = reactor_.AddTimer(timeout, [this] {
    timer_ = 0;
    OnTimeout();
  });
}

void SmtpConnection::OnTimeout() {
  if (finishing_) return;
  if (mode_ == ListenerKind::kSubmissions && !got_bytes_) {
    log::Warn(kLog,
              "closed %s on the implicit-TLS port: it sent nothing for %s; a "
              "client waiting for a plain-text greeting should use the "
              "submission port (587, STARTTLS) or be set to TLS on connect",
              peer_.HostString(), absl::FormatDuration(kFirstByteTimeout));
    return Finish();
  }
  if (stream_.writing()) {
    // Its replies have not drained for a whole command timeout: a 421
    // would only queue behind them.
    log::Warn(kLog,
              "closed %s: it did not read its replies for %s (%d bytes "
              "unsent); a client must read what it is sent",
              peer_.HostString(),
              absl::FormatDuration(context_.command_timeout), stream_.unsent());
    return Finish();
  }
  session_.TimedOut();
  Pump();
}

void SmtpConnection::ReadMore() {
  if (finishing_ || finishing_after_send_ || session_.closing() ||
      session_.blocked() || stream_.unsent() >= kMaxUnsentBytes ||
      session_.phase() == smtp::ServerSession::Phase::kWaitQueue ||
      session_.phase() == smtp::ServerSession::Phase::kWaitAuth) {
    return;
  }
  stream_.Read();  // OnData, OnEnd or OnTlsError next.
}

void SmtpConnection::Pump() {
  if (finishing_) return;
  // Takes the session's replies; while it holds commands back for want of
  // room, lets it go on as long as the unsent bytes stay under the bound.
  for (;;) {
    std::string replies = session_.TakeOutput();
    // Encrypted once TLS is up; "220 Ready to start TLS" in the clear.
    (void)stream_.Send(replies);
    if (!session_.blocked() || stream_.unsent() >= kMaxUnsentBytes) break;
    session_.Resume();
  }
  if (session_.wants_tls() && stream_.tls() == nullptr) {
    // Everything the client sends from now on is TLS.
    stream_.StartTlsServer(tls_context_);
  }
  PublishRefusals();
  if (auto message = session_.TakeMessage()) Enqueue(*std::move(message));
  if (auto request = session_.TakeAuthRequest()) {
    Authenticate(*std::move(request));
  }
  SendPending();
  bool done = session_.closing() || finishing_after_send_;
  if (done && !stream_.writing() && stream_.unsent() == 0) Finish();
}

void SmtpConnection::PublishRefusals() {
  for (smtp::Refusal& r : session_.TakeRefusals()) {
    Rejected(Reply::Parse(r.reply), std::move(r.hint), std::move(r.sender),
             std::move(r.recipient), std::move(r.helo));
  }
}

void SmtpConnection::Rejected(Reply reply, std::string reason,
                              std::string sender, std::string recipient,
                              std::string helo) {
  outcome::Outcome o;
  o.kind = outcome::Kind::kRejected;
  o.time = reactor_.Now();
  o.shard = reactor_.id();
  o.reply = std::move(reply);
  o.reason = std::move(reason);
  o.sender = std::move(sender);
  o.recipient = std::move(recipient);
  o.helo = std::move(helo);
  o.client = peer_.HostString();
  o.listener = std::string(peregrine::ListenerName(mode_));
  o.tls = tls_used_;
  // The human log's line comes from its consumer (mta/outcome).
  if (context_.outcomes != nullptr) context_.outcomes->Publish(o);
}

void SmtpConnection::SendPending() {
  if (finishing_) return;
  stream_.Flush();  // OnWritten next.
}

void SmtpConnection::Enqueue(smtp::Message m) {
  absl::Time now = absl::Now();
  std::string received = absl::StrCat(
      "Received: from ", HeaderSafe(m.helo), " (",
      client_name_.empty() ? "unknown" : HeaderSafe(client_name_), " [",
      peer_.HostString(), "])\r\n\t",
      tls_description_.empty()
          ? ""
          : absl::StrCat("(using ", tls_description_, ")\r\n\t"),
      context_.received_shows_auth_user && !m.auth_user.empty()
          ? absl::StrCat("(authenticated as ", HeaderSafe(m.auth_user),
                         ")\r\n\t")
          : "",
      "by ", context_.hostname, " (Peregrine) with ",
      m.smtputf8 ? "UTF8SMTP" : "ESMTP", tls_description_.empty() ? "" : "S",
      m.auth_user.empty() ? "" : "A", ";\r\n\t",
      absl::FormatTime("%a, %d %b %Y %H:%M:%S %z", now, absl::UTCTimeZone()),
      "\r\n");
  if (!m.auth_user.empty() && context_.check_sender) {
    // The From header too: a user allowed only app@example.com must not
    // put anyone else in front of the recipient.
    std::string from = FromHeaderAddress(m.data);
    std::string why =
        from.empty() ? "" : context_.check_sender(m.auth_user, from);
    if (!why.empty()) {
      std::string reply =
          absl::StrCat("550 5.7.1 From: <", from, "> not allowed: ", why);
      Rejected(Reply::Parse(reply),
               absl::StrCat("the From header of user ", m.auth_user,
                            "'s message is not one of its senders"),
               m.sender, "", m.helo);
      session_.MessageRefused(reply);
      Pump();
      return;
    }
  }
  if (ReceivedCount(m.data) >= kMaxHops) {
    std::string reply = "554 5.4.6 Error: too many hops (a mail loop?)";
    Rejected(Reply::Parse(reply),
             absl::StrCat("the message carries ", kMaxHops,
                          " or more Received fields: it goes round in "
                          "circles (look for aliases that forward to each "
                          "other through other servers)"),
             m.sender, "", m.helo);
    session_.MessageRefused(reply);
    Pump();
    return;
  }
  if (ReadBounces(m, received)) return;
  // A queue transfer from another node (mta/transfer_header.h): honoured
  // from a trusted client on the relay listener; removed from anyone's.
  std::optional<TransferInfo> transfer = TakeTransferHeader(&m.data);
  if (transfer.has_value() && !(mode_ == ListenerKind::kRelay && trusted_)) {
    transfer.reset();
  }
  std::string forwarded_for;
  if (context_.local != nullptr) {
    std::vector<local::Rcpt> rcpts;
    for (smtp::Recipient& r : m.recipients) {
      rcpts.push_back({std::move(r.address), std::move(r.orcpt), r.notify});
    }
    local::Rewritten w =
        context_.local->Rewrite(m.sender, std::move(rcpts), now);
    m.sender = std::move(w.sender);
    m.recipients.clear();
    for (local::Rcpt& r : w.recipients) {
      m.recipients.push_back(
          {std::move(r.address), std::move(r.orcpt), r.notify});
    }
    forwarded_for = std::move(w.forwarded_for);
    if (m.recipients.empty()) {
      // Every recipient's alias went away between RCPT and now: the
      // client tries again and is told at RCPT.
      Rejected(Reply{451, "4.3.0", "aliases changed"},
               "no recipient left: the aliases changed during the "
               "transaction",
               m.sender, "", m.helo);
      session_.MessageQueued(absl::UnavailableError("aliases"), "");
      Pump();
      return;
    }
  }
  bool add_fields = mode_ == ListenerKind::kRelay
                        ? context_.relay_adds_missing_fields
                        : context_.submission_adds_missing_fields;
  std::string added;
  if (add_fields && !transfer.has_value()) {
    thread_local absl::BitGen random;
    added = MissingSubmissionFields(m.data, context_.hostname, now, random);
  }
  std::string body = absl::StrCat(received, added, m.data);
  m.data = std::string();  // In `body` now.

  // Signed once, before it is queued: by the Signer's threads (a signature
  // can take most of a millisecond), then back here; else on the shard.
  // Transferred mail was signed by the node that received it first.
  auto table =
      context_.dkim && !transfer.has_value() ? context_.dkim() : nullptr;
  if (table == nullptr) {
    return Queue(std::move(m), std::move(body), now, std::move(transfer));
  }
  // `posted`: run from the reactor's queue, not from within Pump(), so the
  // session is pumped and reading resumed here.
  auto signed_body = [this, now](smtp::Message m,
                                 absl::StatusOr<std::string> signatures,
                                 std::string body, bool posted) {
    if (!signatures.ok()) {
      Rejected(Reply{451, "4.3.0", "signing failed"},
               absl::StrCat("DKIM: ", signatures.status().message()), m.sender,
               "", m.helo);
      session_.MessageQueued(absl::UnavailableError("dkim"), "");
      Pump();
      if (posted) ReadMore();
      return;
    }
    Queue(std::move(m), *signatures + body, now);
  };
  if (context_.signer == nullptr) {
    auto signatures = table->Sign(body, now, forwarded_for);
    return signed_body(std::move(m), std::move(signatures), std::move(body),
                       /*posted=*/false);
  }
  // The connection waits as it does for the queue: Finish() leaves it to
  // this answer.
  enqueue_pending_ = true;
  context_.signer->Sign(
      std::move(table), std::move(body), now, forwarded_for,
      [this, signed_body, m = std::move(m)](
          absl::StatusOr<std::string> signatures, std::string body) mutable {
        // On a signer thread: back to our shard.
        reactor_.Post([this, signed_body, m = std::move(m),
                       signatures = std::move(signatures),
                       body = std::move(body)]() mutable {
          enqueue_pending_ = false;
          if (finishing_) return Finish();  // The client left meanwhile.
          signed_body(std::move(m), std::move(signatures), std::move(body),
                      /*posted=*/true);
        });
      });
}

void SmtpConnection::Queue(smtp::Message m, std::string body, absl::Time now,
                           std::optional<TransferInfo> transfer) {
  queue::NewMessage q;
  q.envelope.sender = m.sender;
  q.envelope.envid = m.envid;
  q.envelope.ret = static_cast<queue::DsnRet>(m.ret);
  q.envelope.client_address = peer_.HostString();
  q.envelope.helo = m.helo;
  q.envelope.received = now;
  if (transfer.has_value()) {
    // Its age, tags and attempts go on from where they were.
    if (transfer->received <= now) q.envelope.received = transfer->received;
    q.envelope.tenant = transfer->tenant;
    q.envelope.campaign = transfer->campaign;
    q.attempts = transfer->attempts;
  }
  q.envelope.listener = std::string(peregrine::ListenerName(mode_));
  for (const smtp::Recipient& r : m.recipients) {
    queue::RecipientSpec spec;
    spec.address = r.address;
    spec.orcpt = r.orcpt;
    spec.notify = r.notify;
    spec.site = Domain(r.address);
    spec.shard =
        static_cast<uint16_t>(ShardForDomain(spec.site, context_.shards));
    q.recipients.push_back(std::move(spec));
  }
  q.body = std::move(body);
  // What the `received` or `rejected` outcome tells, once the queue answers.
  auto o = std::make_shared<outcome::Outcome>();
  o->size = q.body.size();
  o->sender = m.sender;
  o->helo = m.helo;
  o->auth_user = m.auth_user;
  for (const smtp::Recipient& r : m.recipients)
    o->recipients.push_back(r.address);
  q.envelope.tls = tls_description_;
  q.envelope.auth_user = m.auth_user;
  enqueue_pending_ = true;
  context_.queue->Enqueue(
      std::move(q), [this, o](absl::StatusOr<queue::MessageId> id) {
        // On the committer thread: back to our shard.
        reactor_.Post([this, id, o] {
          enqueue_pending_ = false;
          if (id.ok()) {
            o->kind = outcome::Kind::kReceived;
            o->time = reactor_.Now();
            o->shard = reactor_.id();
            o->id = *id;
            o->client = peer_.HostString();
            o->listener = std::string(peregrine::ListenerName(mode_));
            o->tls = tls_used_;
            o->reply =
                Reply{250, "2.0.0",
                      absl::StrCat("queued as ", queue::FormatMessageId(*id))};
            if (context_.outcomes != nullptr) context_.outcomes->Publish(*o);
          } else {
            bool full = absl::IsResourceExhausted(id.status());
            Rejected(full ? Reply{452, "4.3.1", "insufficient system storage"}
                          : Reply{451, "4.3.0", "queue file write error"},
                     absl::StrCat("not queued: ", id.status().message()),
                     o->sender, "", o->helo);
          }
          if (finishing_) return Finish();  // The client left meanwhile.
          session_.MessageQueued(id.status(),
                                 id.ok() ? queue::FormatMessageId(*id) : "");
          Pump();
          ReadMore();
        });
      });
}

bool SmtpConnection::ReadBounces(smtp::Message& m,
                                 const std::string& received) {
  if (!context_.bounce_domain || !context_.read_bounce) return false;
  std::vector<std::string> bounces;
  std::vector<smtp::Recipient> others;
  for (const smtp::Recipient& r : m.recipients) {
    if (context_.bounce_domain(Domain(r.address))) {
      bounces.push_back(r.address);
    } else {
      others.push_back(r);
    }
  }
  if (bounces.empty()) return false;
  std::string message = absl::StrCat(received, m.data);
  if (!others.empty()) {
    // Mixed: the rest is queued as usual; the bounce part is read on the
    // side, and what it taught is in the log and the events.
    m.recipients = std::move(others);
    context_.read_bounce(std::move(message), std::move(bounces),
                         peer_.HostString(), [](absl::Status, std::string) {});
    return false;
  }
  enqueue_pending_ = true;
  context_.read_bounce(
      std::move(message), std::move(bounces), peer_.HostString(),
      [this](absl::Status status, std::string summary) {
        // On the inbox's thread: back to our shard.
        reactor_.Post([this, status, summary] {
          enqueue_pending_ = false;
          if (finishing_) return Finish();
          if (status.ok()) {
            log::Info(kLog, "bounce from %s read: %s", peer_.HostString(),
                      summary);
          }
          session_.MessageQueued(status, status.ok() ? "bounce" : "");
          Pump();
          ReadMore();
        });
      });
  return true;
}

void SmtpConnection::Authenticate(smtp::AuthRequest request) {
  auth_pending_ = true;
  std::string user = request.user;
  context_.authenticate(
      peer_.HostString(), std::move(request.user), std::move(request.password),
      [this, user](AuthAnswer answer) {
        // On an authenticator thread (or this one): back to our shard.
        reactor_.Post([this, user, answer = std::move(answer)] {
          auto deliver = [this, user, answer] {
            auth_pending_ = false;
            if (finishing_) return Finish();
            if (answer.verdict == smtp::AuthVerdict::kAccepted) {
              log::Info(kLog, "auth ok client=%s user=%s", peer_.HostString(),
                        user);
            } else {
              // The authenticator counts failures and reports them once a
              // minute; a line per guess would flood the log.
              log::Debug(kLog, "auth %s client=%s user=%s%s%s",
                         answer.verdict == smtp::AuthVerdict::kRejected
                             ? "failed"
                             : "refused",
                         peer_.HostString(), user,
                         answer.why.empty() ? "" : ": ", answer.why);
            }
            session_.AuthResult(answer.verdict, answer.why);
            Pump();
            ReadMore();
          };
          // Failures from a guessing address are answered late, by a timer
          // that Finish() cancels (the check itself is over).
          if (answer.delay > absl::ZeroDuration() && !finishing_) {
            auth_pending_ = false;
            auth_delay_timer_ =
                reactor_.AddTimer(answer.delay, [this, deliver]() mutable {
                  auth_delay_timer_ = 0;
                  auth_pending_ = true;  // What deliver() expects.
                  deliver();
                });
          } else {
            deliver();
          }
        });
      });
}

void SmtpConnection::Finish() {
  finishing_ = true;
  if (enqueue_pending_ || auth_pending_) return;  // Their answer finishes us.
  if (timer_ != 0) {
    reactor_.CancelTimer(timer_);
    timer_ = 0;
  }
  if (auth_delay_timer_ != 0) {
    reactor_.CancelTimer(auth_delay_timer_);
    auth_delay_timer_ = 0;
  }
  if (stream_.closing()) return;
  if (counted_) {
    context_.limiter->Release(peer_.HostString());
    counted_ = false;
  }
  *alive_ = false;  // A DNS answer may still come; it finds us gone.
  live_connections.erase(this);
  stream_.Close([this] {
    open_.fetch_sub(1, std::memory_order_relaxed);
    delete this;
  });
}

}  // namespace peregrine
