// IoBackend: the completion-based I/O interface of one shard's reactor.
//
// Owned by one Reactor and used only from that shard's thread; created on
// that thread (io_uring rings are bound to the thread that submits). Two
// implementations: io_uring (liburing) and epoll, which emulates completions
// with readiness. MakeIoBackend(kAuto) picks io_uring and falls back to epoll
// when the kernel or a seccomp profile refuses io_uring_setup (Docker's
// default profile does).
//
// Contract, the same for both backends:
//  - Every operation completes exactly once, by calling its callback from
//    Poll(), never from inside the call that started it.
//  - Results follow the syscalls: >= 0 on success (bytes, new fd, revents),
//    -errno on failure; Recv returns 0 at end of stream.
//  - At most one read-side (Accept, Recv, PollIn) and one write-side (Send,
//    Connect, PollOut) operation may be pending per fd. Buffers must stay valid
//    until the callback has run.
//  - Close(fd) cancels what is pending (callbacks get -ECANCELED unless they
//    had already finished), closes the fd, and then runs `done`: the owner
//    frees its buffers there.
#pragma once

#include <cstddef>
#include <memory>

#include "absl/functional/any_invocable.h"
#include "absl/functional/function_ref.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "mta/shard/address.h"

namespace peregrine::shard {

using IoCallback = absl::AnyInvocable<void(int result)>;

enum class BackendKind { kAuto, kIoUring, kEpoll };

// "auto", "io_uring", "epoll".
bool ParseBackendKind(absl::string_view text, BackendKind* kind);

class IoBackend {
 public:
  virtual ~IoBackend() = default;

  virtual absl::string_view name() const = 0;

  // Result: the accepted fd (non-blocking, close-on-exec).
  virtual void Accept(int listen_fd, IoCallback done) = 0;
  // `fd` is a non-blocking socket of `to`'s family. Result: 0.
  virtual void Connect(int fd, const SocketAddress& to, IoCallback done) = 0;
  // Result: bytes read, 0 at end of stream.
  virtual void Recv(int fd, void* buf, size_t len, IoCallback done) = 0;
  // Result: bytes sent, possibly fewer than `len`. Never raises SIGPIPE.
  virtual void Send(int fd, const void* buf, size_t len, IoCallback done) = 0;
  // Completes when `fd` is readable. Result: the poll(2) revents.
  virtual void PollIn(int fd, IoCallback done) = 0;
  // Completes when `fd` is writable (a write-side operation). Result: the
  // poll(2) revents.
  virtual void PollOut(int fd, IoCallback done) = 0;
  // Cancels pending operations on `fd`, closes it, then runs `done`.
  virtual void Close(int fd, absl::AnyInvocable<void()> done) = 0;

  // Submits what was queued, waits up to `timeout` for at least one
  // completion (zero: do not wait; InfiniteDuration: wait for one), calls
  // `woke` once the wait is over and before any callback (the reactor reads
  // its clock there, so the callbacks see the time they run at, not the time
  // the sleep began), and runs the callbacks of all completions found.
  // Returns how many ran.
  virtual int Poll(absl::Duration timeout, absl::FunctionRef<void()> woke) = 0;
  int Poll(absl::Duration timeout) {
    return Poll(timeout, [] {});
  }
};

// Creates a backend for the calling thread. kAuto tries io_uring, then epoll.
absl::StatusOr<std::unique_ptr<IoBackend>> MakeIoBackend(BackendKind kind);

// Each implementation on its own, for tests and benchmarks.
absl::StatusOr<std::unique_ptr<IoBackend>> MakeUringBackend(
    unsigned entries = 4096);
absl::StatusOr<std::unique_ptr<IoBackend>> MakeEpollBackend();

}  // namespace peregrine::shard
