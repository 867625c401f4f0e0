// io_uring implementation of IoBackend (liburing).
//
// Each operation is an Op from a free list; its address is the SQE's
// user_data. Submission is batched: SQEs accumulate while callbacks run and
// go to the kernel in one io_uring_enter per Poll(). The ring is created
// with SINGLE_ISSUER | DEFER_TASKRUN when the kernel has them (6.1+), so
// completion work runs in our own thread when we ask for events, not as
// interrupts; older kernels get a plain ring.
#include <liburing.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "mta/shard/io_backend.h"

namespace peregrine::shard {
namespace {

// user_data of SQEs whose completions carry nothing to deliver (cancels).
constexpr uint64_t kIgnoredUserData = 0;

class UringBackend final : public IoBackend {
 public:
  UringBackend() = default;
  ~UringBackend() override {
    for (Op* op : all_ops_) delete op;
    // Only a ring that was set up: exiting a zeroed one closes fd 0, which
    // by then belongs to someone else.
    if (ring_ready_) io_uring_queue_exit(&ring_);
  }

  absl::Status Init(unsigned entries) {
    io_uring_params params{};
    // TASKRUN_FLAG makes the kernel say in shared memory when completion
    // work waits, so a non-blocking Poll() with nothing to submit can skip
    // the io_uring_enter syscall.
    params.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN |
                   IORING_SETUP_TASKRUN_FLAG;
    int rc = io_uring_queue_init_params(entries, &ring_, &params);
    if (rc == -EINVAL) {
      // Kernels before 6.1 lack these flags; a plain ring works everywhere.
      params = io_uring_params{};
      rc = io_uring_queue_init_params(entries, &ring_, &params);
    }
    taskrun_flag_ = params.flags & IORING_SETUP_TASKRUN_FLAG;
    if (rc < 0) {
      return absl::UnavailableError(
          absl::StrCat("io_uring_queue_init: ", std::strerror(-rc)));
    }
    ring_ready_ = true;
    if (!(params.features & IORING_FEAT_EXT_ARG)) {
      return absl::UnavailableError(
          "io_uring lacks IORING_FEAT_EXT_ARG (kernel 5.11+ needed)");
    }
    return absl::OkStatus();
  }

  absl::string_view name() const override { return "io_uring"; }

  void Accept(int listen_fd, IoCallback done) override {
    Op* op = NewOp(listen_fd, std::move(done));
    io_uring_prep_accept(Sqe(op), listen_fd, nullptr, nullptr,
                         SOCK_NONBLOCK | SOCK_CLOEXEC);
  }

  void Connect(int fd, const SocketAddress& to, IoCallback done) override {
    Op* op = NewOp(fd, std::move(done));
    op->address = to;  // The kernel reads it at submission; keep it alive.
    io_uring_prep_connect(Sqe(op), fd, op->address.sockaddr_ptr(),
                          op->address.length());
  }

  void Recv(int fd, void* buf, size_t len, IoCallback done) override {
    Op* op = NewOp(fd, std::move(done));
    io_uring_prep_recv(Sqe(op), fd, buf, len, 0);
  }

  void Send(int fd, const void* buf, size_t len, IoCallback done) override {
    Op* op = NewOp(fd, std::move(done));
    io_uring_prep_send(Sqe(op), fd, buf, len, MSG_NOSIGNAL);
  }

  void PollIn(int fd, IoCallback done) override {
    Op* op = NewOp(fd, std::move(done));
    io_uring_prep_poll_add(Sqe(op), fd, POLLIN);
  }

  void PollOut(int fd, IoCallback done) override {
    Op* op = NewOp(fd, std::move(done));
    io_uring_prep_poll_add(Sqe(op), fd, POLLOUT);
  }

  void Close(int fd, absl::AnyInvocable<void()> done) override {
    if (Pending(fd) == 0) {
      ::close(fd);
      deferred_.push_back(std::move(done));
      return;
    }
    closing_[fd] = std::move(done);
    io_uring_sqe* sqe = RawSqe();
    io_uring_prep_cancel_fd(sqe, fd, IORING_ASYNC_CANCEL_ALL);
    io_uring_sqe_set_data64(sqe, kIgnoredUserData);
  }

  using IoBackend::Poll;
  int Poll(absl::Duration timeout, absl::FunctionRef<void()> woke) override {
    if (!deferred_.empty()) timeout = absl::ZeroDuration();
    if (timeout == absl::ZeroDuration()) {
      if (!taskrun_flag_ || io_uring_sq_ready(&ring_) > 0 ||
          (IO_URING_READ_ONCE(*ring_.sq.kflags) & IORING_SQ_TASKRUN)) {
        io_uring_submit_and_get_events(&ring_);
      }
    } else {
      io_uring_cqe* cqe = nullptr;
      if (timeout == absl::InfiniteDuration()) {
        io_uring_submit_and_wait_timeout(&ring_, &cqe, 1, nullptr, nullptr);
      } else {
        __kernel_timespec ts = ToTimespec(timeout);
        io_uring_submit_and_wait_timeout(&ring_, &cqe, 1, &ts, nullptr);
      }
    }
    woke();
    // Collect first, then run: callbacks queue new SQEs and may free fds.
    completions_.clear();
    unsigned head;
    io_uring_cqe* cqe;
    unsigned seen = 0;
    io_uring_for_each_cqe(&ring_, head, cqe) {
      ++seen;
      if (cqe->user_data == kIgnoredUserData) continue;
      completions_.push_back(
          {reinterpret_cast<Op*>(io_uring_cqe_get_data(cqe)), cqe->res});
    }
    io_uring_cq_advance(&ring_, seen);

    int ran = 0;
    for (auto& [op, res] : completions_) {
      IoCallback cb = std::move(op->callback);
      int fd = op->fd;
      FreeOp(op);
      cb(res);
      ++ran;
      if (--pending_[fd] == 0) MaybeFinishClose(fd);
    }
    ran += RunDeferred();
    return ran;
  }

 private:
  struct Op {
    IoCallback callback;
    int fd = -1;
    SocketAddress address;
    Op* next_free = nullptr;
  };

  static __kernel_timespec ToTimespec(absl::Duration d) {
    if (d < absl::ZeroDuration()) d = absl::ZeroDuration();
    timespec ts = absl::ToTimespec(d);
    __kernel_timespec out;
    out.tv_sec = ts.tv_sec;
    out.tv_nsec = ts.tv_nsec;
    return out;
  }

  int Pending(int fd) const {
    return fd < static_cast<int>(pending_.size()) ? pending_[fd] : 0;
  }

  Op* NewOp(int fd, IoCallback cb) {
    Op* op = free_ops_;
    if (op != nullptr) {
      free_ops_ = op->next_free;
    } else {
      op = new Op;
      all_ops_.push_back(op);
    }
    op->callback = std::move(cb);
    op->fd = fd;
    if (fd >= static_cast<int>(pending_.size())) pending_.resize(fd + 1024, 0);
    ++pending_[fd];
    return op;
  }

  void FreeOp(Op* op) {
    op->next_free = free_ops_;
    free_ops_ = op;
  }

  io_uring_sqe* RawSqe() {
    io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
    while (sqe == nullptr) {
      // The submission queue is full: hand it to the kernel and retry.
      io_uring_submit(&ring_);
      sqe = io_uring_get_sqe(&ring_);
    }
    return sqe;
  }

  io_uring_sqe* Sqe(Op* op) {
    io_uring_sqe* sqe = RawSqe();
    io_uring_sqe_set_data(sqe, op);
    return sqe;
  }

  void MaybeFinishClose(int fd) {
    auto it = closing_.find(fd);
    if (it == closing_.end()) return;
    ::close(fd);
    deferred_.push_back(std::move(it->second));
    closing_.erase(it);
  }

  int RunDeferred() {
    int ran = 0;
    while (!deferred_.empty()) {
      std::vector<absl::AnyInvocable<void()>> batch;
      batch.swap(deferred_);
      for (auto& fn : batch) {
        fn();
        ++ran;
      }
    }
    return ran;
  }

  io_uring ring_{};
  bool ring_ready_ = false;
  bool taskrun_flag_ = false;
  Op* free_ops_ = nullptr;
  std::vector<Op*> all_ops_;
  std::vector<int> pending_;  // Pending operations per fd.
  absl::flat_hash_map<int, absl::AnyInvocable<void()>> closing_;
  std::vector<absl::AnyInvocable<void()>> deferred_;
  std::vector<std::pair<Op*, int>> completions_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<IoBackend>> MakeUringBackend(unsigned entries) {
  auto backend = std::make_unique<UringBackend>();
  absl::Status status = backend->Init(entries);
  if (!status.ok()) return status;
  return std::unique_ptr<IoBackend>(std::move(backend));
}

}  // namespace peregrine::shard
