#include "mta/delivery/outbound_connection.h"

#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "base/log.h"
#include "mta/bounce/verp.h"
#include "mta/shard/socket.h"

namespace peregrine::delivery {
namespace {

constexpr char kLog[] = "delivery";

bool HasEightBit(absl::string_view text) {
  // Eight bytes at a time (a body is scanned for every transaction),
  // stopping at the first 512-byte block that has one.
  constexpr uint64_t kHigh = 0x8080808080808080ull;
  const char* p = text.data();
  size_t n = text.size();
  while (n >= 512) {
    uint64_t any = 0;
    for (int i = 0; i < 64; ++i) {
      uint64_t word;
      memcpy(&word, p + 8 * i, sizeof(word));
      any |= word;
    }
    if ((any & kHigh) != 0) return true;
    p += 512;
    n -= 512;
  }
  for (; n > 0; ++p, --n) {
    if (static_cast<unsigned char>(*p) >= 0x80) return true;
  }
  return false;
}

// A reason Peregrine gives itself, as a transient reply.
Reply Made(absl::string_view enhanced, std::string text) {
  return Reply{451, std::string(enhanced), std::move(text)};
}

bool IsSet(const Reply& r) { return r.code != 0 || !r.text.empty(); }

// A failure of the connection as a whole, as a transient reply for the
// mail it held: the remote's 4xx code, else 451; its enhanced code in the
// transient class (5.7.1 -> 4.7.1), else 4.4.1; and `text`.
Reply Transient(const Reply& r, std::string text) {
  Reply out;
  out.code = r.code >= 400 && r.code < 500 ? r.code : 451;
  out.enhanced =
      r.enhanced.empty() ? "4.4.1" : absl::StrCat("4", r.enhanced.substr(1));
  out.text = std::move(text);
  return out;
}

}  // namespace

std::string SmarthostHint(const Smarthost& s, smtp::ClientSession::Phase phase,
                          const std::string& failure) {
  std::string where = absl::StrCat("smarthost ", s.host, ":", s.port);
  if (phase == smtp::ClientSession::Phase::kAuth) {
    return absl::StrCat(
        where, " refused the login for user '", s.user,
        "': check smarthost.user and smarthost.password (Gmail and Office "
        "365 want an app password when two-step verification is on)");
  }
  if (absl::StrContains(failure, "Connection refused")) {
    return absl::StrCat(where,
                        " refused the connection: is smarthost.host right, "
                        "and does the relay listen on port ",
                        s.port, "?");
  }
  if (absl::StrContains(failure, "connection timed out")) {
    return absl::StrCat(where, ": connection timed out; is outbound port ",
                        s.port,
                        " blocked by a firewall or by your VPS provider?");
  }
  if (absl::StrContains(failure, "timed out") &&
      phase == smtp::ClientSession::Phase::kGreeting &&
      s.tls != SmarthostTls::kImplicit) {
    return absl::StrCat(
        where,
        " accepted the connection but sent no greeting: it probably "
        "expects TLS from the first byte (usual on port 465); set "
        "smarthost.tls = \"implicit\"");
  }
  if (s.tls == SmarthostTls::kImplicit &&
      (absl::StrContains(failure, "wrong version number") ||
       absl::StrContains(failure, "packet length too long") ||
       absl::StrContains(failure, "TLS handshake failed"))) {
    return absl::StrCat(where,
                        " speaks plain SMTP first: ports 587 and 25 want "
                        "smarthost.tls = \"starttls\"");
  }
  if (absl::StrContains(failure, "AUTH PLAIN")) {
    return absl::StrCat(where, ": ", failure,
                        "; most relays offer AUTH only after STARTTLS");
  }
  return absl::StrCat(where, ": ", failure);
}

OutboundConnection::OutboundConnection(ConnectionHost& host, Site& site)
    : host_(host),
      site_(site),
      options_holder_(host.options()),
      options_(*options_holder_),
      reactor_(host.reactor()) {}

void OutboundConnection::Begin() {
  source_ = PickSource(options_, site_.options().pool, host_.rng());
  if (site_.smarthost) {
    hosts_.push_back(options_.smarthost.host);
    port_ = options_.smarthost.port;
  } else {
    for (const dns::MxHost& h : site_.mx) hosts_.push_back(h.host);
    port_ = options_.port;
    // Hosts that refused or timed out lately go last, in their order: a
    // dead first MX does not cost every new connection a timeout.
    absl::Time now = reactor_.Now();
    std::stable_partition(
        hosts_.begin(), hosts_.end(),
        [&](const std::string& host) { return !site_.HostDown(host, now); });
  }
  ResolveHost();
}

void OutboundConnection::Send(std::unique_ptr<Job> job,
                              std::shared_ptr<const std::string> body,
                              const queue::Envelope& envelope) {
  CancelIdle();
  job_ = std::move(job);
  body_ = std::move(body);
  smtp::OutMessage m;
  m.sender = envelope.sender;
  if (options_.verp != nullptr && !envelope.sender.empty() &&
      job_->recipients.size() == 1) {
    const queue::RecipientRecord& r = job_->recipients.front();
    m.sender =
        bounce::VerpAddress(*options_.verp, r.message, r.index, r.spec.address);
  }
  m.envid = envelope.envid;
  m.ret = static_cast<uint8_t>(envelope.ret);
  m.body = body_.get();
  m.eight_bit = HasEightBit(*body_);
  m.smtputf8 = HasEightBit(envelope.sender);
  for (const queue::RecipientRecord& r : job_->recipients) {
    m.recipients.push_back({r.spec.address, r.spec.notify, r.spec.orcpt});
    if (HasEightBit(r.spec.address)) m.smtputf8 = true;
  }
  session_->SendMessage(m);
  Pump();
}

void OutboundConnection::Idle() {
  CancelIdle();
  idle_timer_ = reactor_.AddTimer(options_.idle_timeout, [this] {
    idle_timer_ = 0;
    Leave();
  });
}

void OutboundConnection::Leave() {
  CancelIdle();
  auto& idle = site_.idle;
  idle.erase(std::remove(idle.begin(), idle.end(), this), idle.end());
  if (closing_) return;  // Already on its way out.
  if (session_ != nullptr &&
      session_->phase() != smtp::ClientSession::Phase::kClosed) {
    session_->Quit();
    Pump();
  } else {
    Gone();
  }
}

void OutboundConnection::CancelIdle() {
  if (idle_timer_ != 0) reactor_.CancelTimer(idle_timer_);
  idle_timer_ = 0;
}

void OutboundConnection::ResolveHost() {
  if (host_index_ >= hosts_.size()) {
    return Gone(IsSet(last_error_) ? last_error_
                                   : Made("4.4.4", "no mail exchanger to try"));
  }
  dns::Resolver* resolver = host_.resolver();
  if (resolver == nullptr) return Gone(Made("4.4.3", "no DNS resolver"));
  resolver->Addresses(
      hosts_[host_index_],
      [this, alive = alive_](absl::StatusOr<dns::HostAddresses> addresses) {
        if (!*alive) return;
        if (!addresses.ok() || addresses->empty()) {
          last_error_ =
              Made("4.4.3",
                   absl::StrCat(
                       hosts_[host_index_], ": no address: ",
                       addresses.ok() ? "none" : addresses.status().message()));
          ++host_index_;
          return ResolveHost();
        }
        addresses_ = addresses->v4;
        addresses_.insert(addresses_.end(), addresses->v6.begin(),
                          addresses->v6.end());
        address_index_ = 0;
        dane_.clear();
        dane_mandatory_ = false;
        tlsa_name_.clear();
        if (site_.dane && !site_.smarthost) {
          // RFC 7672 2.2.2: TLSA records count only for a host whose
          // address records are validated too.
          if (addresses->authenticated) return LookUpTlsa();
          if (site_.dane_required) {
            return SkipHost(
                Made("4.7.5", absl::StrCat("DANE required: the addresses of ",
                                           hosts_[host_index_],
                                           " are not DNSSEC-validated")));
          }
        }
        TryAddress();
      });
}

void OutboundConnection::SkipHost(Reply why) {
  log::Debug(kLog, "site %s: %s", site_.key, why.text);
  last_error_ = std::move(why);
  ++host_index_;
  ResolveHost();
}

void OutboundConnection::LookUpTlsa() {
  tlsa_name_ = absl::StrCat("_", port_, "._tcp.", hosts_[host_index_]);
  host_.resolver()->Tlsa(
      tlsa_name_, [this, alive = alive_](absl::StatusOr<dns::TlsaAnswer> a) {
        if (!*alive) return;
        if (!a.ok()) {
          // RFC 7672 2.2: a failed TLSA look-up (not "none") makes the host
          // unusable: it may be an attacker hiding the records.
          return SkipHost(Made(
              "4.7.5", absl::StrCat("DANE: TLSA look-up for ", tlsa_name_,
                                    " failed (", a.status().message(),
                                    "); the host is not used without it")));
        }
        if (!a->authenticated || a->records.empty()) {
          if (site_.dane_required) {
            return SkipHost(Made(
                "4.7.5",
                absl::StrCat("DANE required: ", tlsa_name_,
                             a->records.empty() ? " has no TLSA records"
                                                : " is not DNSSEC-validated")));
          }
          return TryAddress();  // No DANE for this host.
        }
        for (const dns::Record& r : a->records) {
          // RFC 7672 3.1: DANE-TA(2) and DANE-EE(3) only; selectors 0 and 1;
          // matching types 0, 1 (SHA-256, 32 bytes) and 2 (SHA-512, 64).
          bool usable = (r.tlsa_usage == 2 || r.tlsa_usage == 3) &&
                        r.tlsa_selector <= 1 &&
                        ((r.tlsa_matching == 0 && !r.tlsa_data.empty()) ||
                         (r.tlsa_matching == 1 && r.tlsa_data.size() == 32) ||
                         (r.tlsa_matching == 2 && r.tlsa_data.size() == 64));
          if (usable) {
            dane_.push_back(tls::Tlsa{r.tlsa_usage, r.tlsa_selector,
                                      r.tlsa_matching, r.tlsa_data});
          }
        }
        if (dane_.empty() && site_.dane_required) {
          return SkipHost(Made("4.7.5", absl::StrCat("DANE required: no usable "
                                                     "TLSA record at ",
                                                     tlsa_name_)));
        }
        dane_mandatory_ = true;
        TryAddress();
      });
}

void OutboundConnection::NextAddress() {
  plaintext_fallback_ = false;
  ++address_index_;
  if (address_index_ >= addresses_.size()) {
    ++host_index_;
    return ResolveHost();
  }
  TryAddress();
}

void OutboundConnection::TryAddress() {
  if (address_index_ >= addresses_.size()) {
    ++host_index_;
    return ResolveHost();
  }
  const dns::IpAddress& ip = addresses_[address_index_];
  ip_ = ip.ToString();
  std::optional<shard::SocketAddress> bind_to;
  if (source_ != nullptr && !source_->address.empty()) {
    auto local = shard::SocketAddress::Parse(
        absl::StrContains(source_->address, ':')
            ? absl::StrCat("[", source_->address, "]:0")
            : absl::StrCat(source_->address, ":0"));
    if (local.ok()) {
      if (local->family() != ip.family()) return NextAddress();
      bind_to = *local;
    }
  }
  auto to = shard::SocketAddress::Parse(
      ip.family() == AF_INET6 ? absl::StrCat("[", ip_, "]:", port_)
                              : absl::StrCat(ip_, ":", port_));
  if (!to.ok()) return NextAddress();
  auto fd = shard::NewStreamSocket(ip.family());
  if (!fd.ok()) {
    last_error_ = Made("4.3.0", std::string(fd.status().message()));
    return NextAddress();
  }
  if (bind_to && ::bind(*fd, bind_to->sockaddr_ptr(), bind_to->length()) != 0) {
    last_error_ =
        Made("4.4.0", absl::StrCat("cannot send from ", source_->address, ": ",
                                   strerror(errno)));
    ::close(*fd);
    return NextAddress();
  }
  stream_ = std::make_unique<Stream>(reactor_, *fd,
                                     static_cast<Stream::Handler&>(*this));
  host_.Opened();
  ArmTimer(options_.connect_timeout);
  reactor_.io().Connect(*fd, *to, [this, alive = alive_](int result) {
    if (!*alive || stream_ == nullptr || stream_->closing()) return;
    if (result < 0) {
      last_error_ =
          Made("4.4.1", absl::StrCat(Peer(), ": connect: ", strerror(-result)));
      MarkHostDown();
      return CloseSocket([this] { NextAddress(); });
    }
    Connected();
  });
}

void OutboundConnection::MarkHostDown() {
  site_.MarkHostDown(hosts_[host_index_], reactor_.Now());
}

std::string OutboundConnection::Peer() const {
  return absl::StrCat(hosts_[host_index_], "[", ip_, "]:", port_);
}

Where OutboundConnection::Here() const {
  return Where{hosts_[host_index_], ip_,
               source_ == nullptr ? "" : source_->name, tls_used_,
               !dane_mandatory_ ? site_.TlsPolicyLabel()
               : dane_.empty()  ? std::string("dane-unauthenticated")
                                : std::string("dane")};
}

void OutboundConnection::Connected() {
  log::Debug(kLog, "site %s: connected to %s", site_.key, Peer());
  smtp::ClientConfig c;
  c.helo = source_ != nullptr && !source_->ehlo.empty()
               ? source_->ehlo
               : (options_.helo.empty() ? host_.default_helo() : options_.helo);
  c.tls_available = host_.tls() != nullptr;
  implicit_tls_ = false;
  verify_ = false;
  if (site_.smarthost) {
    const Smarthost& s = options_.smarthost;
    c.auth_user = s.user;
    c.auth_password = s.password;
    c.tls = s.tls == SmarthostTls::kStartTls ? smtp::TlsPolicy::kRequired
                                             : smtp::TlsPolicy::kNone;
    implicit_tls_ = s.tls == SmarthostTls::kImplicit;
    verify_ = s.verify && s.tls != SmarthostTls::kNone;
  } else if (dane_mandatory_) {
    // DANE (RFC 7672 2.2): TLS or nothing; authenticated by the TLSA
    // records when any is usable, before and instead of any other policy.
    c.tls = smtp::TlsPolicy::kRequired;
    verify_ = !dane_.empty();
  } else {
    switch (site_.options().tls) {
      case TlsMode::kNone:
        c.tls = smtp::TlsPolicy::kNone;
        break;
      case TlsMode::kOpportunistic:
        c.tls = plaintext_fallback_ ? smtp::TlsPolicy::kNone
                                    : smtp::TlsPolicy::kOpportunistic;
        break;
      case TlsMode::kRequired:
        c.tls = smtp::TlsPolicy::kRequired;
        break;
      case TlsMode::kVerify:
        c.tls = smtp::TlsPolicy::kRequired;
        verify_ = true;
        break;
    }
  }
  session_ = std::make_unique<smtp::ClientSession>(c);
  tls_used_.reset();
  if (implicit_tls_) StartTls();
  if (closing_) return;
  ArmTimer(options_.greeting_timeout);
  SendPending();
  ReadMore();
}

void OutboundConnection::StartTls() {
  if (host_.tls() == nullptr || stream_ == nullptr) return;
  absl::Status s =
      stream_->StartTlsClient(host_.tls(), hosts_[host_index_], verify_, dane_);
  if (!s.ok()) Broken("4.7.5", std::string(s.message()));
}

void OutboundConnection::ArmTimer(absl::Duration d) {
  if (closing_) return;
  if (timer_ != 0) reactor_.CancelTimer(timer_);
  timer_ = reactor_.AddTimer(d, [this] {
    timer_ = 0;
    if (connecting()) {
      // The connect callback sees -ECANCELED and ignores it.
      last_error_ =
          Made("4.4.1", absl::StrCat(Peer(), ": connection timed out"));
      MarkHostDown();
      return CloseSocket([this] { NextAddress(); });
    }
    Broken("4.4.2", absl::StrCat("timed out waiting for ", Peer()));
  });
}

void OutboundConnection::ReadMore() {
  if (stream_ != nullptr) stream_->Read();  // OnData, OnEnd or OnTlsError.
}

void OutboundConnection::OnData(absl::string_view plaintext) {
  if (!plaintext.empty()) session_->Feed(plaintext);
  Pump();
  ReadMore();
}

void OutboundConnection::OnEnd(int error) {
  Broken("4.4.2", error == 0 ? absl::StrCat(Peer(), " closed the connection")
                             : absl::StrCat(Peer(), ": ", strerror(-error)));
}

void OutboundConnection::OnTlsUp() {
  const tls::TlsSession& tls = *stream_->tls();
  tls_used_ = outcome::Tls{tls.Version(), tls.Cipher(), tls.Verified(nullptr)};
  if (session_->phase() == Phase::kTlsHandshake) session_->TlsStarted();
}

void OutboundConnection::OnTlsError(const absl::Status& status, bool, bool,
                                    absl::string_view) {
  // What the certificate check said ("hostname mismatch", "no matching
  // DANE TLSA records", ...): the operator's clue, and TLS reporting's.
  std::string why = verify_ && stream_ != nullptr && stream_->tls() != nullptr
                        ? stream_->tls()->VerifyError()
                        : "";
  if (!why.empty()) {
    return Broken("4.7.5",
                  absl::StrCat(Peer(), ": ", status.message(), " (", why, ")"));
  }
  Broken("4.7.5", absl::StrCat(Peer(), ": ", status.message()));
}

void OutboundConnection::OnWritten(int result) {
  if (result < 0) {
    return Broken("4.4.2", absl::StrCat(Peer(), ": ", strerror(-result)));
  }
  if (session_ != nullptr && session_->phase() == Phase::kClosed &&
      stream_->unsent() == 0) {
    return Closed();
  }
  SendPending();
}

bool OutboundConnection::TakeCommands() {
  // Encrypted once TLS is up.
  return stream_ != nullptr && stream_->Send(session_->TakeOutput()).ok();
}

// Moves the session along: output out, results to the host, work in.
void OutboundConnection::Pump() {
  if (session_ == nullptr || closing_) return;
  if (!TakeCommands()) return Broken("4.7.5", "TLS write failed");
  if (session_->phase() == Phase::kTlsHandshake && stream_->tls() == nullptr) {
    StartTls();
    if (closing_) return;
    // What the server sent after its 220 belongs to TLS.
    std::string early = session_->TakeTlsBytes();
    if (!early.empty()) {
      stream_->Flush();  // The client's hello first.
      return stream_->Received(early);
    }
  }
  if (auto result = session_->TakeResult()) Result(*result);
  Phase phase = session_->phase();
  if (phase == Phase::kClosed) {
    SendPending();
    return Closed();
  }
  if (phase == Phase::kReady && job_ == nullptr && !waiting_for_work_) {
    ever_ready_ = true;
    last_phase_ = phase;
    if (timer_ != 0) reactor_.CancelTimer(timer_);
    timer_ = 0;
    waiting_for_work_ = true;
    if (!site_.MoreOnConnection(messages_)) return Leave();
    if (!host_.GiveJob(site_, this)) {
      // Suspended: the transaction in flight is done; start no other.
      if (host_.draining() || site_.suspended()) return Leave();
      site_.idle.push_back(this);
      Idle();
    }
    // GiveJob may have sent a message, which pumped already.
    return;
  }
  last_phase_ = phase;
  ArmTimer(phase == Phase::kGreeting ? options_.greeting_timeout
           : phase == Phase::kData   ? options_.data_timeout
                                     : options_.command_timeout);
  // What Result() added (QUIT after the last message).
  if (!TakeCommands()) return Broken("4.7.5", "TLS write failed");
  SendPending();
}

void OutboundConnection::Result(const smtp::MessageResult& result) {
  waiting_for_work_ = false;
  if (job_ == nullptr) return;
  ++messages_;
  Where where = Here();
  bool any_delivered = false;
  for (size_t i = 0; i < job_->recipients.size(); ++i) {
    Reply reply = i < result.recipients.size()
                      ? result.recipients[i]
                      : Made("4.4.2", "no reply for this recipient");
    if (reply.code == 0) reply.code = 451;
    if (site_.smarthost && reply.code == 552) {
      reply.text =
          absl::StrCat(reply.text, " (the relay ", options_.smarthost.host,
                       " refuses messages this large)");
    }
    any_delivered = any_delivered || reply.positive();
    host_.Result(site_, *job_, job_->recipients[i], reply, where);
  }
  if (any_delivered) site_.Delivered();  // The window may grow.
  job_.reset();
  body_.reset();
  if (session_->phase() == Phase::kReady &&
      (!site_.MoreOnConnection(messages_) || host_.draining())) {
    session_->Quit();
  }
}

void OutboundConnection::SendPending() {
  if (stream_ != nullptr) stream_->Flush();  // OnWritten next.
}

void OutboundConnection::DeferJob(const Reply& reply) {
  if (job_ == nullptr) return;
  Where where = Here();
  Job& job = *job_;
  for (const queue::RecipientRecord& r : job.recipients) {
    host_.Result(site_, job, r, reply, where);
  }
  job_.reset();
}

void OutboundConnection::Broken(absl::string_view enhanced, std::string why) {
  if (closing_) return;
  log::Debug(kLog, "site %s: %s", site_.key, why);
  failure_ = Made(enhanced, std::move(why));
  failure_ours_ = true;
  DeferJob(failure_);
  Finish();
}

// The session ended (QUIT done, or a failure it reported).
void OutboundConnection::Closed() {
  if (closing_ || (stream_ != nullptr && stream_->writing())) {
    return;  // After the last write.
  }
  const Reply& failure = session_->failure();
  log::Debug(kLog, "site %s: session with %s over (%s)", site_.key, Peer(),
             failure.ToString());
  // The session failed before the message had results: rare.
  DeferJob(Transient(failure, failure.ToString()));
  if (last_phase_ != Phase::kQuit) {
    failure_ = failure;
    failure_ours_ = false;
  }
  Finish();
}

void OutboundConnection::Finish() {
  closing_ = true;
  CancelIdle();
  auto& idle = site_.idle;
  idle.erase(std::remove(idle.begin(), idle.end(), this), idle.end());
  if (timer_ != 0) reactor_.CancelTimer(timer_);
  timer_ = 0;
  bool failed = IsSet(failure_);
  // Refused at the greeting, TLS or hello: the next host may do better
  // (one smarthost: nothing else to try).
  bool retry_next = !ever_ready_ && failed && !site_.smarthost;
  // Opportunistic TLS that fails its handshake: the same host again in
  // plain text, as Postfix does, rather than no delivery at all.
  bool again_in_plaintext =
      retry_next &&
      (last_phase_ == Phase::kTlsHandshake ||
       (session_ != nullptr && session_->phase() == Phase::kTlsHandshake)) &&
      site_.options().tls == TlsMode::kOpportunistic && !plaintext_fallback_ &&
      !dane_mandatory_;
  if (failed) {
    // The words say where and what the remote said; the codes become
    // transient ones of the same class (see the engine's Gone()).
    // A session's own failure (code 0: nothing the remote said) is words.
    std::string said = failure_ours_ || failure_.code == 0
                           ? failure_.text
                           : failure_.ToString();
    if (site_.smarthost) {
      said = SmarthostHint(options_.smarthost, last_phase_, said);
    } else if (!absl::StartsWith(said, hosts_[host_index_])) {
      said = absl::StrCat(Peer(), ": ", said);
    }
    if (dane_mandatory_) {
      said = absl::StrCat("DANE (", tlsa_name_,
                          dane_.empty() ? ", none usable" : "", "): ", said);
    }
    failure_ = Transient(failure_, std::move(said));
    last_error_ = failure_;
  }
  if (again_in_plaintext) {
    log::Info(kLog, "site %s: %s; trying again without TLS", site_.key,
              failure_.text);
  }
  CloseSocket([this, retry_next, again_in_plaintext] {
    if (retry_next) {
      closing_ = false;
      failure_ = Reply{};
      session_.reset();
      last_phase_ = Phase::kGreeting;
      if (again_in_plaintext) {
        plaintext_fallback_ = true;
        return TryAddress();
      }
      return NextAddress();
    }
    Gone(failure_);
  });
}

void OutboundConnection::CloseSocket(absl::AnyInvocable<void()> then) {
  if (timer_ != 0) reactor_.CancelTimer(timer_);
  timer_ = 0;
  if (stream_ == nullptr) return then();
  stream_->Close([this, then = std::move(then)]() mutable {
    stream_.reset();
    host_.Closed();
    then();
  });
}

// The end: tells the host, then frees itself.
void OutboundConnection::Gone(Reply failure) {
  log::Debug(kLog, "site %s: connection gone after %d messages%s%s", site_.key,
             messages_, IsSet(failure) ? ": " : "", failure.text);
  *alive_ = false;
  CancelIdle();
  if (timer_ != 0) reactor_.CancelTimer(timer_);
  auto& idle = site_.idle;
  idle.erase(std::remove(idle.begin(), idle.end(), this), idle.end());
  ConnectionHost& host = host_;
  Site& site = site_;
  bool ever_ready = ever_ready_;
  // Not from inside a callback of our own connection.
  reactor_.Defer(
      [&host, &site, this, ever_ready, failure = std::move(failure)] {
        host.Gone(site, this, ever_ready, failure);
        delete this;
      });
}

}  // namespace peregrine::delivery
