// A redis-server (Debian's) for tests: started on a loopback port the
// kernel picked, with a data folder of its own, and stopped by the
// destructor (or Kill(), to test an outage; Start() again on the same
// port).
#pragma once

#include <string>
#include <vector>

namespace peregrine::cluster::testing {

// A loopback port nothing listens on now.
int FreePort();

class RedisServer {
 public:
  // redis-server and redis-cli are there (scripts/install-deps.sh).
  static bool Installed();

  RedisServer();
  ~RedisServer();
  RedisServer(const RedisServer&) = delete;
  RedisServer& operator=(const RedisServer&) = delete;

  // Starts it on port() and waits until it answers (or 5 s): false if not.
  bool Start();
  void Kill();
  int port() const { return port_; }
  bool running() const { return pid_ > 0; }
  // redis-cli with `args` (and the server's port and `cli_args`), its
  // output.
  std::string Cli(const std::string& args) const;
  std::vector<std::string> cli_args;  // E.g. "--tls", "--user", ...
  // More redis-server options, after the defaults: "--port", "0",
  // "--tls-port", PORT, ... for TLS on port().
  std::vector<std::string> server_args;
  std::string dir() const { return dir_; }

 private:
  int port_ = 0;
  int pid_ = -1;
  std::string dir_;
};

}  // namespace peregrine::cluster::testing
