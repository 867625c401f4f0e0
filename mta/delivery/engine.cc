// Over 800 lines and three concerns: an outbound connection's driver, the
// per-site scheduler, and claiming, routing and outcomes. Issue 13 splits
// them into outbound_connection, site and engine files.
#include "mta/delivery/engine.h"

#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "base/log.h"
#include "mta/delivery/routing.h"
#include "mta/shard/connection.h"
#include "mta/shard/socket.h"
#include "mta/smtp/client_session.h"

namespace peregrine::delivery {
namespace {

constexpr char kLog[] = "delivery";
// How long an MX host whose connect failed is tried after the others.
constexpr absl::Duration kHostDownFor = absl::Minutes(2);

std::string Quoted(absl::string_view text) {
  std::string out;
  for (char c : text) {
    if (c == '"' || c == '\\') out += '\\';
    out += (static_cast<unsigned char>(c) < 0x20) ? ' ' : c;
  }
  return absl::StrCat("\"", out, "\"");
}

bool HasEightBit(absl::string_view text) {
  for (char c : text) {
    if (static_cast<unsigned char>(c) >= 0x80) return true;
  }
  return false;
}

// Explains a smarthost failure in words an operator can act on.
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

}  // namespace

// --- Sites -----------------------------------------------------------------

struct Site {
  Site(std::string k, std::string first_domain, std::vector<dns::MxHost> hosts,
       bool relay, SiteOptions o)
      : key(std::move(k)),
        domain(std::move(first_domain)),
        mx(std::move(hosts)),
        smarthost(relay),
        options(std::move(o)),
        message_rate(*TokenBucket::Parse(options.message_rate)),
        connection_rate(*TokenBucket::Parse(options.connection_rate)),
        window(options.initial_connections, options.max_connections) {}

  std::string key;
  std::string domain;  // The first domain routed here: for its rules.
  std::vector<dns::MxHost> mx;
  bool smarthost;
  SiteOptions options;
  TokenBucket message_rate;
  TokenBucket connection_rate;
  ConcurrencyWindow window;  // Counts this site's open connections.
  std::deque<std::unique_ptr<Job>> ready;
  std::vector<OutboundConnection*> idle;
  int connecting = 0;  // Opened, not ready yet.
  absl::Time paused_until = absl::InfinitePast();
  absl::Time reduced_until = absl::InfinitePast();
  shard::Reactor::TimerId wake = 0;
  absl::Time wake_at = absl::InfiniteFuture();
  absl::Time last_used = absl::InfinitePast();  // Last job added.
  // MX hosts whose connect failed lately: tried after the others.
  absl::flat_hash_map<std::string, absl::Time> host_down_until;

  // Nothing waits, nothing is open, no back-off in force.
  bool Quiet(absl::Time now) const {
    return ready.empty() && window.in_flight() == 0 && connecting == 0 &&
           idle.empty() && wake == 0 && now >= reduced_until;
  }
};

// --- One outbound connection ------------------------------------------------

class OutboundConnection {
 public:
  OutboundConnection(DeliveryShard& engine, Site& site)
      : engine_(engine),
        site_(site),
        options_holder_(engine.options_),
        options_(*options_holder_),
        reactor_(engine.reactor_) {}

  void Begin() {
    source_ = PickSource(options_, site_.options.pool, engine_.rng_);
    if (site_.smarthost) {
      hosts_.push_back(options_.smarthost.host);
      port_ = options_.smarthost.port;
    } else {
      for (const dns::MxHost& h : site_.mx) hosts_.push_back(h.host);
      port_ = options_.port;
      // Hosts that refused or timed out lately go last, in their order:
      // a dead first MX does not cost every new connection a timeout.
      absl::Time now = absl::Now();
      std::stable_partition(
          hosts_.begin(), hosts_.end(), [&](const std::string& host) {
            auto it = site_.host_down_until.find(host);
            return it == site_.host_down_until.end() || it->second <= now;
          });
    }
    ResolveHost();
  }

  // In kReady: sends `job`.
  void Send(std::unique_ptr<Job> job, std::string body,
            const queue::Envelope& envelope) {
    CancelIdle();
    job_ = std::move(job);
    body_ = std::move(body);
    smtp::OutMessage m;
    m.sender = envelope.sender;
    m.envid = envelope.envid;
    m.ret = static_cast<uint8_t>(envelope.ret);
    m.body = &body_;
    m.eight_bit = HasEightBit(body_);
    m.smtputf8 = HasEightBit(envelope.sender);
    for (const queue::RecipientRecord& r : job_->recipients) {
      m.recipients.push_back({r.spec.address, r.spec.notify, r.spec.orcpt});
      if (HasEightBit(r.spec.address)) m.smtputf8 = true;
    }
    session_->SendMessage(m);
    Pump();
  }

  // Idle and waiting for work: QUIT after the reuse window.
  void Idle() {
    CancelIdle();
    idle_timer_ = reactor_.AddTimer(options_.idle_timeout, [this] {
      idle_timer_ = 0;
      Leave();
    });
  }

  // Leaves the site's idle list and says QUIT.
  void Leave() {
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

 private:
  using Phase = smtp::ClientSession::Phase;

  void CancelIdle() {
    if (idle_timer_ != 0) reactor_.CancelTimer(idle_timer_);
    idle_timer_ = 0;
  }

  void ResolveHost() {
    if (host_index_ >= hosts_.size()) {
      return Gone(last_error_.empty() ? "no mail exchanger to try"
                                      : last_error_);
    }
    dns::Resolver* resolver = engine_.context_.resolver(reactor_.id());
    if (resolver == nullptr) return Gone("no DNS resolver");
    resolver->Addresses(
        hosts_[host_index_],
        [this, alive = alive_](absl::StatusOr<dns::HostAddresses> addresses) {
          if (!*alive) return;
          if (!addresses.ok() || addresses->empty()) {
            last_error_ = absl::StrCat(
                hosts_[host_index_], ": no address: ",
                addresses.ok() ? "none" : addresses.status().message());
            ++host_index_;
            return ResolveHost();
          }
          addresses_ = addresses->v4;
          addresses_.insert(addresses_.end(), addresses->v6.begin(),
                            addresses->v6.end());
          address_index_ = 0;
          TryAddress();
        });
  }

  void NextAddress() {
    plaintext_fallback_ = false;
    ++address_index_;
    if (address_index_ >= addresses_.size()) {
      ++host_index_;
      return ResolveHost();
    }
    TryAddress();
  }

  void TryAddress() {
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
      last_error_ = std::string(fd.status().message());
      return NextAddress();
    }
    if (bind_to &&
        ::bind(*fd, bind_to->sockaddr_ptr(), bind_to->length()) != 0) {
      last_error_ = absl::StrCat("cannot send from ", source_->address, ": ",
                                 strerror(errno));
      ::close(*fd);
      return NextAddress();
    }
    conn_ = std::make_unique<shard::Connection>(reactor_, *fd);
    engine_.open_.fetch_add(1, std::memory_order_relaxed);
    ArmTimer(options_.connect_timeout);
    reactor_.io().Connect(*fd, *to, [this, alive = alive_](int result) {
      if (!*alive || conn_ == nullptr || conn_->closing()) return;
      if (result < 0) {
        last_error_ = absl::StrCat(Peer(), ": connect: ", strerror(-result));
        MarkHostDown();
        return CloseSocket([this] { NextAddress(); });
      }
      Connected();
    });
  }

  void MarkHostDown() {
    if (site_.smarthost) return;
    site_.host_down_until[hosts_[host_index_]] = absl::Now() + kHostDownFor;
  }

  std::string Peer() const {
    return absl::StrCat(hosts_[host_index_], "[", ip_, "]:", port_);
  }

  void Connected() {
    log::Debug(kLog, "site %s: connected to %s", site_.key, Peer());
    smtp::ClientConfig c;
    c.helo =
        source_ != nullptr && !source_->ehlo.empty()
            ? source_->ehlo
            : (options_.helo.empty() ? engine_.context_.helo : options_.helo);
    c.tls_available = engine_.context_.tls != nullptr;
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
    } else {
      switch (site_.options.tls) {
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
    tls_.reset();
    tls_description_.clear();
    if (implicit_tls_) StartTls();
    if (closing_) return;
    ArmTimer(options_.greeting_timeout);
    SendPending();
    ReadMore();
  }

  void StartTls() {
    if (engine_.context_.tls == nullptr) return;
    tls_ = tls::TlsSession::Client(engine_.context_.tls, hosts_[host_index_],
                                   verify_);
    absl::Status s = tls_->Begin();
    out_ += tls_->TakeCiphertext();
    if (!s.ok()) Broken(std::string(s.message()));
  }

  void ArmTimer(absl::Duration d) {
    if (closing_) return;
    if (timer_ != 0) reactor_.CancelTimer(timer_);
    timer_ = reactor_.AddTimer(d, [this] {
      timer_ = 0;
      if (connecting()) {
        // The connect callback sees -ECANCELED and ignores it.
        last_error_ = absl::StrCat(Peer(), ": connection timed out");
        MarkHostDown();
        return CloseSocket([this] { NextAddress(); });
      }
      Broken(absl::StrCat("timed out waiting for ", Peer()));
    });
  }

  bool connecting() const { return session_ == nullptr; }

  void ReadMore() {
    if (reading_ || conn_ == nullptr || conn_->closing()) return;
    reading_ = true;
    conn_->Read(buffer_, sizeof(buffer_), [this, alive = alive_](int n) {
      if (!*alive) return;
      reading_ = false;
      if (conn_ == nullptr || conn_->closing()) return;
      if (n <= 0) {
        return Broken(n == 0 ? absl::StrCat(Peer(), " closed the connection")
                             : absl::StrCat(Peer(), ": ", strerror(-n)));
      }
      OnBytes(absl::string_view(buffer_, static_cast<size_t>(n)));
    });
  }

  void OnBytes(absl::string_view bytes) {
    if (tls_ != nullptr) {
      std::string plaintext;
      bool was_up = tls_->handshake_done();
      absl::Status s = tls_->Feed(bytes, &plaintext);
      out_ += tls_->TakeCiphertext();
      if (!s.ok()) return Broken(absl::StrCat(Peer(), ": ", s.message()));
      if (!was_up && tls_->handshake_done()) {
        std::string why;
        bool verified = tls_->Verified(&why);
        tls_description_ = absl::StrCat(tls_->Description(),
                                        verified ? " verified" : " unverified");
        if (session_->phase() == Phase::kTlsHandshake) session_->TlsStarted();
      }
      if (!plaintext.empty()) session_->Feed(plaintext);
    } else {
      session_->Feed(bytes);
    }
    Pump();
    ReadMore();
  }

  // Moves the session along: output out, results to the queue, work in.
  // The session's commands to the outgoing buffer (encrypted once TLS is
  // up); false when TLS failed.
  bool TakeCommands() {
    std::string commands = session_->TakeOutput();
    if (commands.empty()) return true;
    if (tls_ != nullptr && tls_->handshake_done()) {
      if (!tls_->Write(commands).ok()) return false;
      out_ += tls_->TakeCiphertext();
    } else {
      out_ += commands;
    }
    return true;
  }

  void Pump() {
    if (session_ == nullptr || closing_) return;
    if (!TakeCommands()) return Broken("TLS write failed");
    if (session_->phase() == Phase::kTlsHandshake && tls_ == nullptr) {
      StartTls();
      if (closing_) return;
      std::string early = session_->TakeTlsBytes();
      if (!early.empty()) return OnBytes(early);
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
      if (messages_ >= site_.options.messages_per_connection) return Leave();
      if (!engine_.GiveJob(site_, this)) {
        // Suspended: the transaction in flight is done; start no other.
        if (engine_.draining_ || site_.options.suspended) return Leave();
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
    if (!TakeCommands()) return Broken("TLS write failed");
    SendPending();
  }

  void Result(const smtp::MessageResult& result) {
    waiting_for_work_ = false;
    if (job_ == nullptr) return;
    ++messages_;
    bool any_delivered = false;
    for (size_t i = 0; i < job_->recipients.size(); ++i) {
      const queue::RecipientRecord& r = job_->recipients[i];
      smtp::Reply reply = i < result.recipients.size()
                              ? result.recipients[i]
                              : smtp::Reply{0, "4.4.2", "no reply"};
      std::string text = reply.ToString();
      if (reply.code >= 200 && reply.code < 300) {
        any_delivered = true;
        engine_.Delivered(
            *job_, r, text,
            {hosts_[host_index_], ip_,
             tls_description_.empty() ? "none" : tls_description_});
      } else {
        if (site_.smarthost && reply.code == 552) {
          text = absl::StrCat(text, " (the relay ", options_.smarthost.host,
                              " refuses messages this large)");
        }
        if (reply.code >= 500) {
          engine_.Failed(*job_, r, text);
        } else {
          engine_.Deferred(*job_, r, text);
        }
        engine_.ApplyBackoff(site_, reply.code, text);
      }
    }
    if (any_delivered) site_.window.OnSuccess();
    job_.reset();
    body_.clear();
    if (session_->phase() == Phase::kReady &&
        (messages_ >= site_.options.messages_per_connection ||
         engine_.draining_)) {
      session_->Quit();
    }
  }

  void SendPending() {
    if (writing_ || out_.empty() || conn_ == nullptr || conn_->closing()) {
      return;
    }
    writing_ = true;
    sending_.swap(out_);
    out_.clear();
    conn_->WriteAll(
        sending_.data(), sending_.size(), [this, alive = alive_](int result) {
          if (!*alive) return;
          writing_ = false;
          sending_.clear();
          if (conn_ == nullptr || conn_->closing()) return;
          if (result < 0) {
            return Broken(absl::StrCat(Peer(), ": ", strerror(-result)));
          }
          if (session_ != nullptr && session_->phase() == Phase::kClosed) {
            if (out_.empty()) return Closed();
          }
          SendPending();
        });
  }

  // The transport failed (I/O error, timeout, TLS): what the session had
  // pending takes this reason.
  void Broken(std::string why) {
    if (closing_) return;
    log::Debug(kLog, "site %s: %s", site_.key, why);
    if (job_ != nullptr) {
      Job& job = *job_;
      std::string reply = absl::StrCat("451 4.4.2 ", why);
      for (const queue::RecipientRecord& r : job.recipients) {
        engine_.Deferred(job, r, reply);
      }
      job_.reset();
    }
    failure_ = why;
    Finish();
  }

  // The session ended (QUIT done, or a failure it reported).
  void Closed() {
    if (closing_ || writing_) return;  // After the last write.
    log::Debug(kLog, "site %s: session with %s over (%s)", site_.key, Peer(),
               session_->failure().ToString());
    if (job_ != nullptr) {
      // The session failed before the message had results: rare.
      for (const queue::RecipientRecord& r : job_->recipients) {
        engine_.Deferred(*job_, r, session_->failure().ToString());
      }
      job_.reset();
    }
    if (last_phase_ != Phase::kQuit) {
      failure_ = session_->failure().ToString();
    }
    Finish();
  }

  void Finish() {
    closing_ = true;
    CancelIdle();
    auto& idle = site_.idle;
    idle.erase(std::remove(idle.begin(), idle.end(), this), idle.end());
    if (timer_ != 0) reactor_.CancelTimer(timer_);
    timer_ = 0;
    // Refused at the greeting, TLS or hello: the next host may do better
    // (one smarthost: nothing else to try).
    bool retry_next = !ever_ready_ && !failure_.empty() && !site_.smarthost;
    // Opportunistic TLS that fails its handshake: the same host again in
    // plain text, as Postfix does, rather than no delivery at all.
    bool again_in_plaintext =
        retry_next &&
        (last_phase_ == Phase::kTlsHandshake ||
         (session_ != nullptr && session_->phase() == Phase::kTlsHandshake)) &&
        site_.options.tls == TlsMode::kOpportunistic && !plaintext_fallback_;
    if (!failure_.empty()) {
      if (site_.smarthost) {
        failure_ = SmarthostHint(options_.smarthost, last_phase_, failure_);
      } else if (!absl::StartsWith(failure_, hosts_[host_index_])) {
        failure_ = absl::StrCat(Peer(), ": ", failure_);
      }
      last_error_ = failure_;
    }
    if (again_in_plaintext) {
      log::Info(kLog, "site %s: %s; trying again without TLS", site_.key,
                failure_);
    }
    CloseSocket([this, retry_next, again_in_plaintext] {
      if (retry_next) {
        closing_ = false;
        failure_.clear();
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

  void CloseSocket(absl::AnyInvocable<void()> then) {
    if (timer_ != 0) reactor_.CancelTimer(timer_);
    timer_ = 0;
    if (conn_ == nullptr) return then();
    reading_ = writing_ = false;
    out_.clear();
    conn_->Close([this, then = std::move(then)]() mutable {
      conn_.reset();
      engine_.open_.fetch_sub(1, std::memory_order_relaxed);
      then();
    });
  }

  // The end: tells the site, then frees itself.
  void Gone(std::string failure = "") {
    log::Debug(kLog, "site %s: connection gone after %d messages%s%s",
               site_.key, messages_, failure.empty() ? "" : ": ", failure);
    *alive_ = false;
    CancelIdle();
    if (timer_ != 0) reactor_.CancelTimer(timer_);
    auto& idle = site_.idle;
    idle.erase(std::remove(idle.begin(), idle.end(), this), idle.end());
    DeliveryShard& engine = engine_;
    Site& site = site_;
    bool ever_ready = ever_ready_;
    // Not from inside a callback of our own connection.
    reactor_.Defer(
        [&engine, &site, this, ever_ready, failure = std::move(failure)] {
          engine.ConnectionGone(site, this, ever_ready, failure);
          delete this;
        });
  }

  DeliveryShard& engine_;
  Site& site_;
  std::shared_ptr<const DeliveryOptions> options_holder_;  // As it began.
  const DeliveryOptions& options_;
  shard::Reactor& reactor_;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
  const Source* source_ = nullptr;
  std::vector<std::string> hosts_;
  size_t host_index_ = 0;
  std::vector<dns::IpAddress> addresses_;
  size_t address_index_ = 0;
  int port_ = 25;
  std::string ip_;
  std::string last_error_;
  std::unique_ptr<shard::Connection> conn_;
  std::unique_ptr<smtp::ClientSession> session_;
  std::unique_ptr<tls::TlsSession> tls_;
  std::string tls_description_;
  bool implicit_tls_ = false;
  bool verify_ = false;
  std::unique_ptr<Job> job_;
  std::string body_;
  char buffer_[16 * 1024];
  std::string out_;
  std::string sending_;
  bool reading_ = false;
  bool writing_ = false;
  bool closing_ = false;
  bool ever_ready_ = false;
  bool waiting_for_work_ = false;
  bool connecting_counted_ = true;   // In the site's `connecting`.
  bool plaintext_fallback_ = false;  // This address, again without TLS.
  Phase last_phase_ = Phase::kGreeting;
  std::string failure_;
  int messages_ = 0;
  shard::Reactor::TimerId timer_ = 0;
  shard::Reactor::TimerId idle_timer_ = 0;

  friend class DeliveryShard;
};

// --- The shard's engine -----------------------------------------------------

DeliveryShard::DeliveryShard(shard::Reactor& reactor, EngineContext& context)
    : reactor_(reactor),
      context_(context),
      rng_(static_cast<uint64_t>(absl::ToUnixNanos(absl::Now())) +
           static_cast<uint64_t>(reactor.id())),
      retry_(context.options.retry) {
  Reload(std::make_shared<const DeliveryOptions>(context.options));
}

void DeliveryShard::Reload(std::shared_ptr<const DeliveryOptions> options) {
  options_ = std::move(options);
  retry_ = RetrySchedule(options_->retry);
  auto rules = BackoffRules::Create(options_->backoff, options_->on_421);
  if (rules.ok()) {
    backoff_ = std::make_unique<BackoffRules>(*std::move(rules));
  } else {
    log::Error(kLog, "back-off rules: %s", rules.status().message());
  }
  absl::Time now = absl::Now();
  for (auto& [key, site] : sites_) {
    SiteOptions fresh = OptionsFor(site->smarthost, site->domain, site->mx);
    if (fresh.message_rate != site->options.message_rate) {
      site->message_rate = *TokenBucket::Parse(fresh.message_rate);
    }
    if (fresh.connection_rate != site->options.connection_rate) {
      site->connection_rate = *TokenBucket::Parse(fresh.connection_rate);
    }
    site->window.SetMax(fresh.max_connections);
    bool resumed = site->options.suspended && !fresh.suspended;
    bool suspended = !site->options.suspended && fresh.suspended;
    site->options = std::move(fresh);
    if (suspended) {
      // At once: what waits is held (unattempted, its time not counted),
      // idle connections leave, busy ones finish their transaction first.
      for (auto& job : site->ready) job->held_since = now;
      std::vector<OutboundConnection*> idle = site->idle;
      for (OutboundConnection* c : idle) c->Leave();
      log::Info(kLog,
                "site %s: suspended: %d transactions held, %d connections "
                "finish the one they are sending",
                site->key, site->ready.size(), site->window.in_flight());
      ParkExcess(*site);
    }
    if (resumed) {
      for (auto& job : site->ready) {
        if (job->held_since != absl::InfinitePast()) {
          job->held += now - job->held_since;
          job->held_since = absl::InfinitePast();
        }
      }
      log::Info(kLog, "site %s: resumed: %d transactions released", site->key,
                site->ready.size());
    }
    Pump(*site);
  }
}

SiteOptions DeliveryShard::OptionsFor(
    bool smarthost, absl::string_view domain,
    const std::vector<dns::MxHost>& mx) const {
  if (!smarthost) return ResolveSite(*options_, domain, mx);
  // The smarthost is a site too: rules match its host name (mx_suffixes)
  // or, for a site of its own, the domain they name.
  return ResolveSite(*options_, domain,
                     {dns::MxHost{options_->smarthost.host, 0, false}});
}

bool DeliveryShard::HasDomainRule(absl::string_view domain) const {
  if (domain.empty()) return false;
  for (const SiteRule& r : options_->rules) {
    if (!r.domains.empty() && r.Matches(domain, {})) return true;
  }
  return false;
}

void DeliveryShard::ParkExcess(Site& site) {
  absl::Time now = absl::Now();
  int parked = 0;
  while (site.ready.size() > kMaxHeldJobs) {
    std::unique_ptr<Job> job = std::move(site.ready.back());
    site.ready.pop_back();
    absl::Duration held = job->held + kParkFor;
    if (job->held_since != absl::InfinitePast()) held += now - job->held_since;
    for (const queue::RecipientRecord& r : job->recipients) {
      Finish(r, queue::RecipientState::kDeferred, now + kParkFor,
             "451 4.4.5 delivery to this site is suspended (held)",
             job->claimed_by, /*attempted=*/false, held);
      ++parked;
    }
  }
  if (parked > 0) {
    log::Info(kLog,
              "site %s: suspended: %d more recipients wait in the queue "
              "(looked at again every %s, unattempted)",
              site.key, parked, absl::FormatDuration(kParkFor));
  }
}

DeliveryShard::~DeliveryShard() {
  for (auto& [key, site] : sites_) {
    if (site->wake != 0) reactor_.CancelTimer(site->wake);
  }
  if (poll_timer_ != 0) reactor_.CancelTimer(poll_timer_);
}

void DeliveryShard::Start() {
  poll_timer_ = reactor_.AddTimer(absl::ZeroDuration(), [this] {
    poll_timer_ = 0;
    Poll();
  });
}

void DeliveryShard::BeginDrain() {
  context_.group->SubmitTo(reactor_.id(), [this] {
    draining_ = true;
    if (poll_timer_ != 0) reactor_.CancelTimer(poll_timer_);
    poll_timer_ = 0;
    for (auto& [key, site] : sites_) {
      std::vector<OutboundConnection*> idle = site->idle;
      for (OutboundConnection* c : idle) c->Leave();
    }
  });
}

void DeliveryShard::SweepSites() {
  // Sites come and go with the mail: forget the ones quiet for a while.
  absl::Time now = absl::Now();
  if (now - last_sweep_ < absl::Minutes(1)) return;
  last_sweep_ = now;
  for (auto it = sites_.begin(); it != sites_.end();) {
    const Site& site = *it->second;
    if (site.Quiet(now) && now - site.last_used > absl::Minutes(10)) {
      sites_.erase(it++);
    } else {
      ++it;
    }
  }
}

void DeliveryShard::Poll() {
  if (draining_) return;
  SweepSites();
  int room = options_->max_pending_per_shard - outstanding();
  size_t claimed = 0;
  constexpr size_t kBatch = 2000;
  if (room > 0) {
    auto due = context_.queue->Claim(reactor_.id(), absl::Now(),
                                     std::min<size_t>(room, kBatch));
    if (!due.ok()) {
      // The queue is down (it reopens itself): say so, then wait a while
      // rather than asking (and logging) ten times a second.
      log::Warn(kLog, "shard %d: reading due recipients: %s; retrying in 5s",
                reactor_.id(), due.status().message());
      poll_timer_ = reactor_.AddTimer(absl::Seconds(5), [this] {
        poll_timer_ = 0;
        Poll();
      });
      return;
    } else {
      claimed = due->size();
      outstanding_.fetch_add(static_cast<int>(claimed),
                             std::memory_order_relaxed);
      // Recipients of one message for one domain travel together, in the
      // order they were claimed (a message's recipients are adjacent).
      std::vector<std::unique_ptr<Job>> jobs;
      absl::flat_hash_map<std::pair<queue::MessageId, std::string>, Job*>
          by_domain;
      for (queue::RecipientRecord& r : *due) {
        std::string domain = absl::AsciiStrToLower(r.domain());
        // Through a smarthost, one transaction carries every domain (but
        // those a site rule names: they are sites of their own).
        if (options_->smarthost.Covers(domain) && !HasDomainRule(domain)) {
          domain.clear();
        }
        Job*& job = by_domain[{r.message, domain}];
        if (job == nullptr) {
          jobs.push_back(std::make_unique<Job>());
          job = jobs.back().get();
          job->message = r.message;
          job->domain = std::move(domain);
          job->claimed_by = reactor_.id();
        }
        job->recipients.push_back(std::move(r));
      }
      for (auto& job : jobs) Route(std::move(job));
    }
  }
  // A full batch: there is more; look again at once.
  poll_timer_ = reactor_.AddTimer(
      claimed == kBatch ? absl::ZeroDuration() : context_.poll_interval,
      [this] {
        poll_timer_ = 0;
        Poll();
      });
}

void DeliveryShard::Route(std::unique_ptr<Job> job) {
  const DeliveryOptions& options = *options_;
  auto hand_over = [this](std::unique_ptr<Job> job, std::string key,
                          std::vector<dns::MxHost> mx, bool smarthost) {
    int owner = ShardForSite(key, context_.group->size());
    if (owner == reactor_.id()) {
      return AddToSite(std::move(job), std::move(key), std::move(mx),
                       smarthost);
    }
    struct Handover {
      std::unique_ptr<Job> job;
      std::string key;
      std::vector<dns::MxHost> mx;
      bool smarthost;
    };
    auto* h =
        new Handover{std::move(job), std::move(key), std::move(mx), smarthost};
    EngineContext* context = &context_;
    context_.group->SubmitTo(owner, [context, owner, h] {
      std::unique_ptr<Handover> own(h);
      // Looked up there: that shard made its engine before running tasks.
      context->engines[owner]->AddToSite(std::move(own->job),
                                         std::move(own->key),
                                         std::move(own->mx), own->smarthost);
    });
  };
  bool relayed = job->domain.empty() ? !options.smarthost.host.empty()
                                     : options.smarthost.Covers(job->domain);
  if (relayed) {
    std::string key = HasDomainRule(job->domain)
                          ? absl::StrCat("smarthost:domain:", job->domain)
                          : std::string("smarthost");
    if (key == "smarthost") job->domain.clear();
    return hand_over(std::move(job), std::move(key), {}, true);
  }
  if (job->domain.empty()) {
    return DeferAll(*job, "553 5.1.3 the address has no domain", true);
  }
  dns::Resolver* resolver = context_.resolver(reactor_.id());
  if (resolver == nullptr) {
    return DeferAll(*job, "451 4.4.3 no DNS resolver on this shard", false);
  }
  std::string domain = job->domain;
  resolver->Mx(
      domain, [this, job = std::move(job),
               hand_over](absl::StatusOr<std::vector<dns::MxHost>> mx) mutable {
        if (!mx.ok()) {
          const absl::Status& s = mx.status();
          if (absl::IsFailedPrecondition(s)) {
            return DeferAll(*job,
                            absl::StrCat("556 5.1.10 ", job->domain,
                                         " accepts no mail (null MX)"),
                            true);
          }
          if (dns::IsPermanent(s)) {
            return DeferAll(
                *job,
                absl::StrCat("550 5.1.2 ", job->domain, ": no such domain (",
                             s.message(), ")"),
                true);
          }
          return DeferAll(*job,
                          absl::StrCat("451 4.4.3 MX look-up for ", job->domain,
                                       " failed: ", s.message()),
                          false);
        }
        // A rule naming this domain gives it limits of its own: its own site.
        bool own_site = false;
        for (const SiteRule& r : options_->rules) {
          if (!r.domains.empty() && r.Matches(job->domain, {})) own_site = true;
        }
        std::string key =
            own_site ? absl::StrCat("domain:", job->domain) : SiteKey(*mx);
        hand_over(std::move(job), std::move(key), *std::move(mx), false);
      });
}

void DeliveryShard::AddToSite(std::unique_ptr<Job> job, std::string site_key,
                              std::vector<dns::MxHost> mx, bool smarthost) {
  auto it = sites_.find(site_key);
  if (it == sites_.end()) {
    SiteOptions options = OptionsFor(smarthost, job->domain, mx);
    auto site = std::make_unique<Site>(site_key, job->domain, std::move(mx),
                                       smarthost, std::move(options));
    if (site->options.suspended) {
      log::Info(kLog, "site %s: suspended: its mail is held", site->key);
    }
    it = sites_.emplace(site_key, std::move(site)).first;
  }
  Site& site = *it->second;
  site.last_used = absl::Now();
  if (site.options.suspended) job->held_since = site.last_used;
  // Transactions of at most recipients_per_transaction.
  size_t per = static_cast<size_t>(site.options.recipients_per_transaction);
  while (job->recipients.size() > per) {
    auto part = std::make_unique<Job>(*job);
    part->recipients.assign(job->recipients.end() - per, job->recipients.end());
    job->recipients.resize(job->recipients.size() - per);
    site.ready.push_back(std::move(part));
  }
  site.ready.push_back(std::move(job));
  if (site.options.suspended) return ParkExcess(site);
  Pump(site);
}

void DeliveryShard::Wake(Site& site, absl::Time when) {
  if (site.wake != 0) {
    if (site.wake_at <= when) return;
    reactor_.CancelTimer(site.wake);
  }
  site.wake_at = when;
  site.wake = reactor_.AddTimerAt(when, [this, &site] {
    site.wake = 0;
    site.wake_at = absl::InfiniteFuture();
    Pump(site);
  });
}

void DeliveryShard::Pump(Site& site) {
  if (draining_ || site.options.suspended) return;
  absl::Time now = absl::Now();
  if (now < site.paused_until) return Wake(site, site.paused_until);
  if (site.reduced_until != absl::InfinitePast() && now >= site.reduced_until) {
    site.message_rate.Scale(1);
    site.connection_rate.Scale(1);
    site.reduced_until = absl::InfinitePast();
    log::Info(kLog, "site %s: back to its configured rates", site.key);
  }
  // Idle connections first: no new handshake.
  while (!site.ready.empty() && !site.idle.empty()) {
    OutboundConnection* conn = site.idle.back();
    site.idle.pop_back();
    if (!GiveJob(site, conn)) {
      site.idle.push_back(conn);
      return;  // Rate-limited: GiveJob set the wake-up.
    }
  }
  int waiting = static_cast<int>(site.ready.size()) - site.connecting;
  while (waiting > 0 && site.window.TryAcquire()) {
    if (!site.connection_rate.TryTake(now)) {
      site.window.Release();
      Wake(site, site.connection_rate.NextAvailable(now));
      break;
    }
    OpenConnection(site);
    --waiting;
  }
}

void DeliveryShard::OpenConnection(Site& site) {
  ++site.connecting;
  auto* conn = new OutboundConnection(*this, site);
  conn->Begin();
}

bool DeliveryShard::GiveJob(Site& site, OutboundConnection* conn) {
  if (conn->connecting_counted_) {
    conn->connecting_counted_ = false;
    --site.connecting;
  }
  if (draining_ || site.options.suspended || site.ready.empty()) return false;
  absl::Time now = absl::Now();
  if (now < site.paused_until) {
    Wake(site, site.paused_until);
    return false;
  }
  if (!site.message_rate.TryTake(now)) {
    Wake(site, site.message_rate.NextAvailable(now));
    return false;
  }
  std::unique_ptr<Job> job = std::move(site.ready.front());
  site.ready.pop_front();
  auto message = context_.queue->Read(job->message, /*with_body=*/true);
  if (!message.ok()) {
    // A body that fails its checksum or whose spool file is gone will not
    // come back: fail it now rather than retry for days. Anything else (a
    // read error) may pass.
    bool damaged = absl::IsDataLoss(message.status());
    log::Warn(kLog, "id=%s: cannot read the message: %s",
              queue::FormatMessageId(job->message), message.status().message());
    DeferAll(*job,
             absl::StrCat(damaged ? "554 5.3.0 queued message damaged: "
                                  : "451 4.3.0 queue read: ",
                          message.status().message()),
             damaged);
    return GiveJob(site, conn);
  }
  job->received = message->envelope.received;
  conn->Send(std::move(job), std::move(message->body), message->envelope);
  return true;
}

void DeliveryShard::ConnectionGone(Site& site, OutboundConnection* conn,
                                   bool ever_ready,
                                   const std::string& failure) {
  if (conn->connecting_counted_) --site.connecting;
  site.window.Release();
  if (!failure.empty() && !ever_ready) {
    std::string why = failure;
    if (site.smarthost && !absl::StartsWith(failure, "smarthost ")) {
      why = SmarthostHint(options_->smarthost,
                          smtp::ClientSession::Phase::kGreeting, failure);
    }
    site.window.OnFailure();
    log::Warn(kLog, "site %s: %s", site.key, why);
    // No connection to this site works: what waits here is deferred
    // (Postfix's dead destination). Never bounced for a connection-level
    // refusal, even a 5xx greeting: that is how Postfix treats it too
    // (smtp_skip_5xx_greeting), and a misconfiguration loses no mail.
    if (site.window.in_flight() == 0) {
      std::deque<std::unique_ptr<Job>> ready;
      ready.swap(site.ready);
      std::string reply =
          absl::StartsWith(why, "4") ? why : absl::StrCat("451 4.4.1 ", why);
      for (auto& job : ready) DeferAll(*job, reply, false);
    }
  }
  Pump(site);
}

void DeliveryShard::ApplyBackoff(Site& site, int code, absl::string_view text) {
  if (backoff_ == nullptr) return;
  std::optional<Backoff> b = backoff_->Match(code, text);
  if (!b) return;
  absl::Time now = absl::Now();
  site.paused_until = std::max(site.paused_until, now + b->pause);
  site.reduced_until = site.paused_until + b->pause;
  site.message_rate.Scale(b->rate_factor);
  site.connection_rate.Scale(b->rate_factor);
  log::Warn(kLog, "site %s: backing off for %s at %.0f%% of its rates (%s): %s",
            site.key, absl::FormatDuration(b->pause), b->rate_factor * 100,
            b->why, text);
}

void DeliveryShard::Finish(const queue::RecipientRecord& r,
                           queue::RecipientState state, absl::Time next,
                           const std::string& reply, int claimed_by,
                           bool attempted, absl::Duration held_more) {
  queue::RecipientUpdate u;
  u.before = r;
  u.state = state;
  u.next_attempt = next;
  u.reply = reply;
  u.attempted = attempted;
  u.held_more = held_more;
  std::string id = queue::FormatMessageId(r.message);
  context_.queue->Update(std::move(u), [id, index = r.index](absl::Status s) {
    if (!s.ok()) {
      log::Error(kLog, "id=%s recipient %u: recording the outcome: %s", id,
                 index, s.message());
    }
  });
  context_.engines[claimed_by]->outstanding_.fetch_sub(
      1, std::memory_order_relaxed);
}

void DeliveryShard::Delivered(const Job& job, const queue::RecipientRecord& r,
                              const std::string& reply, const Delivery& d) {
  log::Info(kLog,
            "delivered id=%s to=<%s> host=%s[%s] tls=%s attempts=%u "
            "delay=%s reply=%s",
            queue::FormatMessageId(r.message), r.spec.address, d.host, d.ip,
            d.tls, r.attempts + 1,
            absl::FormatDuration(
                absl::Trunc(absl::Now() - job.received, absl::Milliseconds(1))),
            Quoted(reply));
  Finish(r, queue::RecipientState::kDelivered, absl::InfinitePast(), reply,
         job.claimed_by);
}

void DeliveryShard::Failed(Job& job, const queue::RecipientRecord& r,
                           const std::string& reply) {
  log::Info(kLog, "failed id=%s to=<%s> attempts=%u reply=%s",
            queue::FormatMessageId(r.message), r.spec.address, r.attempts + 1,
            Quoted(reply));
  Finish(r, queue::RecipientState::kFailed, absl::InfinitePast(), reply,
         job.claimed_by);
}

void DeliveryShard::Deferred(Job& job, const queue::RecipientRecord& r,
                             const std::string& reply) {
  if (job.received == absl::InfinitePast()) {
    auto m = context_.queue->Read(job.message, /*with_body=*/false);
    job.received = m.ok() ? m->envelope.received : absl::Now();
  }
  absl::Time now = absl::Now();
  // Time held by a suspended site is not counted toward the maximum age.
  absl::Duration held = r.held + job.held;
  std::optional<absl::Time> next =
      retry_.Next(r.attempts + 1, job.received + held, now, rng_);
  if (!next) {
    std::string why = absl::StrCat(
        "expired after ", r.attempts + 1, " attempts over ",
        absl::FormatDuration(absl::Trunc(now - job.received, absl::Minutes(1))),
        "; last: ", reply);
    log::Info(kLog, "expired id=%s to=<%s> reply=%s",
              queue::FormatMessageId(r.message), r.spec.address, Quoted(why));
    return Finish(r, queue::RecipientState::kExpired, absl::InfinitePast(), why,
                  job.claimed_by);
  }
  log::Info(kLog, "deferred id=%s to=<%s> attempts=%u next=%s reply=%s",
            queue::FormatMessageId(r.message), r.spec.address, r.attempts + 1,
            absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", *next, absl::UTCTimeZone()),
            Quoted(reply));
  Finish(r, queue::RecipientState::kDeferred, *next, reply, job.claimed_by,
         /*attempted=*/true, job.held);
}

void DeliveryShard::DeferAll(Job& job, const std::string& reply,
                             bool permanent) {
  for (const queue::RecipientRecord& r : job.recipients) {
    if (permanent) {
      Failed(job, r, reply);
    } else {
      Deferred(job, r, reply);
    }
  }
}

}  // namespace peregrine::delivery
