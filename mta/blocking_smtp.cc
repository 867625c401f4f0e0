#include "mta/blocking_smtp.h"

#include <netdb.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace peregrine {

absl::StatusOr<shard::SocketAddress> ListenerAddress(const Config& c,
                                                     ListenerKind kind) {
  for (const ListenerConfig& l : c.listeners) {
    if (l.kind != kind || l.addresses.empty()) continue;
    shard::SocketAddress a = l.addresses[0];
    std::string host = a.HostString();
    if (host == "0.0.0.0") {
      return shard::SocketAddress::Parse(absl::StrCat("127.0.0.1:", a.port()));
    }
    if (host == "::") {
      return shard::SocketAddress::Parse(absl::StrCat("[::1]:", a.port()));
    }
    return a;
  }
  return absl::FailedPreconditionError(
      absl::StrCat("listen.", ListenerName(kind), " is off in ", c.source));
}

BlockingSmtp::~BlockingSmtp() {
  ssl_.reset();
  ctx_.reset();
  if (fd_ >= 0) ::close(fd_);
}

namespace {

void SetTimeouts(int fd, int seconds) {
  timeval tv{seconds, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
}

std::string ConnectError(int err) {
  return err == EINPROGRESS || err == EAGAIN ? "Connection timed out"
                                             : strerror(err);
}

}  // namespace

absl::Status BlockingSmtp::Connect(const shard::SocketAddress& address,
                                   int timeout_s,
                                   const shard::SocketAddress* source) {
  fd_ = ::socket(address.family(), SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd_ < 0) return absl::InternalError(strerror(errno));
  SetTimeouts(fd_, timeout_s);
  if (source != nullptr &&
      ::bind(fd_, source->sockaddr_ptr(), source->length()) != 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        "cannot send from ", source->HostString(), ": ", strerror(errno)));
  }
  if (::connect(fd_, address.sockaddr_ptr(), address.length()) != 0) {
    return absl::UnavailableError(ConnectError(errno));
  }
  return absl::OkStatus();
}

absl::Status BlockingSmtp::Connect(const std::string& host,
                                   const std::string& port, int timeout_s) {
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* list = nullptr;
  if (int rc = getaddrinfo(host.c_str(), port.c_str(), &hints, &list);
      rc != 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot resolve ", host, ": ", gai_strerror(rc)));
  }
  std::string why = "no address";
  for (addrinfo* a = list; a != nullptr; a = a->ai_next) {
    fd_ = ::socket(a->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd_ < 0) continue;
    SetTimeouts(fd_, timeout_s);
    if (::connect(fd_, a->ai_addr, a->ai_addrlen) == 0) {
      freeaddrinfo(list);
      return absl::OkStatus();
    }
    why = ConnectError(errno);
    ::close(fd_);
    fd_ = -1;
  }
  freeaddrinfo(list);
  return absl::UnavailableError(absl::StrCat(host, ":", port, ": ", why));
}

absl::StatusOr<std::string> BlockingSmtp::StartTls() {
  ctx_.reset(SSL_CTX_new(TLS_client_method()));
  ssl_.reset(ctx_ ? SSL_new(ctx_.get()) : nullptr);
  if (ssl_ == nullptr || SSL_set_fd(ssl_.get(), fd_) != 1 ||
      SSL_connect(ssl_.get()) != 1) {
    ssl_.reset();
    return absl::UnavailableError(
        "the TLS handshake failed (wrong version number?)");
  }
  return absl::StrCat(SSL_get_version(ssl_.get()), " ",
                      SSL_get_cipher_name(ssl_.get()));
}

bool BlockingSmtp::Send(const std::string& data) {
  size_t done = 0;
  while (done < data.size()) {
    int n = ssl_ ? SSL_write(ssl_.get(), data.data() + done,
                             static_cast<int>(data.size() - done))
                 : static_cast<int>(::send(fd_, data.data() + done,
                                           data.size() - done, MSG_NOSIGNAL));
    if (n <= 0) return false;
    done += static_cast<size_t>(n);
  }
  return true;
}

int BlockingSmtp::Reply(std::string* text) {
  text->clear();
  for (;;) {
    size_t eol;
    while ((eol = buffer_.find("\r\n")) == std::string::npos) {
      char buf[4096];
      int n = ssl_ ? SSL_read(ssl_.get(), buf, sizeof(buf))
                   : static_cast<int>(::recv(fd_, buf, sizeof(buf), 0));
      if (n <= 0 || buffer_.size() > 65536) return 0;
      buffer_.append(buf, static_cast<size_t>(n));
    }
    std::string line = buffer_.substr(0, eol);
    buffer_.erase(0, eol + 2);
    int code = 0;
    if (line.size() < 3 || !absl::SimpleAtoi(line.substr(0, 3), &code)) {
      return 0;
    }
    absl::StrAppend(text, text->empty() ? "" : " / ", line);
    if (line.size() == 3 || line[3] != '-') return code;
  }
}

std::string DotStuffed(absl::string_view message) {
  std::string data;
  data.reserve(message.size() + 64);
  bool line_start = true;
  for (char ch : message) {
    if (line_start && ch == '.') data += '.';
    data += ch;
    line_start = ch == '\n';
  }
  if (!data.empty() && data.back() != '\n') data += "\r\n";
  data += ".\r\n";
  return data;
}

absl::Status SubmitMail(const shard::SocketAddress& address,
                        const std::string& helo, const std::string& from,
                        const std::string& to, const std::string& message) {
  BlockingSmtp c;
  if (absl::Status s = c.Connect(address, 30); !s.ok()) return s;
  std::string reply;
  const std::pair<std::string, int> steps[] = {
      {"", 220},
      {absl::StrCat("EHLO ", helo, "\r\n"), 250},
      {absl::StrCat("MAIL FROM:<", from, ">\r\n"), 250},
      {absl::StrCat("RCPT TO:<", to, ">\r\n"), 250},
      {"DATA\r\n", 354},
      {DotStuffed(message), 250},
  };
  for (const auto& [command, want] : steps) {
    if (!command.empty() && !c.Send(command)) {
      return absl::UnavailableError("the listener closed the connection");
    }
    int code = c.Reply(&reply);
    if (code != want) {
      return absl::UnavailableError(
          absl::StrCat(command.empty() ? "greeting" : command.substr(0, 10),
                       ": ", code == 0 ? "no answer" : reply));
    }
  }
  (void)c.Send("QUIT\r\n");
  return absl::OkStatus();
}

}  // namespace peregrine
