// Resolver: the DNS look-ups mail needs, with mail's rules in one place.
//
// Per shard: a Resolver lives on one shard's thread and calls back on that
// thread, always later (never from inside the call that asked).
//
// Results tell permanent from transient failures (IsPermanent):
//   NotFound            NXDOMAIN, or no record of the type (NODATA): permanent
//   FailedPrecondition  null MX (RFC 7505): the domain accepts no mail
//   Unavailable,        SERVFAIL, refused, timeouts, unreachable servers:
//   DeadlineExceeded    transient, try again later
#pragma once

#include <string>
#include <vector>

#include "absl/functional/any_invocable.h"
#include "absl/status/statusor.h"
#include "dns/message.h"

namespace peregrine::dns {

struct MxHost {
  std::string host;
  uint16_t preference = 0;
  bool implicit = false;  // No MX: the domain itself (RFC 5321 §5.1).
  // The MX answer was DNSSEC-validated by a resolver we trust (its AD bit,
  // see CachingResolverOptions::trust_ad): the same for every host.
  bool authenticated = false;
};

struct HostAddresses {
  std::vector<IpAddress> v4;
  std::vector<IpAddress> v6;
  bool authenticated = false;  // Both answers validated (see MxHost).
  bool empty() const { return v4.empty() && v6.empty(); }
  bool Contains(const IpAddress& ip) const;
};

// TLSA records of a name (RFC 6698), for DANE (RFC 7672).
struct TlsaAnswer {
  std::vector<Record> records;  // Type TLSA; empty: none (NXDOMAIN/NODATA).
  bool authenticated = false;   // Validated, the "no records" answer too.
};

bool IsPermanent(const absl::Status& status);

class Resolver {
 public:
  template <typename T>
  using Callback = absl::AnyInvocable<void(absl::StatusOr<T>)>;

  virtual ~Resolver() = default;

  // Mail exchangers by preference (random order among equals); implicit MX
  // when the domain has none; null MX and NXDOMAIN are permanent.
  virtual void Mx(std::string domain, Callback<std::vector<MxHost>> done) = 0;
  // A and AAAA, asked in parallel. An IP literal is returned as is.
  virtual void Addresses(std::string host, Callback<HostAddresses> done) = 0;
  // PTR names of an address.
  virtual void Ptr(IpAddress ip, Callback<std::vector<std::string>> done) = 0;
  // TXT records, each one's strings joined (RFC 7208 §3.3).
  virtual void Txt(std::string name,
                   Callback<std::vector<std::string>> done) = 0;
  // TLSA records ("_25._tcp.mx.example.com"). No records is an answer
  // (empty), not an error; errors are transient (a SERVFAIL from a
  // validating resolver is how a forged answer shows).
  virtual void Tlsa(std::string name, Callback<TlsaAnswer> done) = 0;

  // Forward-confirmed reverse DNS: the first PTR name of `ip` whose A/AAAA
  // records include `ip`. NotFound when there is none.
  void ForwardConfirmed(IpAddress ip, Callback<std::string> done);
};

}  // namespace peregrine::dns
