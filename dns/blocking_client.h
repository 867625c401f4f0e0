// BlockingClient: DNS look-ups that wait for their answer, for the
// operator's tools (`peregrine doctor`), never for the daemon's shards
// (they use CachingResolver on the reactor).
//
// Sends one question over UDP to each server in turn, retrying as
// `tries` says, and over TCP when the answer is truncated; the answer is
// parsed by ParseResponse (message.h), so a hostile packet is an error,
// never a crash. Follows no CNAME itself (the server's recursion does);
// the answers of the asked type under any name are returned.
//
// Threads: one object per thread. No state but its options.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "dns/message.h"

namespace peregrine::dns {

struct BlockingOptions {
  // "ip:port" or "ip" (port 53), "[v6]:port"; empty: /etc/resolv.conf's.
  std::vector<std::string> servers;
  absl::Duration timeout = absl::Seconds(3);
  int tries = 2;
};

// What BlockingClient::Lookup found (not CachingResolver's Answer: one
// name per type in the namespace, or the linker mixes their copies).
struct BlockingAnswer {
  int rcode = 0;                // 3: NXDOMAIN.
  std::vector<Record> records;  // Of the asked type.
  bool empty() const { return records.empty(); }
};

class BlockingClient {
 public:
  explicit BlockingClient(BlockingOptions options);
  // The records of `type` at `name`; Unavailable when no server answered
  // (a timeout, SERVFAIL), so the caller can tell "none" from "unknown".
  absl::StatusOr<BlockingAnswer> Lookup(const std::string& name, uint16_t type);
  const std::vector<std::string>& servers() const { return servers_; }

 private:
  BlockingOptions options_;
  std::vector<std::string> servers_;
  uint16_t next_id_;
};

// The nameservers of /etc/resolv.conf ("127.0.0.1" when it names none,
// as glibc and c-ares assume).
std::vector<std::string> ResolvConfServers();

// The query packet for (name, type), recursion desired.
std::string MakeQuery(uint16_t id, absl::string_view name, uint16_t type);

}  // namespace peregrine::dns
