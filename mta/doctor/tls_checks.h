// The receiving side of outbound TLS security, checked by `peregrine
// doctor` for the own domains (what senders such as Gmail, or Peregrine
// itself, will find):
//
//   mta-sts policy  when `_mta-sts.DOMAIN` is published, the policy file is
//                   fetched as a sender fetches it (RFC 8461 3.3: HTTPS to
//                   mta-sts.DOMAIN, certificate checked, text/plain, at
//                   most 64 KiB) and its mx patterns must cover this host
//                   and the domain's MX hosts;
//   tlsa            `_25._tcp.HOSTNAME` TLSA records (DANE, RFC 7672) must
//                   match the [tls] certificate, or senders that use DANE
//                   defer all mail to this host; absent: what to publish.
//
// Blocking, for the command line; DNS through the doctor's BlockingClient.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "dns/blocking_client.h"
#include "mta/doctor/doctor.h"

namespace peregrine::doctor {

std::vector<Finding> StsPolicyChecks(dns::BlockingClient& dns,
                                     const std::string& domain,
                                     const std::string& hostname,
                                     const std::string& ca_file);

std::vector<Finding> TlsaChecks(dns::BlockingClient& dns,
                                const std::string& hostname,
                                const std::string& cert_file);

// Whether TLSA (usage, selector, matching, data) matches the certificate
// chain in `cert_file` (PEM: the leaf first): usage 3 the leaf, usage 2
// any certificate after it.
absl::StatusOr<bool> TlsaMatches(const std::string& cert_file, int usage,
                                 int selector, int matching,
                                 const std::string& data);

}  // namespace peregrine::doctor
