#include "dns/cares_transport.h"

#include <arpa/nameser.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cerrno>
#include <mutex>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace peregrine::dns {
namespace {

absl::Status FromAres(int status, absl::string_view name, uint16_t type) {
  std::string what = absl::StrCat(name, " ", TypeName(type));
  switch (status) {
    case ARES_ETIMEOUT:
      return absl::DeadlineExceededError(
          absl::StrCat("DNS: no answer for ", what, " (timed out)"));
    case ARES_ESERVFAIL:
      return absl::UnavailableError(
          absl::StrCat("DNS: server failure (SERVFAIL) for ", what));
    case ARES_EREFUSED:
      return absl::UnavailableError(
          absl::StrCat("DNS: server refused the query for ", what));
    case ARES_ECONNREFUSED:
      return absl::UnavailableError(
          absl::StrCat("DNS: no server reachable for ", what));
    case ARES_ECANCELLED:
    case ARES_EDESTRUCTION:
      return absl::CancelledError(absl::StrCat("DNS: query cancelled: ", what));
    case ARES_ENOTFOUND:
      return absl::NotFoundError(absl::StrCat("DNS: ", what, " NXDOMAIN"));
    default:
      return absl::UnavailableError(
          absl::StrCat("DNS: ", what, ": ", ares_strerror(status)));
  }
}

ares_socket_t OpenSocket(int af, int type, int protocol, void*) {
  int fd = ::socket(af, type | SOCK_NONBLOCK | SOCK_CLOEXEC, protocol);
  return fd < 0 ? ARES_SOCKET_BAD : fd;
}
int Connect(ares_socket_t fd, const sockaddr* addr, ares_socklen_t len, void*) {
  return ::connect(fd, addr, len);
}
ares_ssize_t RecvFrom(ares_socket_t fd, void* buf, size_t len, int flags,
                      sockaddr* from, ares_socklen_t* from_len, void*) {
  return ::recvfrom(fd, buf, len, flags, from, from_len);
}
ares_ssize_t SendV(ares_socket_t fd, const iovec* iov, int n, void*) {
  return ::writev(fd, iov, n);
}

// The DNS flag day 2020 size: no fragmentation.
constexpr int kEdnsSize = 1232;

struct QueryContext {
  Transport::Done done;
  std::string name;
  uint16_t type;
};

void OnAnswer(void* arg, int status, int /*timeouts*/, unsigned char* abuf,
              int alen) {
  std::unique_ptr<QueryContext> ctx(static_cast<QueryContext*>(arg));
  // NOERROR with no data, and NXDOMAIN, come with the packet: the resolver
  // reads the SOA in it for negative caching.
  if ((status == ARES_SUCCESS || status == ARES_ENODATA ||
       status == ARES_ENOTFOUND) &&
      abuf != nullptr && alen > 0) {
    ctx->done(std::string(reinterpret_cast<char*>(abuf), alen));
    return;
  }
  ctx->done(FromAres(status, ctx->name, ctx->type));
}

}  // namespace

absl::StatusOr<std::unique_ptr<CaresTransport>> CaresTransport::Create(
    shard::Reactor& reactor, const CaresOptions& options) {
  static std::once_flag init_once;
  static int init_status = ARES_SUCCESS;
  std::call_once(init_once,
                 [] { init_status = ares_library_init(ARES_LIB_INIT_ALL); });
  if (init_status != ARES_SUCCESS) {
    return absl::InternalError(
        absl::StrCat("c-ares: ", ares_strerror(init_status)));
  }
  std::unique_ptr<CaresTransport> t(new CaresTransport(reactor));
  t->ad_ = options.ad;
  ares_options opts{};
  // STAYOPEN: keep server sockets between queries instead of a socket,
  // connect and close per query.
  opts.flags = ARES_FLAG_EDNS | ARES_FLAG_STAYOPEN;
  opts.ednspsz = kEdnsSize;
  opts.timeout = static_cast<int>(absl::ToInt64Milliseconds(options.timeout));
  opts.tries = options.tries;
  opts.sock_state_cb = &CaresTransport::OnSocketState;
  opts.sock_state_cb_data = t.get();
  int mask = ARES_OPT_FLAGS | ARES_OPT_EDNSPSZ | ARES_OPT_TIMEOUTMS |
             ARES_OPT_TRIES | ARES_OPT_SOCK_STATE_CB;
  int rc = ares_init_options(&t->channel_, &opts, mask);
  if (rc != ARES_SUCCESS) {
    return absl::InternalError(
        absl::StrCat("c-ares init: ", ares_strerror(rc)));
  }
  static const ares_socket_functions kFunctions = {
      &OpenSocket, &CaresTransport::OnClose, &Connect, &RecvFrom, &SendV};
  ares_set_socket_functions(t->channel_, &kFunctions, t.get());
  if (!options.servers.empty()) {
    std::string csv = absl::StrJoin(options.servers, ",");
    rc = ares_set_servers_ports_csv(t->channel_, csv.c_str());
    if (rc != ARES_SUCCESS) {
      return absl::InvalidArgumentError(
          absl::StrCat("DNS servers \"", csv, "\": ", ares_strerror(rc),
                       " (expected \"ip:port\" or \"[ipv6]:port\")"));
    }
  }
  return t;
}

CaresTransport::~CaresTransport() {
  *alive_ = false;
  if (timer_ != 0) reactor_.CancelTimer(timer_);
  // Completes every pending query with ARES_EDESTRUCTION and closes the
  // sockets through OnClose.
  if (channel_ != nullptr) ares_destroy(channel_);
}

void CaresTransport::Query(const std::string& name, uint16_t type, Done done) {
  auto* ctx = new QueryContext{std::move(done), name, type};
  if (!ad_) {
    ares_query(channel_, name.c_str(), ns_c_in, type, &OnAnswer, ctx);
  } else {
    // The query as ares_query makes it (recursion desired, EDNS), with AD.
    unsigned char* packet = nullptr;
    int length = 0;
    int rc = ares_create_query(name.c_str(), ns_c_in, type, 0, 1, &packet,
                               &length, kEdnsSize);
    if (rc != ARES_SUCCESS || length < 4) {
      if (packet != nullptr) ares_free_string(packet);
      OnAnswer(ctx, rc == ARES_SUCCESS ? ARES_EBADQUERY : rc, 0, nullptr, 0);
      return;
    }
    packet[3] |= 0x20;  // AD.
    ares_send(channel_, packet, length, &OnAnswer, ctx);
    ares_free_string(packet);
  }
  ResetTimer();
}

void CaresTransport::OnSocketState(void* self, ares_socket_t fd, int readable,
                                   int writable) {
  auto* t = static_cast<CaresTransport*>(self);
  auto [it, inserted] = t->sockets_.try_emplace(fd);
  if (inserted) it->second.generation = t->next_generation_++;
  it->second.want_read = readable;
  it->second.want_write = writable;
  t->Arm(fd);
}

int CaresTransport::OnClose(ares_socket_t fd, void* self) {
  auto* t = static_cast<CaresTransport*>(self);
  t->sockets_.erase(fd);
  // The backend cancels our polls on it, then closes it.
  t->reactor_.io().Close(fd, [] {});
  return 0;
}

void CaresTransport::Arm(int fd) {
  auto it = sockets_.find(fd);
  if (it == sockets_.end()) return;
  Socket& s = it->second;
  uint64_t generation = s.generation;
  if (s.want_read && !s.read_armed) {
    s.read_armed = true;
    reactor_.io().PollIn(fd, [alive = alive_, this, fd, generation](int r) {
      if (!*alive || r == -ECANCELED) return;
      OnReady(fd, generation, true);
    });
  }
  if (s.want_write && !s.write_armed) {
    s.write_armed = true;
    reactor_.io().PollOut(fd, [alive = alive_, this, fd, generation](int r) {
      if (!*alive || r == -ECANCELED) return;
      OnReady(fd, generation, false);
    });
  }
}

void CaresTransport::OnReady(int fd, uint64_t generation, bool read) {
  auto it = sockets_.find(fd);
  if (it == sockets_.end() || it->second.generation != generation) return;
  (read ? it->second.read_armed : it->second.write_armed) = false;
  ares_process_fd(channel_, read ? fd : ARES_SOCKET_BAD,
                  read ? ARES_SOCKET_BAD : fd);
  Arm(fd);  // Still wanted? Poll again.
  ResetTimer();
}

void CaresTransport::ResetTimer() {
  if (timer_ != 0) {
    reactor_.CancelTimer(timer_);
    timer_ = 0;
  }
  timeval tv;
  timeval* next = ares_timeout(channel_, nullptr, &tv);
  if (next == nullptr) return;
  absl::Duration wait = absl::DurationFromTimeval(*next);
  timer_ = reactor_.AddTimer(wait, [this] {
    timer_ = 0;
    ares_process_fd(channel_, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
    ResetTimer();
  });
}

absl::StatusOr<std::unique_ptr<CachingResolver>> MakeCaresResolver(
    shard::Reactor& reactor, const CaresOptions& cares,
    CachingResolverOptions cache) {
  auto transport = CaresTransport::Create(reactor, cares);
  if (!transport.ok()) return transport.status();
  return std::make_unique<CachingResolver>(
      *std::move(transport), [] { return absl::Now(); },
      [&reactor](absl::AnyInvocable<void()> fn) {
        reactor.Defer(std::move(fn));
      },
      cache);
}

}  // namespace peregrine::dns
