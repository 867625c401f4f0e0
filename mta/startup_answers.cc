#include "mta/startup_answers.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"

namespace peregrine {

StartupAnswers::StartupAnswers(std::vector<int> fds, std::string reason)
    : fds_(std::move(fds)), reason_(std::move(reason)) {
  if (!fds_.empty()) thread_ = std::thread([this] { Run(); });
}

StartupAnswers::~StartupAnswers() {
  stop_.store(true);
  if (thread_.joinable()) thread_.join();
}

std::string StartupAnswers::Answer(const std::string& request_line,
                                   const std::string& reason) {
  const bool live = absl::StartsWith(request_line, "GET /livez ") ||
                    absl::StartsWith(request_line, "HEAD /livez ");
  std::string body =
      live
          ? std::string("{\"status\":\"live\"}\n")
          : nlohmann::json{{"status", "not ready"}, {"reason", reason}}.dump() +
                "\n";
  return absl::StrCat(
      live ? "HTTP/1.1 200 OK" : "HTTP/1.1 503 Service Unavailable",
      "\r\nContent-Type: application/json\r\nContent-Length: ", body.size(),
      "\r\nConnection: close\r\n", live ? "" : "Retry-After: 5\r\n", "\r\n",
      absl::StartsWith(request_line, "HEAD ") ? "" : body);
}

void StartupAnswers::Serve(int client) {
  timeval tv{2, 0};
  ::setsockopt(client, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  ::setsockopt(client, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
  std::string in;
  char buf[1024];
  // The request line is all it needs; at most 4 KiB of headers are read.
  while (in.size() < 4096 && in.find("\r\n\r\n") == std::string::npos) {
    ssize_t n = ::recv(client, buf, sizeof(buf), 0);
    if (n <= 0) break;
    in.append(buf, static_cast<size_t>(n));
  }
  size_t eol = in.find("\r\n");
  if (eol != std::string::npos) {
    std::string answer = Answer(in.substr(0, eol), reason_);
    (void)!::send(client, answer.data(), answer.size(), MSG_NOSIGNAL);
  }
  ::close(client);
}

void StartupAnswers::Run() {
  std::vector<pollfd> polled;
  for (int fd : fds_) polled.push_back({fd, POLLIN, 0});
  while (!stop_.load()) {
    int n = ::poll(polled.data(), polled.size(), 100);
    if (n <= 0) continue;
    for (pollfd& p : polled) {
      if ((p.revents & POLLIN) == 0) continue;
      int client = ::accept4(p.fd, nullptr, nullptr, SOCK_CLOEXEC);
      if (client >= 0) Serve(client);
    }
  }
}

}  // namespace peregrine
