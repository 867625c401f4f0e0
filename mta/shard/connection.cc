#include "mta/shard/connection.h"

#include <cerrno>

namespace peregrine::shard {

void Connection::Read(void* buf, size_t len, IoCallback done) {
  if (closing_) {
    reactor_.Defer([done = std::move(done)]() mutable { done(-ECANCELED); });
    return;
  }
  reactor_.io().Recv(fd_, buf, len, std::move(done));
}

void Connection::WriteAll(const void* buf, size_t len, IoCallback done) {
  write_buf_ = static_cast<const char*>(buf);
  write_len_ = len;
  write_done_ = std::move(done);
  if (closing_) {
    reactor_.Defer([this] { std::move(write_done_)(-ECANCELED); });
    return;
  }
  SendFrom(0);
}

void Connection::SendFrom(size_t offset) {
  reactor_.io().Send(fd_, write_buf_ + offset, write_len_ - offset,
                     [this, offset](int result) {
                       if (result <= 0) {
                         std::move(write_done_)(result == 0 ? -EPIPE : result);
                         return;
                       }
                       size_t sent = offset + static_cast<size_t>(result);
                       if (sent < write_len_ && !closing_) {
                         SendFrom(sent);
                         return;
                       }
                       std::move(write_done_)(sent == write_len_
                                                  ? static_cast<int>(sent)
                                                  : -ECANCELED);
                     });
}

void Connection::Close(absl::AnyInvocable<void()> done) {
  if (closing_) return;
  closing_ = true;
  reactor_.io().Close(fd_, std::move(done));
}

}  // namespace peregrine::shard
