// OutboundConnection: one SMTP connection to a site, from DNS look-up of
// its hosts to QUIT, carrying one transaction at a time.
//
// It tries MX hosts in preference order (those that failed lately last),
// each host's IPv4 then IPv6 addresses, moving on after a connect failure
// or a 4xx/5xx greeting; it drives a sans-I/O smtp::ClientSession, with
// TLS per the site's policy (opportunistic TLS whose handshake fails is
// tried again in plain text, as Postfix does). Each recipient's reply goes
// to its host (the engine) with where it was delivered; when the host has
// no more work the connection idles, then says QUIT.
//
// Lifetime: it owns itself, on its site's shard. It ends only through
// Gone(), which clears the shared `alive_` flag, cancels its timers, leaves
// the site's idle list, and deletes it from a deferred task (never from
// inside one of its own callbacks), after telling the host. A DNS answer or
// connect completion that arrives later finds `alive_` false and does
// nothing; the stream (mta/stream) drops its socket's completions once
// closing, and its Close() completion runs after every other callback of
// that socket, so a retry on the next address never sees the old socket's.
// Timer callbacks are cancelled in Finish(), CloseSocket() and Gone(), and
// ArmTimer() does nothing once the connection is closing. The host and the
// site outlive every connection of the site.
#pragma once

#include <memory>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "absl/functional/any_invocable.h"
#include "base/reply.h"
#include "dns/resolver.h"
#include "mta/delivery/policy.h"
#include "mta/delivery/site.h"
#include "mta/outcome/outcome.h"
#include "mta/shard/connection.h"
#include "mta/shard/reactor.h"
#include "mta/smtp/client_session.h"
#include "mta/stream/stream.h"
#include "queue/types.h"
#include "tls/tls.h"

namespace peregrine::delivery {

// Where a transaction went, for its outcomes.
struct Where {
  std::string mx;
  std::string ip;
  std::string source;
  std::optional<outcome::Tls> tls;
  std::string tls_policy;  // Site::TlsPolicyLabel().
};

// What a connection needs from the engine that runs it (on its shard).
class ConnectionHost {
 public:
  virtual ~ConnectionHost() = default;
  virtual shard::Reactor& reactor() = 0;
  virtual dns::Resolver* resolver() = 0;
  virtual std::shared_ptr<const tls::ClientContext> tls() = 0;
  virtual std::string default_helo() = 0;
  // The options in force now; a connection keeps the ones it began with.
  virtual std::shared_ptr<const DeliveryOptions> options() = 0;
  virtual std::mt19937_64& rng() = 0;
  virtual bool draining() = 0;
  // The connection is ready for a transaction; false: none for it now.
  virtual bool GiveJob(Site& site, OutboundConnection* conn) = 0;
  // One recipient's reply (2xx, 4xx or 5xx; made-up ones are 451).
  virtual void Result(Site& site, Job& job, const queue::RecipientRecord& r,
                      const Reply& reply, const Where& where) = 0;
  // Socket count, for the daemon's view of open connections.
  virtual void Opened() = 0;
  virtual void Closed() = 0;
  // The end of a connection; `failure` is empty when it ended well.
  virtual void Gone(Site& site, OutboundConnection* conn, bool ever_ready,
                    const Reply& failure) = 0;
};

// Explains a smarthost failure in words an operator can act on.
std::string SmarthostHint(const Smarthost& s, smtp::ClientSession::Phase phase,
                          const std::string& failure);

class OutboundConnection : private Stream::Handler {
 public:
  OutboundConnection(ConnectionHost& host, Site& site);

  // Resolves the first host and connects.
  void Begin();
  // In kReady: sends `job`.
  void Send(std::unique_ptr<Job> job, std::shared_ptr<const std::string> body,
            const queue::Envelope& envelope);
  // Idle and waiting for work: QUIT after the reuse window.
  void Idle();
  // Leaves the site's idle list and says QUIT.
  void Leave();
  // Still counted in the site's `connecting` (never ready yet).
  bool connecting_counted = true;

 private:
  using Phase = smtp::ClientSession::Phase;

  void CancelIdle();
  void ResolveHost();
  // DANE: the TLSA records of the host tried now, then TryAddress().
  void LookUpTlsa();
  // The host tried now cannot be used: on to the next one.
  void SkipHost(Reply why);
  void NextAddress();
  void TryAddress();
  void MarkHostDown();
  std::string Peer() const;
  void Connected();
  void StartTls();
  void ArmTimer(absl::Duration d);
  bool connecting() const { return session_ == nullptr; }
  void ReadMore();
  // Stream::Handler.
  void OnData(absl::string_view plaintext) override;
  void OnEnd(int error) override;
  void OnTlsUp() override;
  void OnTlsError(const absl::Status& status, bool handshake_done, bool first,
                  absl::string_view bytes) override;
  void OnWritten(int result) override;
  bool TakeCommands();
  void Pump();
  void Result(const smtp::MessageResult& result);
  void SendPending();
  // The transport failed: what the session had pending is deferred with
  // this reason (`enhanced`: RFC 3463, e.g. "4.4.2" bad connection).
  void Broken(absl::string_view enhanced, std::string why);
  void Closed();
  void Finish();
  void CloseSocket(absl::AnyInvocable<void()> then);
  void Gone(Reply failure = {});
  Where Here() const;
  void DeferJob(const Reply& reply);

  ConnectionHost& host_;
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
  Reply last_error_;                // Of the last address tried.
  std::unique_ptr<Stream> stream_;  // To the address tried now.
  std::unique_ptr<smtp::ClientSession> session_;
  std::optional<outcome::Tls> tls_used_;
  bool implicit_tls_ = false;
  bool verify_ = false;
  // DANE for the host tried now: its usable TLSA records (TLS mandatory,
  // authenticated by them), or `dane_mandatory_` alone (TLSA records exist
  // but none is usable: TLS mandatory, unauthenticated; RFC 7672 2.2).
  std::vector<tls::Tlsa> dane_;
  bool dane_mandatory_ = false;
  std::string tlsa_name_;
  std::unique_ptr<Job> job_;
  std::shared_ptr<const std::string> body_;  // Shared with the queue's.
  bool closing_ = false;
  bool ever_ready_ = false;
  bool waiting_for_work_ = false;
  bool plaintext_fallback_ = false;  // This address, again without TLS.
  Phase last_phase_ = Phase::kGreeting;
  Reply failure_;              // code 0 and no text: none.
  bool failure_ours_ = false;  // Made here, not said by the remote.
  int messages_ = 0;
  shard::Reactor::TimerId timer_ = 0;
  shard::Reactor::TimerId idle_timer_ = 0;
};

}  // namespace peregrine::delivery
