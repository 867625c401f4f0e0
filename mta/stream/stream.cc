#include "mta/stream/stream.h"

#include <utility>

namespace peregrine {

Stream::Stream(shard::Reactor& reactor, int fd, Handler& handler)
    : conn_(reactor, fd), handler_(handler) {}

void Stream::Read() {
  if (reading_ || tls_failed_ || closing()) return;
  reading_ = true;
  conn_.Read(buffer_, sizeof(buffer_), [this](int n) {
    reading_ = false;
    // Completed after Close(): dropped (the owner may be on its way out).
    if (closing()) return;
    if (n <= 0) return handler_.OnEnd(n);
    OnBytes(absl::string_view(buffer_, static_cast<size_t>(n)));
  });
}

void Stream::Received(absl::string_view bytes) {
  if (closing() || bytes.empty()) return;
  OnBytes(bytes);
}

void Stream::OnBytes(absl::string_view bytes) {
  bool first = !got_bytes_;
  got_bytes_ = true;
  if (tls_ == nullptr) return handler_.OnData(bytes);
  bool was_up = tls_->handshake_done();
  std::string plaintext;
  absl::Status status = tls_->Feed(bytes, &plaintext);
  out_ += tls_->TakeCiphertext();  // Handshake messages, alerts.
  if (!status.ok()) {
    tls_failed_ = true;
    return handler_.OnTlsError(status, was_up, first, bytes);
  }
  if (!was_up && tls_->handshake_done()) handler_.OnTlsUp();
  if (closing()) return;
  handler_.OnData(plaintext);
}

absl::Status Stream::Send(absl::string_view plaintext) {
  if (plaintext.empty()) return absl::OkStatus();
  if (tls_up()) {
    absl::Status s = tls_->Write(plaintext);
    out_ += tls_->TakeCiphertext();
    return s;
  }
  out_.append(plaintext.data(), plaintext.size());
  return absl::OkStatus();
}

void Stream::Flush() {
  if (writing_ || out_.empty() || closing()) return;
  writing_ = true;
  sending_.swap(out_);
  out_.clear();
  conn_.WriteAll(sending_.data(), sending_.size(), [this](int result) {
    writing_ = false;
    sending_.clear();
    if (closing()) return;
    handler_.OnWritten(result);
  });
}

void Stream::StartTlsServer(std::shared_ptr<const tls::ServerContext> context) {
  tls_ = tls::TlsSession::Server(std::move(context));
}

absl::Status Stream::StartTlsClient(
    std::shared_ptr<const tls::ClientContext> context, const std::string& host,
    bool verify, const std::vector<tls::Tlsa>& dane) {
  tls_ = tls::TlsSession::Client(std::move(context), host, verify, dane);
  absl::Status s = tls_->Begin();
  out_ += tls_->TakeCiphertext();
  if (!s.ok()) tls_failed_ = true;
  return s;
}

void Stream::Close(absl::AnyInvocable<void()> then) {
  closed_ = true;
  reading_ = writing_ = false;
  out_.clear();
  conn_.Close(std::move(then));
}

}  // namespace peregrine
