#include "mta/shard/socket.h"

#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace peregrine::shard {
namespace {
absl::Status Errno(absl::string_view what, const SocketAddress* address) {
  int err = errno;
  std::string where = address ? absl::StrCat(" ", address->ToString()) : "";
  std::string message = absl::StrCat(what, where, ": ", std::strerror(err));
  if (err == EADDRINUSE) {
    return absl::AlreadyExistsError(
        absl::StrCat(message,
                     " (another process listens there: stop it or pick another "
                     "port)"));
  }
  if (err == EACCES) {
    return absl::PermissionDeniedError(absl::StrCat(
        message, " (ports below 1024 need root or CAP_NET_BIND_SERVICE)"));
  }
  if (err == EADDRNOTAVAIL) {
    return absl::InvalidArgumentError(
        absl::StrCat(message, " (no interface of this machine has it)"));
  }
  return absl::UnavailableError(message);
}
}  // namespace

absl::Status CheckPortFree(const SocketAddress& address) {
  int fd = ::socket(address.family(), SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return Errno("socket", &address);
  int one = 1;
  // SO_REUSEADDR so that connections in TIME_WAIT from a previous run do not
  // count; a listening socket still does, with or without SO_REUSEPORT.
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  if (address.family() == AF_INET6) {
    setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
  }
  absl::Status status;
  if (::bind(fd, address.sockaddr_ptr(), address.length()) != 0) {
    status = Errno("cannot listen on", &address);
  }
  ::close(fd);
  return status;
}

absl::StatusOr<int> Listen(const SocketAddress& address, bool reuse_port,
                           int backlog) {
  int fd =
      ::socket(address.family(), SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return Errno("socket", &address);
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  if (reuse_port) setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
  if (address.family() == AF_INET6) {
    setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
  }
  if (::bind(fd, address.sockaddr_ptr(), address.length()) != 0) {
    absl::Status status = Errno("cannot listen on", &address);
    ::close(fd);
    return status;
  }
  if (::listen(fd, backlog) != 0) {
    absl::Status status = Errno("listen", &address);
    ::close(fd);
    return status;
  }
  return fd;
}

absl::StatusOr<int> NewStreamSocket(int family) {
  int fd = ::socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return Errno("socket", nullptr);
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  return fd;
}

absl::StatusOr<SocketAddress> LocalAddress(int fd) {
  sockaddr_storage ss{};
  socklen_t len = sizeof(ss);
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) {
    return Errno("getsockname", nullptr);
  }
  return SocketAddress::FromSockaddr(reinterpret_cast<sockaddr*>(&ss), len);
}

absl::StatusOr<SocketAddress> PeerAddress(int fd) {
  sockaddr_storage ss{};
  socklen_t len = sizeof(ss);
  if (getpeername(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) {
    return Errno("getpeername", nullptr);
  }
  return SocketAddress::FromSockaddr(reinterpret_cast<sockaddr*>(&ss), len);
}

}  // namespace peregrine::shard
