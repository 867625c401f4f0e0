// SmtpConnection: the connection driver of SMTP reception.
//
// Lives on the shard that accepted the connection, from accept until the
// socket is closed and no signature or queue write is pending; it deletes
// itself. It moves bytes between the socket and a sans-I/O
// smtp::ServerSession, and turns each finished message into a durable queue
// entry: the message is given a Received field, DKIM-signed once
// (dkim::SigningTable, on a Signer thread when the context has one, the
// answer posted back to this shard), routed (each recipient's site and
// owning shard) and handed to the queue; the session replies 250 only from
// the queue's completion, posted back to this shard. While a message is being
// committed the connection does not read, so a client cannot pile up input.
//
// Lifetime: the connection owns itself. Finish() is the only way out: it
// marks the connection finishing, and (once no signature, queue write or
// AUTH check is pending, whose completions would call it again) cancels the
// timers (command timeout, a held-back AUTH answer) and closes the stream
// (mta/stream: the socket, and TLS when there is any); the stream's Close()
// completion, which runs after every other callback of the socket, deletes
// the object. So every callback (the stream's read, write and TLS events,
// timers, DNS answer, signature, queue and AUTH completions) may run after
// Finish(); each one returns at once when `finishing_` is set and never
// re-arms a timer or starts I/O then.
//
// Backpressure: a client that pipelines without reading its replies gets
// no more of its input read while more than kMaxUnsentBytes of replies wait
// to be sent; the session holds its remaining commands meanwhile
// (ServerSession::blocked()). A client that never drains them is closed
// when the command timeout fires with the write still pending.
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "dkim/signing_table.h"
#include "dns/resolver.h"
#include "mta/auth.h"
#include "mta/listener.h"
#include "mta/local/local_mail.h"
#include "mta/outcome/outcome.h"
#include "mta/shard/address.h"
#include "mta/shard/connection.h"
#include "mta/signer.h"
#include "mta/smtp/server_session.h"
#include "mta/stream/stream.h"
#include "mta/transfer_header.h"
#include "queue/store.h"
#include "tls/tls.h"

namespace peregrine {

// Counts connections overall and per client address, across shards.
// Taken once per connection (accept and close), never per message, so a
// mutex is fine here.
class ConnectionLimiter {
 public:
  ConnectionLimiter(int max_total, int max_per_client)
      : max_total_(max_total), max_per_client_(max_per_client) {}
  // False (and nothing counted) when a limit is reached; `exempt` clients
  // (trusted networks) only count against the total.
  bool Acquire(const std::string& client, bool exempt);
  void Release(const std::string& client);

 private:
  const int max_total_;
  const int max_per_client_;
  absl::Mutex mu_;
  int total_ ABSL_GUARDED_BY(mu_) = 0;
  absl::flat_hash_map<std::string, int> per_client_ ABSL_GUARDED_BY(mu_);
};

// What every SMTP connection of the daemon shares; read-only once serving.
struct ReceptionContext {
  ConnectionLimiter* limiter = nullptr;
  queue::Store* queue = nullptr;
  std::function<std::shared_ptr<const dkim::SigningTable>()> dkim;
  // Where signatures are made (off the shard); nullptr: on the shard.
  Signer* signer = nullptr;
  // Checks AUTH credentials of a client (its address); `done` may run on
  // another thread, and says how much later to answer.
  std::function<void(std::string client, std::string user, std::string password,
                     absl::AnyInvocable<void(AuthAnswer)> done)>
      authenticate;
  std::function<bool()> has_users;
  // The resolver of a shard, for the client's verified PTR name (Received);
  // nullptr: none.
  std::function<dns::Resolver*(int shard)> resolver;
  // The TLS context in force (nullptr: no TLS); replaced on SIGHUP.
  std::function<std::shared_ptr<const tls::ServerContext>()> tls;
  std::vector<shard::Cidr> trusted_networks;
  std::string hostname;
  int shards = 1;
  // HTTP injection (mta/inject.h): the most rendered mail that may wait
  // for the disk at once, all requests together (admin.inject_memory).
  uint64_t inject_memory = 256 << 20;
  size_t max_message_bytes = 25 * 1024 * 1024;
  size_t max_recipients = 1000;
  absl::Duration command_timeout = absl::Minutes(5);
  // Name the authenticated user in Received (off: it is private).
  bool received_shows_auth_user = false;
  // Add a missing Message-ID and Date (RFC 6409 §8.3), per listener kind.
  bool submission_adds_missing_fields = true;
  bool relay_adds_missing_fields = false;
  bool auth_without_tls = false;
  // smtp::SessionConfig::check_recipient (the suppression list); unset:
  // none. Runs on the shard.
  std::function<std::string(absl::string_view sender,
                            absl::string_view recipient)>
      check_recipient;
  // Authenticated submission: "" when the user may send as that address
  // (MAIL FROM, and the From header's address), else why not. Unset: any.
  std::function<std::string(absl::string_view user, absl::string_view sender)>
      check_sender;
  // smtp::SessionConfig::take_message (a user's message rate); unset: none.
  std::function<std::string(absl::string_view user)> take_message;
  // Bounce domains (mta/bounce/inbox.h): mail for them is taken from any
  // client and handed to `read_bounce` instead of the queue; `done` may run
  // on another thread. Unset: none.
  std::function<bool(absl::string_view domain)> bounce_domain;
  std::function<void(std::string message, std::vector<std::string> recipients,
                     std::string client,
                     absl::AnyInvocable<void(absl::Status, std::string)> done)>
      read_bounce;
  // Own domains (mta/local/): taken from any client, their recipients
  // checked at RCPT and replaced by their aliases' targets before the
  // message is queued. nullptr: none.
  local::LocalMail* local = nullptr;
  // Where `received` and `rejected` outcomes go; nullptr: nowhere.
  const outcome::Bus* outcomes = nullptr;
};

// The shard that owns a recipient domain's site until MX rollup (delivery)
// refines it: a stable hash of the domain.
int ShardForDomain(absl::string_view domain, int shards);

class SmtpConnection : private Stream::Handler {
 public:
  // Unsent replies above which the connection stops reading.
  static constexpr size_t kMaxUnsentBytes = 256 * 1024;
  // On the implicit-TLS port a client speaks first (its TLS hello): one
  // silent this long is waiting for a plain-text greeting instead.
  static constexpr absl::Duration kFirstByteTimeout = absl::Seconds(10);

  // Takes ownership of `fd`; `open` counts live connections of the shard.
  static void Start(shard::Reactor& reactor, int fd,
                    const ReceptionContext& context, std::atomic<int>& open,
                    ListenerKind mode);
  // Drain, on the calling shard: idle connections get 421 and close now,
  // busy ones once their current message is answered.
  static void ShutdownAll();
  // At the drain timeout, on the calling shard: every connection closes now
  // (one waiting for a queue write or an AUTH check closes when it comes).
  static void CloseAll();

 private:
  SmtpConnection(shard::Reactor& reactor, int fd,
                 const shard::SocketAddress& peer,
                 const ReceptionContext& context, std::atomic<int>& open,
                 ListenerKind mode);
  void Begin();
  void ReadMore();
  void Pump();
  void SendPending();
  void Enqueue(smtp::Message message);
  // After signing (if any): `body` is the message as queued.
  // `transfer`: from another node's queue transfer (its age, tags and
  // attempts go on).
  void Queue(smtp::Message m, std::string body, absl::Time now,
             std::optional<TransferInfo> transfer = std::nullopt);
  // Hands the recipients in bounce domains to context.read_bounce; true
  // when none is left to queue (the answer then comes from there).
  bool ReadBounces(smtp::Message& m, const std::string& received);
  // Stream::Handler: each returns at once once finishing_ is set.
  void OnData(absl::string_view plaintext) override;
  void OnEnd(int error) override;
  void OnTlsUp() override;
  void OnTlsError(const absl::Status& status, bool handshake_done, bool first,
                  absl::string_view bytes) override;
  void OnWritten(int result) override;
  void Authenticate(smtp::AuthRequest request);
  void ArmTimer();
  void ArmTimer(absl::Duration timeout);
  void OnTimeout();
  // The session's refusals, as `rejected` outcomes.
  void PublishRefusals();
  // A `rejected` outcome (and its log line, by the human log consumer).
  void Rejected(Reply reply, std::string reason, std::string sender = "",
                std::string recipient = "", std::string helo = "");
  void Finish();
  void Shutdown();

  shard::Reactor& reactor_;
  Stream stream_;  // The socket, in the clear or TLS.
  shard::SocketAddress peer_;
  const ReceptionContext& context_;
  std::atomic<int>& open_;
  const ListenerKind mode_;
  const bool trusted_;  // The client is in a trusted network.
  std::shared_ptr<const tls::ServerContext> tls_context_;
  std::string tls_description_;  // Once TLS is up.
  std::optional<outcome::Tls> tls_used_;
  // The client's forward-confirmed PTR name, once known ("unknown" if none).
  std::string client_name_;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
  smtp::ServerSession session_;
  bool enqueue_pending_ = false;
  bool auth_pending_ = false;
  bool finishing_ = false;
  bool finishing_after_send_ = false;
  bool counted_ = false;    // Holds a slot of the ConnectionLimiter.
  bool got_bytes_ = false;  // The client has sent anything at all.
  shard::Reactor::TimerId timer_ = 0;
  // A failed AUTH's answer, held back by this timer; Finish() cancels it.
  shard::Reactor::TimerId auth_delay_timer_ = 0;
};

}  // namespace peregrine
