#include "mta/admin.h"

#include <openssl/crypto.h>
#include <sys/socket.h>

#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/strip.h"
#include "base/log.h"
#include "mta/inject.h"
#include "mta/shard/socket.h"
#include "mta/status_page.h"
#include "nlohmann/json.hpp"

namespace peregrine {
namespace {

constexpr const char* kLog = "admin";

// This shard's connections, for CloseAll().
thread_local absl::flat_hash_set<AdminConnection*> live_connections;

std::string Json(int status, const nlohmann::json& j, bool keep_alive,
                 absl::string_view extra = "") {
  std::string body =
      j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  body += '\n';
  return http::Response(status, "application/json", body, keep_alive, extra);
}

// GET's answer without its body, for HEAD.
std::string HeadOf(std::string response) {
  size_t end = response.find("\r\n\r\n");
  if (end != std::string::npos) response.resize(end + 4);
  return response;
}

struct Route {
  const char* path;
  bool open;  // Served without a token on any listener.
  bool post;  // POST; else GET and HEAD.
};
// The page at / holds no data (it fetches /api/v1/status, which needs the
// token): open, so that a browser can load it off loopback.
constexpr Route kRoutes[] = {{"/", true, false},
                             {"/livez", true, false},
                             {"/readyz", true, false},
                             {"/metrics", false, false},
                             {"/api/v1/inject", false, true},
                             {"/api/inject/v1", false, true},
                             {"/api/v1/queue/suspensions", false, false},
                             {"/api/v1/queue/summary", false, false},
                             {"/api/v1/status", false, false},
                             {"/api/v1/queue/suspend", false, true},
                             {"/api/v1/queue/resume", false, true},
                             {"/api/v1/queue/retry", false, true},
                             {"/api/v1/queue/bounce", false, true},
                             {"/api/v1/queue/delete", false, true},
                             {"/api/v1/queue/transfer", false, true}};
// GET /api/v1/queue/messages/ID.
constexpr absl::string_view kMessagePrefix = "/api/v1/queue/messages/";
constexpr Route kMessageRoute = {"/api/v1/queue/messages/", false, false};

bool IsInject(absl::string_view path) {
  return path == "/api/v1/inject" || path == "/api/inject/v1";
}

std::optional<QueueAction> ActionOf(absl::string_view path) {
  if (path == "/api/v1/queue/retry") return QueueAction::kRetry;
  if (path == "/api/v1/queue/bounce") return QueueAction::kBounce;
  if (path == "/api/v1/queue/delete") return QueueAction::kDelete;
  if (path == "/api/v1/queue/transfer") return QueueAction::kTransfer;
  return std::nullopt;
}

bool IsAsync(absl::string_view path) {
  return IsInject(path) || path == "/api/v1/queue/summary" ||
         ActionOf(path).has_value();
}

}  // namespace

AdminApi::AdminApi(AdminOptions options) : options_(std::move(options)) {
  worker_ = std::thread([this] { WorkerMain(); });
}

AdminApi::~AdminApi() { Stop(); }

void AdminApi::Stop() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  if (worker_.joinable()) worker_.join();
}

bool AdminApi::Background(absl::AnyInvocable<void()> work) const {
  absl::MutexLock lock(&mu_);
  if (stopping_ || work_.size() >= kMaxBackground) return false;
  work_.push_back(std::move(work));
  return true;
}

void AdminApi::WorkerMain() {
  while (true) {
    absl::AnyInvocable<void()> work;
    {
      absl::MutexLock lock(&mu_);
      mu_.Await(absl::Condition(
          +[](AdminApi* api) ABSL_NO_THREAD_SAFETY_ANALYSIS {
            return api->stopping_ || !api->work_.empty();
          },
          this));
      if (work_.empty()) return;  // Stopping, nothing left.
      work = std::move(work_.front());
      work_.pop_front();
    }
    work();
  }
}

bool AdminApi::Authorized(const http::Request& r) const {
  auto header = r.Header("Authorization");
  if (!header) return false;
  absl::string_view value = *header;
  if (!absl::ConsumePrefix(&value, "Bearer ") &&
      !absl::ConsumePrefix(&value, "bearer ")) {
    return false;
  }
  value = absl::StripAsciiWhitespace(value);
  bool match = false;
  for (const std::string& token : options_.tokens) {
    // Constant time for tokens of the same length.
    if (token.size() == value.size() &&
        CRYPTO_memcmp(token.data(), value.data(), token.size()) == 0) {
      match = true;
    }
  }
  return match;
}

std::string AdminApi::Handle(const http::Request& r, bool loopback) const {
  std::optional<std::string> now = Immediate(r, loopback, "");
  if (now) return *now;
  return http::JsonError(503, "injection needs the running daemon",
                         r.keep_alive);
}

void AdminApi::Handle(const http::Request& r, bool loopback,
                      shard::Reactor& reactor, std::string client,
                      Respond respond) const {
  std::optional<std::string> now = Immediate(r, loopback, client);
  if (now) return respond(*std::move(now));
  const bool keep = r.keep_alive;
  // Work that scans the queue runs on the API's thread; its answer is
  // posted back to this shard.
  auto later = [this, &reactor, keep, head = r.method == "HEAD"](
                   Respond respond, absl::AnyInvocable<std::string()> work) {
    auto shared = std::make_shared<Respond>(std::move(respond));
    bool taken =
        Background([&reactor, shared, head, work = std::move(work)]() mutable {
          std::string response = work();
          if (head) response = HeadOf(std::move(response));
          reactor.Post([shared, response = std::move(response)]() mutable {
            (*shared)(std::move(response));
          });
        });
    if (!taken) {
      (*shared)(http::JsonError(
          429,
          "the queue is being scanned for other requests; try again in a "
          "moment",
          keep));
    }
  };
  if (r.path == "/api/v1/queue/summary") {
    if (!options_.summary) {
      return respond(http::JsonError(503, "no queue in this daemon", keep));
    }
    return later(std::move(respond), [this, keep] {
      absl::StatusOr<nlohmann::json> summary = options_.summary();
      return summary.ok()
                 ? Json(200, *summary, keep)
                 : http::JsonError(500, summary.status().message(), keep);
    });
  }
  if (std::optional<QueueAction> action = ActionOf(r.path)) {
    if (!options_.queue_action) {
      return respond(
          http::JsonError(503, "delivery is off in this daemon", keep));
    }
    nlohmann::json body = nlohmann::json::parse(r.body, nullptr, false);
    absl::StatusOr<QueueSelection> selection =
        body.is_discarded() ? absl::InvalidArgumentError(
                                  "the body is not JSON: name the mail, like "
                                  "{\"campaign\": \"spring\"}")
                            : QueueSelection::FromJson(body);
    if (!selection.ok()) {
      return respond(http::JsonError(400, selection.status().message(), keep));
    }
    return later(
        std::move(respond), [this, keep, action = *action,
                             selection = *std::move(selection), client] {
          absl::StatusOr<QueueActionCounts> counts =
              options_.queue_action(action, selection, [this] {
                absl::MutexLock lock(&mu_);
                return stopping_;
              });
          if (!counts.ok()) {
            return http::JsonError(500, counts.status().message(), keep);
          }
          std::string target = selection.ToString();
          Record(absl::StrFormat("%s %s: %d recipients done, %d in flight",
                                 QueueActionName(action), target, counts->done,
                                 counts->in_flight),
                 target, client);
          return Json(200,
                      {{"action", QueueActionName(action)},
                       {"selection", target},
                       {"matched", counts->matched},
                       {"done", counts->done},
                       {"in_flight", counts->in_flight},
                       {"kept", counts->kept},
                       {"error", counts->error},
                       {"stopped", counts->cancelled}},
                      keep);
        });
  }
  if (options_.reception == nullptr || options_.reception->queue == nullptr) {
    return respond(
        http::JsonError(503, "injection is off in this daemon", keep));
  }
  if (!options_.reception->queue->AcceptingNewMail()) {
    return respond(http::JsonError(
        503,
        "the queue takes no new mail: the disk is below queue.min_free "
        "(see the log); try again later",
        keep));
  }
  auto request = ParseInjectRequest(r.body, options_.max_recipients);
  if (!request.ok()) {
    return respond(http::JsonError(400, request.status().message(), keep));
  }
  Inject(*options_.reception, reactor, *std::move(request), std::move(client),
         [respond = std::move(respond), keep](int status,
                                              std::string body) mutable {
           respond(http::Response(status, "application/json", body, keep));
         });
}

std::optional<std::string> AdminApi::Immediate(
    const http::Request& r, bool loopback, const std::string& client) const {
  const bool keep = r.keep_alive;
  const Route* route = nullptr;
  for (const Route& candidate : kRoutes) {
    if (r.path == candidate.path) route = &candidate;
  }
  if (absl::StartsWith(r.path, kMessagePrefix)) route = &kMessageRoute;
  if (route == nullptr) {
    return http::JsonError(
        404,
        absl::StrCat("no such endpoint: ", r.path,
                     " (served: /, /livez, /readyz, /metrics, /api/v1/status, "
                     "POST "
                     "/api/v1/inject, /api/v1/queue/suspend, "
                     "/api/v1/queue/resume, /api/v1/queue/retry, "
                     "/api/v1/queue/bounce, /api/v1/queue/delete, GET "
                     "/api/v1/queue/summary, /api/v1/queue/suspensions, "
                     "/api/v1/queue/messages/ID)"),
        keep);
  }
  const bool method_ok = route->post
                             ? r.method == "POST"
                             : (r.method == "GET" || r.method == "HEAD");
  if (!method_ok) {
    absl::string_view allowed = route->post ? "POST" : "GET, HEAD";
    return http::JsonError(
        405,
        absl::StrCat(r.method, " is not served on ", r.path, "; use ", allowed),
        keep, absl::StrCat("Allow: ", allowed, "\r\n"));
  }
  if (!route->open && !loopback && !Authorized(r)) {
    return http::JsonError(
        401,
        "this listener needs \"Authorization: Bearer TOKEN\" with a token "
        "from admin.tokens_file",
        keep, "WWW-Authenticate: Bearer realm=\"peregrine\"\r\n");
  }
  if (IsAsync(r.path)) return std::nullopt;
  if (route == &kMessageRoute) {
    absl::string_view text = r.path;
    text.remove_prefix(kMessagePrefix.size());
    queue::MessageId id = 0;
    std::string response;
    if (!queue::ParseMessageId(text, &id) || id == 0) {
      response = http::JsonError(
          400,
          absl::StrCat("not a queue id: \"", text,
                       "\" (16 hex digits, as the event log prints it)"),
          keep);
    } else if (!options_.message) {
      response = http::JsonError(503, "no queue in this daemon", keep);
    } else {
      absl::StatusOr<nlohmann::json> m = options_.message(id);
      response = m.ok() ? Json(200, *m, keep)
                 : absl::IsNotFound(m.status())
                     ? http::JsonError(
                           404,
                           absl::StrCat("no message ", text,
                                        " in the queue (nor a record of it "
                                        "finished within queue.keep_finished)"),
                           keep)
                     : http::JsonError(500, m.status().message(), keep);
    }
    return r.method == "HEAD" ? HeadOf(std::move(response)) : response;
  }
  if (absl::StartsWith(r.path, "/api/v1/queue/")) return Queue(r, client);
  std::string response;
  if (r.path == "/livez") {
    response = Json(200, {{"status", "live"}}, keep);
  } else if (r.path == "/readyz") {
    std::string why;
    if (!options_.ready || options_.ready(&why)) {
      response = Json(200, {{"status", "ready"}}, keep);
    } else {
      response = Json(503, {{"status", "not ready"}, {"reason", why}}, keep);
    }
  } else if (r.path == "/metrics") {
    std::string extra = options_.gauges ? options_.gauges() : "";
    response = http::Response(
        200, "text/plain; version=0.0.4; charset=utf-8",
        options_.metrics != nullptr ? options_.metrics->Render(extra) : extra,
        keep);
  } else if (r.path == "/api/v1/status") {
    response =
        Json(200, options_.status ? options_.status() : nlohmann::json(), keep);
  } else {
    response =
        http::Response(200, "text/html; charset=utf-8", kStatusPageHtml, keep,
                       "Cache-Control: no-store\r\n"
                       "Content-Security-Policy: default-src 'self'; "
                       "script-src 'unsafe-inline'; style-src "
                       "'unsafe-inline'\r\n");
  }
  return r.method == "HEAD" ? HeadOf(std::move(response)) : response;
}

void AdminApi::Record(std::string action, std::string target,
                      const std::string& client) const {
  if (options_.outcomes == nullptr) {
    log::Info(kLog, "%s (from %s)", action, client);
    return;
  }
  outcome::Outcome o;
  o.kind = outcome::Kind::kAdmin;
  o.time = absl::Now();
  o.shard = -1;
  o.reason = std::move(action);
  o.site = std::move(target);
  o.client = client;
  o.listener = "admin";
  options_.outcomes->Publish(o);
}

std::string AdminApi::Queue(const http::Request& r,
                            const std::string& client) const {
  const bool keep = r.keep_alive;
  if (options_.suspensions == nullptr) {
    return http::JsonError(503, "delivery is off in this daemon", keep);
  }
  if (r.path == "/api/v1/queue/suspensions") {
    nlohmann::json list = nlohmann::json::array();
    for (const delivery::Suspension& s : options_.suspensions->List()) {
      list.push_back(delivery::Suspensions::ToJson(s));
    }
    return Json(200, {{"suspensions", list}}, keep);
  }
  nlohmann::json body = nlohmann::json::parse(r.body, nullptr, false);
  if (body.is_discarded() || !body.is_object()) {
    return http::JsonError(
        400,
        "the body must be a JSON object: {\"domain\": \"example.com\"}, "
        "{\"mx_suffix\": \".outlook.com\"}, {\"campaign\": \"spring\"} or "
        "{\"tenant\": \"acme\"}",
        keep);
  }
  auto text = [&body](const char* key) -> std::string {
    auto it = body.find(key);
    return it != body.end() && it->is_string() ? it->get<std::string>() : "";
  };
  delivery::Suspension s;
  s.domain = text("domain");
  s.mx_suffix = text("mx_suffix");
  s.campaign = text("campaign");
  s.tenant = text("tenant");
  if (std::string id = text("id"); !id.empty()) {
    if (!queue::ParseMessageId(id, &s.id) || s.id == 0) {
      return http::JsonError(
          400,
          absl::StrCat("id: not a queue id: \"", id,
                       "\" (16 hex digits, as the event log prints it)"),
          keep);
    }
  }
  if (r.path == "/api/v1/queue/resume") {
    auto removed = options_.suspensions->Remove(s);
    if (!removed.ok()) {
      return http::JsonError(500, removed.status().message(), keep);
    }
    if (!*removed) {
      return http::JsonError(
          404, "no such suspension (GET /api/v1/queue/suspensions lists them)",
          keep);
    }
    std::string target = delivery::Suspensions::Target(s);
    Record(absl::StrCat("resume ", target), target, client);
    if (options_.apply_suspensions) options_.apply_suspensions();
    return Json(200, {{"resumed", true}}, keep);
  }
  s.reason = text("reason");
  s.since = absl::Now();
  if (std::string d = text("duration"); !d.empty()) {
    absl::Duration duration;
    if (!absl::ParseDuration(d, &duration) ||
        duration <= absl::ZeroDuration()) {
      return http::JsonError(400,
                             absl::StrCat("duration: not a positive duration: ",
                                          d, " (like \"90m\" or \"2h\")"),
                             keep);
    }
    s.until = s.since + duration;
  }
  if (absl::Status added = options_.suspensions->Add(s); !added.ok()) {
    return http::JsonError(
        added.code() == absl::StatusCode::kInvalidArgument ? 400 : 500,
        added.message(), keep);
  }
  std::string target = delivery::Suspensions::Target(s);
  Record(absl::StrCat(
             "suspend ", target,
             s.until == absl::InfiniteFuture()
                 ? std::string(" until resumed")
                 : absl::StrCat(" until ",
                                absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", s.until,
                                                 absl::UTCTimeZone())),
             s.reason.empty() ? "" : ": ", s.reason),
         target, client);
  if (options_.apply_suspensions) options_.apply_suspensions();
  return Json(200, {{"suspended", delivery::Suspensions::ToJson(s)}}, keep);
}

void AdminConnection::Start(shard::Reactor& reactor, int fd,
                            const AdminApi& api, bool loopback,
                            std::atomic<int>& open,
                            std::shared_ptr<const tls::ServerContext> tls) {
  auto* c = new AdminConnection(reactor, fd, api, loopback, open);
  if (tls != nullptr) c->stream_.StartTlsServer(std::move(tls));
  c->ArmTimer();
  c->stream_.Read();
}

AdminConnection::AdminConnection(shard::Reactor& reactor, int fd,
                                 const AdminApi& api, bool loopback,
                                 std::atomic<int>& open)
    : reactor_(reactor),
      stream_(reactor, fd, *this),
      api_(api),
      loopback_(loopback),
      open_(open),
      session_(api.limits()) {
  open_.fetch_add(1, std::memory_order_relaxed);
  live_connections.insert(this);
  auto peer = shard::PeerAddress(fd);
  client_ = peer.ok() ? peer->HostString() : "unknown";
}

void AdminConnection::CloseAll() {
  std::vector<AdminConnection*> all(live_connections.begin(),
                                    live_connections.end());
  for (AdminConnection* c : all) c->Finish();
}

void AdminConnection::ArmTimer() {
  if (finishing_) return;
  const bool for_request = session_.in_request();
  // A request in progress keeps the deadline of its first byte.
  if (timer_ != 0 && for_request && timer_for_request_) return;
  if (timer_ != 0) reactor_.CancelTimer(timer_);
  timer_for_request_ = for_request;
  timer_ =
      reactor_.AddTimer(for_request ? kRequestTimeout : kIdleTimeout, [this] {
        timer_ = 0;
        if (finishing_) return;
        // An injection takes as long as its queue writes do.
        if (answer_pending_) return ArmTimer();
        if (timer_for_request_ && !stream_.writing()) {
          Answer(http::JsonError(408, "the request took too long to arrive",
                                 false),
                 true);
          // Closed when written, or by the idle timer if never.
          timer_ = reactor_.AddTimer(absl::Seconds(5), [this] {
            timer_ = 0;
            Finish();
          });
          return;
        }
        Finish();
      });
}

void AdminConnection::OnData(absl::string_view bytes) {
  if (finishing_) return;
  if (lingering_) {
    lingered_ += bytes.size();
    if (lingered_ > kLingerBytes) return Finish();
    stream_.Read();
    return;
  }
  // TLS: the stream queued its handshake answers; they go first.
  if (stream_.unsent() > 0 && !stream_.writing()) stream_.Flush();
  session_.Feed(bytes);
  Serve();
}

void AdminConnection::Serve() {
  if (finishing_ || answer_pending_ || stream_.writing() ||
      close_after_write_) {
    return;
  }
  if (session_.error() != 0) {
    log::Info(kLog, "refused a request: %d %s", session_.error(),
              session_.error_text());
    Answer(http::JsonError(session_.error(), session_.error_text(), false),
           true);
    return;
  }
  if (auto request = session_.Next()) {
    const bool close_after = !request->keep_alive;
    answer_pending_ = true;
    api_.Handle(*request, loopback_, reactor_, client_,
                [this, close_after](std::string response) {
                  answer_pending_ = false;
                  if (finishing_) return MaybeDelete();  // The client left.
                  Answer(std::move(response), close_after);
                });
    return;
  }
  ArmTimer();
  if (!stream_.reading()) stream_.Read();
}

void AdminConnection::Answer(std::string response, bool close_after) {
  close_after_write_ = close_after;
  if (!stream_.Send(response).ok()) return Finish();
  stream_.Flush();
}

void AdminConnection::OnWritten(int result) {
  if (finishing_) return;
  if (result < 0) return Finish();
  if (close_after_write_) {
    if (stream_.writing() || stream_.unsent() > 0) return;
    // Answered and done. After an error the client may still be sending.
    if (session_.error() != 0 && !stream_.tls_up()) return Linger();
    return Finish();
  }
  if (stream_.writing() || stream_.unsent() > 0) return;
  // The next pipelined request, if one was sent ahead.
  session_.Feed("");
  Serve();
}

void AdminConnection::Linger() {
  lingering_ = true;
  ::shutdown(stream_.fd(), SHUT_WR);
  if (timer_ != 0) reactor_.CancelTimer(timer_);
  timer_ = reactor_.AddTimer(kLinger, [this] {
    timer_ = 0;
    Finish();
  });
  if (!stream_.reading()) stream_.Read();
}

void AdminConnection::OnEnd(int) {
  if (finishing_) return;
  Finish();
}

void AdminConnection::OnTlsError(const absl::Status&, bool, bool,
                                 absl::string_view) {
  Finish();
}

void AdminConnection::Finish() {
  if (finishing_) return;
  finishing_ = true;
  live_connections.erase(this);
  if (timer_ != 0) {
    reactor_.CancelTimer(timer_);
    timer_ = 0;
  }
  stream_.Close([this] {
    closed_ = true;
    MaybeDelete();
  });
}

void AdminConnection::MaybeDelete() {
  if (!closed_ || answer_pending_) return;
  open_.fetch_sub(1, std::memory_order_relaxed);
  delete this;
}

}  // namespace peregrine
