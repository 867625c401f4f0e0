#include "dns/blocking_client.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <random>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace peregrine::dns {
namespace {

struct Server {
  sockaddr_storage addr{};
  socklen_t len = 0;
};

bool ParseServer(const std::string& text, Server* out) {
  std::string host = text;
  int port = 53;
  if (!text.empty() && text[0] == '[') {
    size_t close = text.find(']');
    if (close == std::string::npos) return false;
    host = text.substr(1, close - 1);
    if (close + 1 < text.size()) {
      if (text[close + 1] != ':' ||
          !absl::SimpleAtoi(text.substr(close + 2), &port)) {
        return false;
      }
    }
  } else if (std::count(text.begin(), text.end(), ':') == 1) {
    size_t colon = text.find(':');
    host = text.substr(0, colon);
    if (!absl::SimpleAtoi(text.substr(colon + 1), &port)) return false;
  }
  if (port <= 0 || port > 65535) return false;
  auto* v4 = reinterpret_cast<sockaddr_in*>(&out->addr);
  auto* v6 = reinterpret_cast<sockaddr_in6*>(&out->addr);
  if (inet_pton(AF_INET, host.c_str(), &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    v4->sin_port = htons(port);
    out->len = sizeof(*v4);
    return true;
  }
  if (inet_pton(AF_INET6, host.c_str(), &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons(port);
    out->len = sizeof(*v6);
    return true;
  }
  return false;
}

bool WaitFor(int fd, short events, absl::Time deadline) {
  pollfd p{fd, events, 0};
  int ms = static_cast<int>(absl::ToInt64Milliseconds(deadline - absl::Now()));
  return ms > 0 && ::poll(&p, 1, ms) == 1 && (p.revents & events);
}

// The answer over UDP; "" on a timeout or an error.
std::string AskUdp(const Server& s, const std::string& query, uint16_t id,
                   absl::Time deadline) {
  int fd = ::socket(s.addr.ss_family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return "";
  std::string out;
  if (::connect(fd, reinterpret_cast<const sockaddr*>(&s.addr), s.len) == 0 &&
      ::send(fd, query.data(), query.size(), 0) ==
          static_cast<ssize_t>(query.size())) {
    char buf[65536];
    while (WaitFor(fd, POLLIN, deadline)) {
      ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
      if (n < 12) continue;
      // Another query's late answer is skipped.
      if (((static_cast<uint8_t>(buf[0]) << 8) |
           static_cast<uint8_t>(buf[1])) != id) {
        continue;
      }
      out.assign(buf, n);
      break;
    }
  }
  ::close(fd);
  return out;
}

std::string AskTcp(const Server& s, const std::string& query,
                   absl::Time deadline) {
  int fd =
      ::socket(s.addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) return "";
  std::string framed =
      absl::StrCat(std::string{static_cast<char>(query.size() >> 8),
                               static_cast<char>(query.size() & 0xff)},
                   query);
  std::string in;
  ::connect(fd, reinterpret_cast<const sockaddr*>(&s.addr), s.len);
  if (WaitFor(fd, POLLOUT, deadline) &&
      ::send(fd, framed.data(), framed.size(), MSG_NOSIGNAL) ==
          static_cast<ssize_t>(framed.size())) {
    char buf[65536];
    while (WaitFor(fd, POLLIN, deadline)) {
      ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
      if (n <= 0) break;
      in.append(buf, n);
      if (in.size() >= 2) {
        size_t want =
            (static_cast<uint8_t>(in[0]) << 8) | static_cast<uint8_t>(in[1]);
        if (in.size() >= want + 2) {
          in = in.substr(2, want);
          ::close(fd);
          return in;
        }
      }
    }
  }
  ::close(fd);
  return "";
}

}  // namespace

std::vector<std::string> ResolvConfServers() {
  std::vector<std::string> out;
  std::ifstream in("/etc/resolv.conf");
  std::string line;
  while (std::getline(in, line)) {
    std::vector<std::string> f =
        absl::StrSplit(line, absl::ByAnyChar(" \t"), absl::SkipEmpty());
    if (f.size() >= 2 && f[0] == "nameserver") out.push_back(f[1]);
  }
  if (out.empty()) out.push_back("127.0.0.1");
  return out;
}

std::string MakeQuery(uint16_t id, absl::string_view name, uint16_t type) {
  std::string q;
  q += static_cast<char>(id >> 8);
  q += static_cast<char>(id & 0xff);
  q += '\x01';  // RD
  q += '\x00';
  q += std::string("\x00\x01\x00\x00\x00\x00\x00\x00", 8);
  for (absl::string_view label :
       absl::StrSplit(absl::StripSuffix(name, "."), '.', absl::SkipEmpty())) {
    if (label.size() > 63) label = label.substr(0, 63);
    q += static_cast<char>(label.size());
    q.append(label.data(), label.size());
  }
  q += '\x00';
  q += static_cast<char>(type >> 8);
  q += static_cast<char>(type & 0xff);
  q += std::string("\x00\x01", 2);
  return q;
}

BlockingClient::BlockingClient(BlockingOptions options)
    : options_(std::move(options)),
      servers_(options_.servers.empty() ? ResolvConfServers()
                                        : options_.servers),
      next_id_(static_cast<uint16_t>(std::random_device{}())) {}

absl::StatusOr<BlockingAnswer> BlockingClient::Lookup(const std::string& name,
                                                      uint16_t type) {
  if (name.empty() || name.size() > 253) {
    return absl::InvalidArgumentError(absl::StrCat("bad name '", name, "'"));
  }
  std::string why = "no server answered";
  for (int attempt = 0; attempt < std::max(1, options_.tries); ++attempt) {
    for (const std::string& text : servers_) {
      Server server;
      if (!ParseServer(text, &server)) {
        why = absl::StrCat("bad DNS server address '", text, "'");
        continue;
      }
      uint16_t id = next_id_++;
      std::string query = MakeQuery(id, name, type);
      absl::Time deadline = absl::Now() + options_.timeout;
      std::string packet = AskUdp(server, query, id, deadline);
      if (packet.empty()) {
        why = absl::StrCat(text, " did not answer within ",
                           absl::FormatDuration(options_.timeout));
        continue;
      }
      auto response = ParseResponse(packet);
      if (response.ok() && response->truncated) {
        std::string tcp = AskTcp(server, query, absl::Now() + options_.timeout);
        if (!tcp.empty()) response = ParseResponse(tcp);
      }
      if (!response.ok()) {
        why = absl::StrCat(text,
                           " sent a bad answer: ", response.status().message());
        continue;
      }
      if (response->rcode != 0 && response->rcode != 3) {
        why = absl::StrCat(text, " answered rcode ", response->rcode,
                           response->rcode == 2 ? " (SERVFAIL)" : "");
        continue;
      }
      BlockingAnswer answer;
      answer.rcode = response->rcode;
      for (Record& r : response->answers) {
        if (r.type == type) answer.records.push_back(std::move(r));
      }
      return answer;
    }
  }
  return absl::UnavailableError(
      absl::StrCat(TypeName(type), " ", name, ": ", why));
}

}  // namespace peregrine::dns
