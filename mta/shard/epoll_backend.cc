// epoll implementation of IoBackend: completions emulated with readiness.
//
// Each fd is registered once, edge-triggered, for both directions. An
// operation is attempted at once when its direction is not known to be
// blocked; on EAGAIN it is parked until epoll reports the fd ready again.
// Results are never delivered inline: they wait in `ready_` for Poll().
#include <poll.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "base/log.h"
#include "mta/shard/io_backend.h"

namespace peregrine::shard {
namespace {

enum class OpKind { kNone, kAccept, kRecv, kPollIn, kSend, kConnect, kPollOut };

struct PendingOp {
  OpKind kind = OpKind::kNone;
  void* buf = nullptr;
  size_t len = 0;
  IoCallback callback;
};

struct FdState {
  bool registered = false;
  // Edge-triggered: cleared on EAGAIN, set again by an epoll event.
  bool readable = true;
  bool writable = true;
  PendingOp read;
  PendingOp write;
};

class EpollBackend final : public IoBackend {
 public:
  ~EpollBackend() override {
    if (epfd_ >= 0) ::close(epfd_);
  }

  absl::Status Init() {
    epfd_ = epoll_create1(EPOLL_CLOEXEC);
    if (epfd_ < 0) {
      return absl::UnavailableError(
          absl::StrCat("epoll_create1: ", std::strerror(errno)));
    }
    return absl::OkStatus();
  }

  absl::string_view name() const override { return "epoll"; }

  void Accept(int listen_fd, IoCallback done) override {
    StartRead(listen_fd, OpKind::kAccept, nullptr, 0, std::move(done));
  }

  void Recv(int fd, void* buf, size_t len, IoCallback done) override {
    StartRead(fd, OpKind::kRecv, buf, len, std::move(done));
  }

  void PollIn(int fd, IoCallback done) override {
    FdState& st = State(fd);
    st.read = PendingOp{OpKind::kPollIn, nullptr, 0, std::move(done)};
    // Readiness flags are guesses; ask the kernel once before parking.
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 0) > 0) {
      Complete(st.read, p.revents);
    }
  }

  void PollOut(int fd, IoCallback done) override {
    FdState& st = State(fd);
    st.write = PendingOp{OpKind::kPollOut, nullptr, 0, std::move(done)};
    pollfd p{fd, POLLOUT, 0};
    if (::poll(&p, 1, 0) > 0) Complete(st.write, p.revents);
  }

  void Send(int fd, const void* buf, size_t len, IoCallback done) override {
    FdState& st = State(fd);
    st.write =
        PendingOp{OpKind::kSend, const_cast<void*>(buf), len, std::move(done)};
    if (st.writable) TryWrite(fd, st);
  }

  void Connect(int fd, const SocketAddress& to, IoCallback done) override {
    FdState& st = State(fd);
    st.write = PendingOp{OpKind::kConnect, nullptr, 0, std::move(done)};
    if (::connect(fd, to.sockaddr_ptr(), to.length()) == 0) {
      Complete(st.write, 0);
    } else if (errno == EINPROGRESS) {
      st.writable = false;  // Parked until EPOLLOUT.
    } else {
      Complete(st.write, -errno);
    }
  }

  void Close(int fd, absl::AnyInvocable<void()> done) override {
    if (fd < static_cast<int>(fds_.size())) {
      FdState& st = fds_[fd];
      if (st.read.kind != OpKind::kNone) Complete(st.read, -ECANCELED);
      if (st.write.kind != OpKind::kNone) Complete(st.write, -ECANCELED);
      if (st.registered) epoll_ctl(epfd_, EPOLL_CTL_DEL, fd, nullptr);
      st = FdState{};
    }
    ::close(fd);
    ready_.push_back({nullptr, 0, std::move(done)});
  }

  using IoBackend::Poll;
  int Poll(absl::Duration timeout, absl::FunctionRef<void()> woke) override {
    if (!ready_.empty()) timeout = absl::ZeroDuration();
    epoll_event events[256];
    int n;
    if (timeout == absl::InfiniteDuration()) {
      n = epoll_pwait2(epfd_, events, 256, nullptr, nullptr);
    } else {
      if (timeout < absl::ZeroDuration()) timeout = absl::ZeroDuration();
      timespec ts = absl::ToTimespec(timeout);
      n = epoll_pwait2(epfd_, events, 256, &ts, nullptr);
    }
    woke();
    for (int i = 0; i < n; ++i) {
      int fd = events[i].data.fd;
      if (fd >= static_cast<int>(fds_.size())) continue;
      FdState& st = fds_[fd];
      uint32_t ev = events[i].events;
      if (ev & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) {
        st.readable = true;
        if (st.read.kind == OpKind::kPollIn) {
          Complete(st.read,
                   static_cast<int>(ev & (EPOLLIN | EPOLLHUP | EPOLLERR)));
        } else if (st.read.kind != OpKind::kNone) {
          TryRead(fd, st);
        }
      }
      if (ev & (EPOLLOUT | EPOLLHUP | EPOLLERR)) {
        st.writable = true;
        if (st.write.kind == OpKind::kPollOut) {
          Complete(st.write,
                   static_cast<int>(ev & (EPOLLOUT | EPOLLHUP | EPOLLERR)));
        } else if (st.write.kind != OpKind::kNone) {
          TryWrite(fd, st);
        }
      }
    }
    int ran = 0;
    while (!ready_.empty()) {
      batch_.clear();
      batch_.swap(ready_);
      for (Ready& r : batch_) {
        if (r.callback) {
          r.callback(r.result);
        } else {
          r.plain();
        }
        ++ran;
      }
    }
    return ran;
  }

 private:
  struct Ready {
    IoCallback callback;
    int result;
    absl::AnyInvocable<void()> plain;
  };

  FdState& State(int fd) {
    if (fd >= static_cast<int>(fds_.size())) fds_.resize(fd + 1024);
    FdState& st = fds_[fd];
    if (!st.registered) {
      epoll_event ev{};
      ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
      ev.data.fd = fd;
      if (epoll_ctl(epfd_, EPOLL_CTL_ADD, fd, &ev) == 0) st.registered = true;
    }
    return st;
  }

  void Complete(PendingOp& op, int result) {
    ready_.push_back({std::move(op.callback), result, nullptr});
    op = PendingOp{};
  }

  void StartRead(int fd, OpKind kind, void* buf, size_t len, IoCallback done) {
    FdState& st = State(fd);
    st.read = PendingOp{kind, buf, len, std::move(done)};
    if (st.readable) TryRead(fd, st);
  }

  void TryRead(int fd, FdState& st) {
    int rc;
    if (st.read.kind == OpKind::kAccept) {
      rc = accept4(fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    } else {
      rc = static_cast<int>(::recv(fd, st.read.buf, st.read.len, 0));
    }
    if (rc < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      st.readable = false;
      return;
    }
    Complete(st.read, rc < 0 ? -errno : rc);
  }

  void TryWrite(int fd, FdState& st) {
    if (st.write.kind == OpKind::kConnect) {
      int err = 0;
      socklen_t len = sizeof(err);
      getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
      if (err == EINPROGRESS || err == EALREADY) return;
      Complete(st.write, -err);
      return;
    }
    ssize_t rc = ::send(fd, st.write.buf, st.write.len, MSG_NOSIGNAL);
    if (rc < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      st.writable = false;
      return;
    }
    Complete(st.write, rc < 0 ? -errno : static_cast<int>(rc));
  }

  int epfd_ = -1;
  std::vector<FdState> fds_;
  std::vector<Ready> ready_;
  std::vector<Ready> batch_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<IoBackend>> MakeEpollBackend() {
  auto backend = std::make_unique<EpollBackend>();
  absl::Status status = backend->Init();
  if (!status.ok()) return status;
  return std::unique_ptr<IoBackend>(std::move(backend));
}

bool ParseBackendKind(absl::string_view text, BackendKind* kind) {
  if (text == "auto") {
    *kind = BackendKind::kAuto;
  } else if (text == "io_uring") {
    *kind = BackendKind::kIoUring;
  } else if (text == "epoll") {
    *kind = BackendKind::kEpoll;
  } else {
    return false;
  }
  return true;
}

absl::StatusOr<std::unique_ptr<IoBackend>> MakeIoBackend(BackendKind kind) {
  switch (kind) {
    case BackendKind::kIoUring:
      return MakeUringBackend();
    case BackendKind::kEpoll:
      return MakeEpollBackend();
    case BackendKind::kAuto: {
      auto uring = MakeUringBackend();
      if (uring.ok()) return uring;
      log::Warn("shard", "io_uring unavailable (%s); using epoll",
                uring.status().message());
      return MakeEpollBackend();
    }
  }
  return absl::InvalidArgumentError("unknown backend kind");
}

}  // namespace peregrine::shard
