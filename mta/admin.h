// The admin port (listen.admin, 127.0.0.1:8025 by default): HTTP/1.1 on
// the shards' reactors. AdminApi answers one request (no I/O: testable on
// its own); AdminConnection drives one connection.
//
// Served today: GET /livez (the process answers), GET /readyz (not ready
// while draining or while the queue refuses new mail: below the free-space
// floor), GET /metrics (Prometheus text format), POST /api/v1/inject and
// /api/inject/v1 (mta/inject.h), GET /api/v1/queue/summary, suspensions
// (POST /api/v1/queue/suspend and /resume, GET /api/v1/queue/suspensions),
// GET /api/v1/status and the live status page at / (mta/status_page.h).
// Everything else is a 404 with a JSON error body; a known path with another
// method is a 405 with Allow. Queue control, webhooks and the status page come
// next.
//
// Authentication: on a listener that is not loopback every request but
// /livez and /readyz needs "Authorization: Bearer TOKEN" with a token from
// admin.tokens_file (401 otherwise); the daemon refuses to start with such
// a listener and no tokens. On loopback no token is asked.
//
// AdminConnection's lifetime: it owns itself from accept on. Finish() is
// the only way out: it cancels its timer and closes the stream; the
// stream's Close() completion, which runs after every other callback of
// the socket, deletes it, unless an answer is still owed (an injection
// whose messages are being written): then the answer's arrival deletes
// it, and drops the answer. Every callback returns at once once
// `finishing_` is set. Requests are answered one at a time: nothing more is
// read while an answer is being written, so a client that pipelines without
// reading holds at most one request and one answer. A request must arrive whole
// within kRequestTimeout of its first byte (slow headers or bodies are
// cut, 408), and an idle keep-alive connection is closed after
// kIdleTimeout.
#pragma once

#include <atomic>
#include <deque>
#include <functional>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/functional/any_invocable.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "mta/delivery/suspensions.h"
#include "mta/http/server_session.h"
#include "mta/outcome/metrics.h"
#include "mta/queue_actions.h"
#include "mta/reception.h"
#include "mta/shard/reactor.h"
#include "mta/stream/stream.h"
#include "nlohmann/json.hpp"
#include "tls/tls.h"

namespace peregrine {

struct AdminOptions {
  std::vector<std::string> tokens;  // Bearer tokens (admin.tokens_file).
  // Ready to take mail? If not, why (for /readyz).
  std::function<bool(std::string* why)> ready;
  // Metric lines the daemon knows at the moment (queue depth, connections,
  // commits), # HELP and # TYPE included.
  std::function<std::string()> gauges;
  outcome::Metrics* metrics = nullptr;
  http::Limits limits;
  // Injection: what reception uses (queue, DKIM, suppression, outcomes);
  // nullptr: injection answers 503.
  const ReceptionContext* reception = nullptr;
  size_t max_recipients = 100000;
  // Sites held through the API, and how the daemon puts a change in force
  // (every delivery shard takes the new rules); nullptr: delivery is off.
  delivery::Suspensions* suspensions = nullptr;
  std::function<void()> apply_suspensions;
  // GET /api/v1/queue/summary: counts from a scan of the queue, run on the
  // API's own thread (seconds for a million recipients), never a shard's.
  std::function<absl::StatusOr<nlohmann::json>()> summary;
  // POST /api/v1/queue/retry|bounce|delete (mta/queue_actions.h), run on
  // the API's thread; empty: delivery is off (503).
  // `cancelled` is true once the API stops (the action ends at its next
  // page).
  std::function<absl::StatusOr<QueueActionCounts>(
      QueueAction, const QueueSelection&, std::function<bool()> cancelled)>
      queue_action;
  // GET /api/v1/queue/messages/ID: one message's envelope and recipients
  // (NotFound: neither queued nor kept finished). A point read, on the shard.
  std::function<absl::StatusOr<nlohmann::json>(queue::MessageId)> message;
  // GET /api/v1/status, what the page at / shows: cheap, on the shard.
  std::function<nlohmann::json()> status;
  // Where operators' actions go as `admin` events; nullptr: nowhere.
  const outcome::Bus* outcomes = nullptr;
};

class AdminApi {
 public:
  explicit AdminApi(AdminOptions options);
  ~AdminApi();
  // Finishes the background work in progress (its answers are posted to
  // the shards, which must still exist); later work is refused (503).
  void Stop();
  using Respond = absl::AnyInvocable<void(std::string response)>;
  // Answers `request` through `respond`, on `reactor`: at once, or (an
  // injection) once its messages are on disk. `loopback`: the listener is
  // on a loopback address (no token is asked there). `client`: the peer's
  // address, for the Received field.
  void Handle(const http::Request& request, bool loopback,
              shard::Reactor& reactor, std::string client,
              Respond respond) const;
  // The synchronous routes alone (tests): an injection answers 503.
  std::string Handle(const http::Request& request, bool loopback) const;
  const http::Limits& limits() const { return options_.limits; }

 private:
  bool Authorized(const http::Request& request) const;
  // /api/v1/queue/...: suspensions.
  std::string Queue(const http::Request& request,
                    const std::string& client) const;
  // An `admin` event for an operator's action.
  void Record(std::string action, std::string target,
              const std::string& client) const;
  // The response, unless the request is an injection to run (nullopt).
  std::optional<std::string> Immediate(const http::Request& request,
                                       bool loopback,
                                       const std::string& client) const;
  // Runs `work` on the API's thread; false when kMaxBackground are
  // already waiting (the caller answers 429).
  bool Background(absl::AnyInvocable<void()> work) const;
  void WorkerMain();

  static constexpr size_t kMaxBackground = 4;
  AdminOptions options_;
  mutable absl::Mutex mu_;
  mutable std::deque<absl::AnyInvocable<void()>> work_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::thread worker_;
};

class AdminConnection : public Stream::Handler {
 public:
  static constexpr absl::Duration kRequestTimeout = absl::Seconds(30);
  static constexpr absl::Duration kIdleTimeout = absl::Seconds(60);
  static constexpr absl::Duration kLinger = absl::Seconds(2);
  static constexpr size_t kLingerBytes = 1 << 20;

  // Takes `fd`; counts itself in `open` until closed. With `tls`, HTTPS:
  // the handshake comes first (within kRequestTimeout).
  static void Start(shard::Reactor& reactor, int fd, const AdminApi& api,
                    bool loopback, std::atomic<int>& open,
                    std::shared_ptr<const tls::ServerContext> tls = nullptr);
  // On the calling shard: closes every admin connection (the daemon
  // drains; an idle keep-alive must not hold the drain up).
  static void CloseAll();

  void OnData(absl::string_view plaintext) override;
  void OnEnd(int error) override;
  void OnTlsUp() override {}
  void OnTlsError(const absl::Status&, bool, bool, absl::string_view) override;
  void OnWritten(int result) override;

 private:
  AdminConnection(shard::Reactor& reactor, int fd, const AdminApi& api,
                  bool loopback, std::atomic<int>& open);
  // Deletes the connection once its stream closed and no answer is owed.
  void MaybeDelete();
  void Serve();
  void Answer(std::string response, bool close_after);
  void Linger();
  void ArmTimer();
  void Finish();

  shard::Reactor& reactor_;
  Stream stream_;
  const AdminApi& api_;
  const bool loopback_;
  std::atomic<int>& open_;
  http::ServerSession session_;
  shard::Reactor::TimerId timer_ = 0;
  bool timer_for_request_ = false;
  bool close_after_write_ = false;
  // After an error answer: the write side is shut and what the client still
  // sends is read and dropped (up to kLingerBytes, for kLinger), so that
  // closing with unread input does not reset the connection before the
  // client read the answer.
  bool lingering_ = false;
  size_t lingered_ = 0;
  bool finishing_ = false;
  bool closed_ = false;
  // An answer is being made elsewhere (an injection's queue writes): the
  // connection stays until it arrives, even after Finish().
  bool answer_pending_ = false;
  std::string client_;
};

}  // namespace peregrine
