// Socket addresses and CIDR networks: parsing, printing, matching.
//
// Pure values, used on any thread. Parsing never trusts its input: every
// failure is an absl::Status that says what was expected.
//   "127.0.0.1:2525", "[::1]:2525"         -> SocketAddress
//   "127.0.0.0/8", "::1", "2001:db8::/32"  -> Cidr (no prefix: one host)
#pragma once

#include <netinet/in.h>
#include <sys/socket.h>

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace peregrine::shard {

class SocketAddress {
 public:
  SocketAddress() = default;

  // "host:port" with a literal IPv4 address, or "[v6]:port".
  static absl::StatusOr<SocketAddress> Parse(absl::string_view text);
  static SocketAddress FromSockaddr(const sockaddr* sa, socklen_t len);

  int family() const { return storage_.ss_family; }
  uint16_t port() const;
  const sockaddr* sockaddr_ptr() const {
    return reinterpret_cast<const sockaddr*>(&storage_);
  }
  socklen_t length() const { return length_; }

  // "127.0.0.1:2525" or "[::1]:2525".
  std::string ToString() const;
  // The address alone: "127.0.0.1" or "::1".
  std::string HostString() const;
  // In 127.0.0.0/8 or ::1 (IPv4-mapped included).
  bool IsLoopback() const;

 private:
  sockaddr_storage storage_{};
  socklen_t length_ = 0;
};

class Cidr {
 public:
  static absl::StatusOr<Cidr> Parse(absl::string_view text);

  bool Contains(const SocketAddress& address) const;
  // Every address of `inner` is in this network (same family only).
  bool Covers(const Cidr& inner) const;
  // More than a /8 of IPv4 (or the IPv4-mapped IPv6 space), or an IPv6
  // prefix shorter than /16, outside private space: trusting it would make
  // an open relay.
  bool TooBroad() const;
  // Inside loopback, RFC 1918, shared (100.64/10), link-local or unique
  // local (fc00::/7) space.
  bool IsPrivate() const;
  std::string ToString() const;

 private:
  int family_ = AF_UNSPEC;
  uint8_t bytes_[16] = {};
  int prefix_ = 0;
};

}  // namespace peregrine::shard
