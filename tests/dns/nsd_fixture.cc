#include "tests/dns/nsd_fixture.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"

namespace peregrine::dns::testing {
namespace {

int BindUdp(int* port) {
  int fd = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a));
  socklen_t len = sizeof(a);
  getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  *port = ntohs(a.sin_port);
  return fd;
}

// True once a server on `port` answers a query for test./SOA.
bool Answers(int port) {
  int fd = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  static const char kQuery[] =
      "\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x04test\x00\x00\x06\x00"
      "\x01";
  ::sendto(fd, kQuery, sizeof(kQuery) - 1, 0, reinterpret_cast<sockaddr*>(&a),
           sizeof(a));
  pollfd p{fd, POLLIN, 0};
  bool ok = ::poll(&p, 1, 200) > 0;
  ::close(fd);
  return ok;
}

}  // namespace

std::vector<std::pair<std::string, std::string>> TestZones() {
  std::string long_txt = std::string(255, 'a');
  return {
      {"test.", absl::StrCat(R"($ORIGIN test.
$TTL 300
@ IN SOA ns.test. admin.test. 1 3600 600 86400 60
@ IN NS ns.test.
ns IN A 127.0.0.1
multi IN MX 10 mx1.multi.test.
multi IN MX 20 mx2.multi.test.
multi IN MX 20 mx3.multi.test.
mx1.multi IN A 192.0.2.1
mx2.multi IN A 192.0.2.2
mx2.multi IN AAAA 2001:db8::2
mx3.multi IN A 192.0.2.3
nullmx IN MX 0 .
implicit IN A 192.0.2.10
implicit IN AAAA 2001:db8::10
nodata IN TXT "only text here"
alias IN CNAME alias2.test.
alias2 IN CNAME real.test.
real IN A 192.0.2.20
real IN MX 5 mx1.multi.test.
long IN TXT ")",
                             long_txt, R"(" "bbbb"
spf IN TXT "v=spf1 ip4:192.0.2.0/24 -all"
mail IN A 192.0.2.30
liar IN A 192.0.2.99
)")},
      {"2.0.192.in-addr.arpa.", R"($ORIGIN 2.0.192.in-addr.arpa.
$TTL 300
@ IN SOA ns.test. admin.test. 1 3600 600 86400 60
@ IN NS ns.test.
30 IN PTR mail.test.
31 IN PTR liar.test.
)"},
  };
}

absl::StatusOr<std::unique_ptr<NsdServer>> NsdServer::Start(
    const std::vector<std::pair<std::string, std::string>>& zones) {
  std::unique_ptr<NsdServer> s(new NsdServer);
  const char* tmp = getenv("TEST_TMPDIR");
  s->dir_ = absl::StrCat(tmp ? tmp : "/tmp", "/nsd-", getpid(), "-",
                         absl::ToUnixNanos(absl::Now()));
  std::filesystem::create_directories(s->dir_);
  int probe = BindUdp(&s->port_);
  ::close(probe);
  std::string conf = absl::StrCat(
      "server:\n  ip-address: 127.0.0.1@", s->port_, "\n  port: ", s->port_,
      "\n  username: \"\"\n  chroot: \"\"\n  database: \"\"\n",
      "  zonelistfile: \"", s->dir_, "/zone.list\"\n  xfrdfile: \"", s->dir_,
      "/xfrd.state\"\n  pidfile: \"", s->dir_, "/nsd.pid\"\n  logfile: \"",
      s->dir_, "/nsd.log\"\n  xfrdir: \"", s->dir_,
      "\"\n  server-count: 1\n  verbosity: 0\n  rrl-ratelimit: 0\n  "
      "rrl-whitelist-ratelimit: 0\nremote-control:\n  "
      "control-enable: no\n");
  int n = 0;
  for (const auto& [origin, text] : zones) {
    std::string file = absl::StrCat(s->dir_, "/zone", n++, ".zone");
    std::ofstream(file) << text;
    absl::StrAppend(&conf, "zone:\n  name: \"", origin, "\"\n  zonefile: \"",
                    file, "\"\n");
  }
  std::string conf_path = s->dir_ + "/nsd.conf";
  std::ofstream(conf_path) << conf;
  const char* nsd = "/usr/sbin/nsd";
  if (access(nsd, X_OK) != 0) {
    return absl::FailedPreconditionError(
        "nsd is not installed (apt-get install nsd; scripts/install-deps.sh "
        "does it)");
  }
  s->pid_ = fork();
  if (s->pid_ == 0) {
    execl(nsd, "nsd", "-d", "-c", conf_path.c_str(), nullptr);
    _exit(127);
  }
  for (int i = 0; i < 100; ++i) {
    if (Answers(s->port_)) return s;
    int status;
    if (waitpid(s->pid_, &status, WNOHANG) == s->pid_) {
      s->pid_ = -1;
      std::ifstream log(s->dir_ + "/nsd.log");
      std::string text((std::istreambuf_iterator<char>(log)), {});
      return absl::InternalError("nsd exited at start: " + text);
    }
    absl::SleepFor(absl::Milliseconds(50));
  }
  return absl::DeadlineExceededError("nsd did not answer within 5 s");
}

NsdServer::~NsdServer() {
  if (pid_ > 0) {
    kill(pid_, SIGTERM);
    int status;
    waitpid(pid_, &status, 0);
  }
  std::error_code ec;
  std::filesystem::remove_all(dir_, ec);
}

std::string NsdServer::address() const {
  return absl::StrCat("127.0.0.1:", port_);
}

SilentServer::SilentServer() { fd_ = BindUdp(&port_); }
SilentServer::~SilentServer() { ::close(fd_); }
std::string SilentServer::address() const {
  return absl::StrCat("127.0.0.1:", port_);
}

ServFailServer::ServFailServer() {
  fd_ = BindUdp(&port_);
  thread_ = std::thread([this] {
    char buf[1500];
    while (!stop_) {
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, 50) <= 0) continue;
      sockaddr_in from{};
      socklen_t len = sizeof(from);
      ssize_t n = ::recvfrom(fd_, buf, sizeof(buf), 0,
                             reinterpret_cast<sockaddr*>(&from), &len);
      if (n < 12) continue;
      buf[2] = static_cast<char>(0x80 | (buf[2] & 0x79));  // QR, keep RD.
      buf[3] = static_cast<char>(0x80 | 2);                // RA, SERVFAIL.
      ::sendto(fd_, buf, n, 0, reinterpret_cast<sockaddr*>(&from), len);
    }
  });
}
ServFailServer::~ServFailServer() {
  stop_ = true;
  thread_.join();
  ::close(fd_);
}
std::string ServFailServer::address() const {
  return absl::StrCat("127.0.0.1:", port_);
}

}  // namespace peregrine::dns::testing
