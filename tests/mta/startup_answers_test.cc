// StartupAnswers on a real listening socket: /livez is 200 while the
// daemon starts, anything else 503 saying why; the socket stays open for
// the shards afterwards.
#include "mta/startup_answers.h"

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <string>

#include "absl/strings/match.h"
#include "gtest/gtest.h"

namespace peregrine {
namespace {

int ListenLoopback(int* port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  EXPECT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
  socklen_t len = sizeof(a);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  *port = ntohs(a.sin_port);
  ::listen(fd, 16);
  return fd;
}

std::string Ask(int port, const std::string& request) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(static_cast<uint16_t>(port));
  EXPECT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
  ::send(fd, request.data(), request.size(), MSG_NOSIGNAL);
  std::string out;
  char buf[4096];
  for (ssize_t n; (n = ::recv(fd, buf, sizeof(buf), 0)) > 0;) {
    out.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  return out;
}

TEST(StartupAnswers, LiveButNotReadyWhileStarting) {
  int port = 0;
  int fd = ListenLoopback(&port);
  {
    StartupAnswers answers({fd}, "starting: recovering the queue");
    std::string live = Ask(port, "GET /livez HTTP/1.1\r\nHost: x\r\n\r\n");
    EXPECT_TRUE(absl::StartsWith(live, "HTTP/1.1 200 OK\r\n")) << live;
    EXPECT_TRUE(absl::EndsWith(live, "{\"status\":\"live\"}\n"));
    std::string ready = Ask(port, "GET /readyz HTTP/1.1\r\n\r\n");
    EXPECT_TRUE(absl::StartsWith(ready, "HTTP/1.1 503")) << ready;
    EXPECT_TRUE(absl::StrContains(ready, "recovering the queue"));
    EXPECT_TRUE(absl::StrContains(ready, "Retry-After: 5"));
    std::string api = Ask(port, "POST /api/v1/inject HTTP/1.1\r\n\r\n");
    EXPECT_TRUE(absl::StartsWith(api, "HTTP/1.1 503")) << api;
    // A client that sends nothing gets nothing, and does not stop it.
    EXPECT_EQ(Ask(port, ""), "");
    EXPECT_TRUE(absl::StartsWith(Ask(port, "HEAD /livez HTTP/1.1\r\n\r\n"),
                                 "HTTP/1.1 200 OK"));
  }
  // Stopped: the socket is still open (the shards take it over).
  int flags = 0;
  socklen_t len = sizeof(flags);
  EXPECT_EQ(::getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &flags, &len), 0);
  EXPECT_EQ(flags, 1);
  ::close(fd);
}

}  // namespace
}  // namespace peregrine
