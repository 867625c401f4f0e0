// `peregrine doctor`: is this server set up to have its mail accepted?
// Each check says ✓, ! (a warning) or ✗, what it found, and the exact
// record or command that fixes it:
//
//   hostname     server.hostname is a full name whose A/AAAA are the
//                egress addresses;
//   ptr          each egress address has a PTR whose name resolves back
//                to it (FCrDNS) and is the EHLO name;
//   spf          each sending domain's SPF (RFC 7208, spf.h) passes for
//                every egress address;
//   dkim         each key's TXT at SELECTOR._domainkey.DOMAIN is there and
//                holds the public half of the configured private key;
//   dmarc        _dmarc.DOMAIN parses, its policy, alignment of DKIM/SPF;
//   mx           each local domain's MX points at this server;
//   mta-sts,     their TXT records parse, when published;
//   tls-rpt
//   mta-sts      the policy fetched as senders fetch it names this host
//   policy       (tls_checks.h);
//   certificate  the [tls] certificate chains to a trusted root, covers
//                server.hostname, and is not about to expire;
//   tlsa         _25._tcp.HOSTNAME's TLSA records match that certificate
//                (DANE), or the record to publish (tls_checks.h);
//   port 25      outbound SMTP reaches a large provider's MX (a timeout
//                means the VPS provider blocks it);
//   clock        within seconds of a peer's, when its banner tells time;
//   listeners    each configured listener answers 220;
//   open relay   the relay port refuses a stranger's mail for elsewhere.
//
// Blocking, for the command line; DNS through dns::BlockingClient with
// the servers of [dns] (so tests point it at a local NSD).
#pragma once

#include <iosfwd>
#include <string>
#include <vector>

namespace peregrine::doctor {

struct DoctorArgs {
  std::string config_path;
  std::string data_dir;
  std::vector<std::string> domains;    // Empty: DKIM key domains and local.
  std::vector<std::string> addresses;  // Egress; empty: as dns-records.
  bool json = false;
  // Where the port-25 check connects: a domain (its first MX), or
  // HOST:PORT. "none" skips it.
  std::string port25 = "gmail.com";
  int port25_timeout_s = 10;
};

enum class Status { kOk, kWarning, kFailed, kSkipped };

struct Finding {
  std::string check;  // "spf example.com"
  Status status = Status::kOk;
  std::string found;  // What was seen, in words.
  std::string fix;    // The record to publish or the command; "" if none.
};

// The text `doctor` prints for `findings`, or their JSON.
std::string Render(const std::vector<Finding>& findings, bool json);

// Exit 0 (nothing failed), 1 (something failed), 2 (usage).
int DoctorCommand(const DoctorArgs& args, std::ostream& out, std::ostream& err);

}  // namespace peregrine::doctor
