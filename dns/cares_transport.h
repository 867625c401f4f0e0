// CaresTransport: DNS packets through c-ares, driven by a shard's reactor.
//
// Lives on one shard; no resolver threads. c-ares tells us (sock_state_cb)
// which of its sockets want reading or writing; the reactor's backend polls
// them (io_uring or epoll) and we hand readiness back to ares_process_fd.
// c-ares opens and closes its sockets through our socket functions, so a
// socket is closed through the backend, which first cancels what it still
// polls on it: a recycled fd number never inherits a stale poll. Timeouts
// come from ares_timeout(), as reactor timers.
#pragma once

#include <ares.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "dns/caching_resolver.h"
#include "mta/shard/reactor.h"

namespace peregrine::dns {

struct CaresOptions {
  // "ip:port" or "[ipv6]:port"; empty: the servers of /etc/resolv.conf.
  std::vector<std::string> servers;
  absl::Duration timeout = absl::Seconds(5);  // Per try.
  int tries = 2;
  // Ask for DNSSEC validation results: every query carries the AD bit
  // (RFC 6840 5.7), so a validating server says AD on what it validated.
  bool ad = false;
};

class CaresTransport final : public Transport {
 public:
  static absl::StatusOr<std::unique_ptr<CaresTransport>> Create(
      shard::Reactor& reactor, const CaresOptions& options);
  ~CaresTransport() override;

  void Query(const std::string& name, uint16_t type, Done done) override;

 private:
  struct Socket {
    bool want_read = false;
    bool want_write = false;
    bool read_armed = false;
    bool write_armed = false;
    uint64_t generation = 0;
  };

  explicit CaresTransport(shard::Reactor& reactor) : reactor_(reactor) {}
  static void OnSocketState(void* self, ares_socket_t fd, int readable,
                            int writable);
  static int OnClose(ares_socket_t fd, void* self);
  void Arm(int fd);
  void OnReady(int fd, uint64_t generation, bool read);
  void ResetTimer();

  shard::Reactor& reactor_;
  bool ad_ = false;
  ares_channel channel_ = nullptr;
  absl::flat_hash_map<int, Socket> sockets_;
  uint64_t next_generation_ = 1;
  shard::Reactor::TimerId timer_ = 0;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

// A CachingResolver over c-ares on `reactor`: what a shard uses.
absl::StatusOr<std::unique_ptr<CachingResolver>> MakeCaresResolver(
    shard::Reactor& reactor, const CaresOptions& cares,
    CachingResolverOptions cache = {});

}  // namespace peregrine::dns
