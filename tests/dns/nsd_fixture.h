// Runs NSD (Debian's nsd) on a loopback port with zones of the test's own,
// for resolver tests and benchmarks; stops it on destruction. Also fake
// servers for the failure cases: one that never answers, one that answers
// every query with SERVFAIL.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"

namespace peregrine::dns::testing {

class NsdServer {
 public:
  // zones: {origin, zone file text}.
  static absl::StatusOr<std::unique_ptr<NsdServer>> Start(
      const std::vector<std::pair<std::string, std::string>>& zones);
  ~NsdServer();
  std::string address() const;  // "127.0.0.1:PORT"

 private:
  NsdServer() = default;
  pid_t pid_ = -1;
  int port_ = 0;
  std::string dir_;
};

// A UDP socket on loopback that reads nothing and answers nothing.
class SilentServer {
 public:
  SilentServer();
  ~SilentServer();
  std::string address() const;

 private:
  int fd_ = -1;
  int port_ = 0;
};

// Answers every UDP query with SERVFAIL.
class ServFailServer {
 public:
  ServFailServer();
  ~ServFailServer();
  std::string address() const;

 private:
  int fd_ = -1;
  int port_ = 0;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

// The zones the tests and benchmarks use ("test." and 2.0.192.in-addr.arpa).
std::vector<std::pair<std::string, std::string>> TestZones();

}  // namespace peregrine::dns::testing
