#include "mta/doctor/tls_checks.h"

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <cstdio>
#include <memory>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "mta/delivery/mta_sts.h"
#include "mta/delivery/mta_sts_fetcher.h"
#include "mta/dns_records.h"

namespace peregrine::doctor {
namespace {

using X509Ptr = std::unique_ptr<X509, void (*)(X509*)>;

absl::StatusOr<std::vector<X509Ptr>> ReadChain(const std::string& path) {
  std::unique_ptr<FILE, int (*)(FILE*)> f(fopen(path.c_str(), "r"), fclose);
  if (f == nullptr) {
    return absl::NotFoundError(absl::StrCat("cannot read ", path));
  }
  std::vector<X509Ptr> chain;
  while (X509* c = PEM_read_X509(f.get(), nullptr, nullptr, nullptr)) {
    chain.emplace_back(c, X509_free);
  }
  if (chain.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, " holds no certificate"));
  }
  return chain;
}

// The bytes a TLSA record's selector names, digested as its matching
// type says.
std::string Association(X509* cert, int selector, int matching) {
  unsigned char* der = nullptr;
  int len = selector == 0 ? i2d_X509(cert, &der)
                          : i2d_X509_PUBKEY(X509_get_X509_PUBKEY(cert), &der);
  if (len <= 0) return "";
  std::string bytes(reinterpret_cast<char*>(der), static_cast<size_t>(len));
  OPENSSL_free(der);
  if (matching == 0) return bytes;
  const EVP_MD* md = matching == 1 ? EVP_sha256() : EVP_sha512();
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  EVP_Digest(bytes.data(), bytes.size(), out, &n, md, nullptr);
  return std::string(reinterpret_cast<char*>(out), n);
}

}  // namespace

absl::StatusOr<bool> TlsaMatches(const std::string& cert_file, int usage,
                                 int selector, int matching,
                                 const std::string& data) {
  absl::StatusOr<std::vector<X509Ptr>> chain = ReadChain(cert_file);
  if (!chain.ok()) return chain.status();
  if (selector > 1 || matching > 2 || (usage != 2 && usage != 3)) {
    return false;  // Not usable for SMTP (RFC 7672 3.1).
  }
  for (size_t i = usage == 3 ? 0 : 1; i < (usage == 3 ? 1 : chain->size());
       ++i) {
    if (Association((*chain)[i].get(), selector, matching) == data) {
      return true;
    }
  }
  return false;
}

std::vector<Finding> StsPolicyChecks(dns::BlockingClient& dns,
                                     const std::string& domain,
                                     const std::string& hostname,
                                     const std::string& ca_file) {
  const std::string check = absl::StrCat("mta-sts policy ", domain);
  auto txt = dns.Lookup(absl::StrCat("_mta-sts.", domain), dns::kTxt);
  if (!txt.ok()) return {};  // The TXT check said so already.
  bool announced = false;
  for (const dns::Record& r : txt->records) {
    if (absl::StartsWith(absl::StrJoin(r.texts, ""), "v=STSv1")) {
      announced = true;
    }
  }
  if (!announced) return {};
  const std::string host = absl::StrCat("mta-sts.", domain);
  const std::string fix = absl::StrCat(
      "serve the policy (peregrine dns-records --domain ", domain,
      " prints it) at https://", host,
      "/.well-known/mta-sts.txt as text/plain, with a certificate for ", host,
      " (certbot certonly -d ", host, ")");
  std::vector<std::string> ips;
  for (uint16_t type : {uint16_t{dns::kA}, uint16_t{dns::kAaaa}}) {
    auto a = dns.Lookup(host, type);
    if (!a.ok()) continue;
    for (const dns::Record& r : a->records) ips.push_back(r.address.ToString());
  }
  if (ips.empty()) {
    return {{check, Status::kFailed,
             absl::StrCat("_mta-sts is published but ", host,
                          " has no address: senders cannot fetch the policy"),
             fix}};
  }
  delivery::StsFetcherOptions o;
  o.timeout = absl::Seconds(10);
  o.ca_file = ca_file;
  absl::StatusOr<delivery::StsPolicy> policy =
      delivery::StsFetcher::FetchNow(o, domain, ips, nullptr);
  if (!policy.ok()) {
    return {{check, Status::kFailed,
             absl::StrCat("senders cannot use the policy: ",
                          policy.status().message()),
             fix}};
  }
  std::vector<std::string> hosts = {hostname};
  auto mx = dns.Lookup(domain, dns::kMx);
  if (mx.ok()) {
    for (const dns::Record& r : mx->records) {
      if (!r.target.empty() && r.target != hostname) hosts.push_back(r.target);
    }
  }
  std::vector<std::string> outside;
  for (const std::string& h : hosts) {
    if (!delivery::StsAllows(*policy, h)) outside.push_back(h);
  }
  absl::string_view mode = delivery::StsModeName(policy->mode);
  std::string found =
      absl::StrCat("mode ", mode, ", mx ", absl::StrJoin(policy->mx, ", "),
                   ", max_age ", policy->max_age);
  if (!outside.empty() && policy->mode != delivery::StsMode::kNone) {
    return {{check,
             policy->mode == delivery::StsMode::kEnforce ? Status::kFailed
                                                         : Status::kWarning,
             absl::StrCat(found, ": it does not name ",
                          absl::StrJoin(outside, ", "),
                          policy->mode == delivery::StsMode::kEnforce
                              ? " (senders refuse to deliver there)"
                              : " (senders report failures)"),
             absl::StrCat("add \"mx: ", outside.front(),
                          "\" to the policy file, then change the id in "
                          "_mta-sts.",
                          domain)}};
  }
  return {{check, Status::kOk, found}};
}

std::vector<Finding> TlsaChecks(dns::BlockingClient& dns,
                                const std::string& hostname,
                                const std::string& cert_file) {
  const std::string name = absl::StrCat("_25._tcp.", hostname);
  const std::string check = absl::StrCat("tlsa ", hostname);
  if (cert_file.empty()) {
    return {{check, Status::kSkipped,
             "no [tls] cert_file: DANE needs the certificate TLSA records "
             "would name"}};
  }
  absl::StatusOr<std::string> record = TlsaRecordFor(cert_file);
  if (!record.ok()) return {};  // The certificate check says why.
  const std::string fix =
      absl::StrCat(name, ". IN TLSA ", *record,
                   "   (in a DNSSEC-signed zone; keep the old record beside "
                   "the new one while a new key rolls in)");
  auto answer = dns.Lookup(name, dns::kTlsa);
  if (!answer.ok()) {
    return {{check, Status::kWarning,
             absl::StrCat("could not ask DNS for ", name, ": ",
                          answer.status().message()),
             "check [dns] servers and run doctor again"}};
  }
  if (answer->records.empty()) {
    return {{check, Status::kSkipped,
             absl::StrCat("no TLSA at ", name,
                          " (optional: DANE lets senders verify this host "
                          "without trusting any CA)"),
             fix}};
  }
  int matched = 0;
  for (const dns::Record& r : answer->records) {
    absl::StatusOr<bool> m = TlsaMatches(
        cert_file, r.tlsa_usage, r.tlsa_selector, r.tlsa_matching, r.tlsa_data);
    if (m.ok() && *m) ++matched;
  }
  if (matched == 0) {
    return {{check, Status::kFailed,
             absl::StrCat("none of the ", answer->records.size(),
                          " TLSA records at ", name, " matches ", cert_file,
                          ": senders that use DANE defer all mail to this "
                          "host"),
             fix}};
  }
  return {{check, Status::kOk,
           absl::StrCat(matched, " of ", answer->records.size(),
                        " TLSA records match ", cert_file)}};
}

}  // namespace peregrine::doctor
