// Connection: a connected socket owned by one shard.
//
// Lives on its shard's thread from accept (or connect) until the `done` of
// Close() has run; the owner frees it there, never earlier, because the
// backend may still hold its buffers. At most one Read and one WriteAll are
// in flight at a time. Protocol code never sees this class: a connection
// driver moves bytes between it and a sans-I/O session.
#pragma once

#include <cstddef>

#include "absl/functional/any_invocable.h"
#include "mta/shard/io_backend.h"
#include "mta/shard/reactor.h"

namespace peregrine::shard {

class Connection {
 public:
  Connection(Reactor& reactor, int fd) : reactor_(reactor), fd_(fd) {}
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  int fd() const { return fd_; }
  Reactor& reactor() { return reactor_; }
  bool closing() const { return closing_; }

  // One recv: done(bytes), done(0) at end of stream, done(-errno).
  void Read(void* buf, size_t len, IoCallback done);
  // Sends all `len` bytes, repeating short sends: done(len) or done(-errno).
  // `buf` must stay valid until `done` runs.
  void WriteAll(const void* buf, size_t len, IoCallback done);
  // Cancels what is in flight, closes the socket, then runs `done` after
  // every other callback of this connection has run. Idempotent.
  void Close(absl::AnyInvocable<void()> done);

 private:
  void SendFrom(size_t offset);

  Reactor& reactor_;
  int fd_;
  bool closing_ = false;
  const char* write_buf_ = nullptr;
  size_t write_len_ = 0;
  IoCallback write_done_;
};

}  // namespace peregrine::shard
