// `peregrine dns-records --domain D`: every DNS record an operator
// publishes for a domain Peregrine sends (and receives) for, as zone-file
// lines with a comment on each: MX, A/AAAA of server.hostname, SPF, each
// DKIM key's TXT (from the configured [[dkim.keys]]), DMARC, MTA-STS (with
// its policy file), TLS-RPT, the TLSA record of the host's certificate
// (DANE), and the PTR to ask the VPS provider for.
//
// Records() is pure (the tests give it everything); DnsRecordsCommand()
// gathers the inputs: the configuration, the DKIM keys' public halves, and
// the egress addresses ([[delivery.sources]], else this host's global
// interface addresses from getifaddrs(): nothing is sent anywhere).
#pragma once

#include <iosfwd>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace peregrine {

struct RecordsInput {
  std::string domain;                  // example.com
  std::string hostname;                // server.hostname: mail.example.com
  std::vector<std::string> addresses;  // Egress IPv4 and IPv6.
  struct Dkim {
    std::string domain;  // d= (the key's, which may sign for others too)
    std::string selector;
    std::string record;  // "v=DKIM1; k=rsa; p=..."
  };
  std::vector<Dkim> dkim;
  std::string
      report_address;  // DMARC and TLS-RPT reports; default postmaster@.
  absl::Time now;      // The MTA-STS policy id.
  // "3 1 1 <hex>" for the [tls] certificate ("" when none is configured):
  // the DANE TLSA record of server.hostname.
  std::string tlsa;
};

std::string Records(const RecordsInput& in);

// "3 1 1 <hex of SHA-256 of the leaf's public key>" for the first
// certificate in `cert_file` (PEM): the DANE-EE TLSA record that matches
// it and survives renewals that keep the key (certbot --reuse-key).
absl::StatusOr<std::string> TlsaRecordFor(const std::string& cert_file);

// This host's interface addresses, but loopback and link-local.
std::vector<std::string> HostAddresses();

struct DnsRecordsArgs {
  std::string config_path;
  std::string domain;
  std::vector<std::string> addresses;  // --ip: instead of the discovered.
  std::string report_address;
};

// Exit 0, 2 (usage or configuration).
int DnsRecordsCommand(const DnsRecordsArgs& args, std::ostream& out,
                      std::ostream& err);

}  // namespace peregrine
