// DNS messages: an IP address type and a parser for responses (RFC 1035).
//
// Pure and sans-I/O: bytes in, records out, any thread. c-ares carries the
// packets; parsing them here gives every record its TTL (positive caching),
// the SOA of negative answers (RFC 2308 negative caching), and CNAMEs. A
// packet from the network is untrusted: every length and compression
// pointer is checked; a bad packet is an error, never a crash.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace peregrine::dns {

class IpAddress {
 public:
  IpAddress() = default;
  static absl::StatusOr<IpAddress> Parse(absl::string_view text);
  static IpAddress V4(const uint8_t bytes[4]);
  static IpAddress V6(const uint8_t bytes[16]);

  int family() const { return family_; }  // AF_INET or AF_INET6; 0: none.
  const uint8_t* bytes() const { return bytes_; }
  std::string ToString() const;
  // "4.3.2.1.in-addr.arpa" or the nibbles under "ip6.arpa".
  std::string ReverseName() const;
  bool operator==(const IpAddress& other) const;

 private:
  int family_ = 0;
  uint8_t bytes_[16] = {};
};

enum RecordType : uint16_t {
  kA = 1,
  kCname = 5,
  kSoa = 6,
  kPtr = 12,
  kMx = 15,
  kTxt = 16,
  kAaaa = 28,
  kTlsa = 52,
};
std::string TypeName(uint16_t type);

struct Record {
  std::string name;  // Lower case, no final dot.
  uint16_t type = 0;
  uint32_t ttl = 0;
  // By type:
  std::string target;              // CNAME, PTR, MX exchange ("" for the root).
  uint16_t preference = 0;         // MX.
  IpAddress address;               // A, AAAA.
  std::vector<std::string> texts;  // TXT: its character-strings.
  uint32_t soa_minimum = 0;        // SOA.
  // TLSA (RFC 6698): certificate usage, selector, matching type, and the
  // association data (raw bytes).
  uint8_t tlsa_usage = 0;
  uint8_t tlsa_selector = 0;
  uint8_t tlsa_matching = 0;
  std::string tlsa_data;
};

struct Response {
  uint16_t id = 0;
  int rcode = 0;  // 0 NOERROR, 2 SERVFAIL, 3 NXDOMAIN, 5 REFUSED.
  bool truncated = false;
  // AD (RFC 4035 3.2.3): the server says it validated the answer with
  // DNSSEC. Worth only what the path to that server is worth.
  bool authenticated = false;
  std::vector<Record> answers;
  std::vector<Record> authority;
};

absl::StatusOr<Response> ParseResponse(absl::string_view packet);

// Lower case, without a final dot: how names are compared and cached.
std::string NormalizeName(absl::string_view name);

}  // namespace peregrine::dns
