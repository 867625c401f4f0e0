#include "mta/dns_records.h"

#include <arpa/inet.h>
#include <ifaddrs.h>
#include <netinet/in.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <algorithm>
#include <cstdio>
#include <iostream>
#include <memory>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "dkim/key.h"
#include "dkim/signing_table.h"
#include "mta/config.h"

namespace peregrine {
namespace {

// "192.0.2.10" -> "10.2.0.192.in-addr.arpa."; IPv6 by nibbles; "" if
// `ip` is neither.
std::string ReverseName(const std::string& ip) {
  in_addr v4;
  if (inet_pton(AF_INET, ip.c_str(), &v4) == 1) {
    const auto* b = reinterpret_cast<const unsigned char*>(&v4);
    return absl::StrFormat("%d.%d.%d.%d.in-addr.arpa.", b[3], b[2], b[1], b[0]);
  }
  in6_addr v6;
  if (inet_pton(AF_INET6, ip.c_str(), &v6) == 1) {
    std::string out;
    for (int i = 15; i >= 0; --i) {
      absl::StrAppendFormat(&out, "%x.%x.", v6.s6_addr[i] & 0xf,
                            v6.s6_addr[i] >> 4);
    }
    return out + "ip6.arpa.";
  }
  return "";
}

bool IsV6(const std::string& ip) { return absl::StrContains(ip, ':'); }

// RFC 1918 and unique-local addresses: behind NAT, not what receivers see.
bool Private(const std::string& ip) {
  return absl::StartsWith(ip, "10.") || absl::StartsWith(ip, "192.168.") ||
         (absl::StartsWith(ip, "172.") && ip.size() > 6 &&
          std::stoi(ip.substr(4, 2)) >= 16 &&
          std::stoi(ip.substr(4, 2)) <= 31) ||
         absl::StartsWith(absl::AsciiStrToLower(ip), "fd") ||
         absl::StartsWith(absl::AsciiStrToLower(ip), "fc");
}

}  // namespace

std::vector<std::string> HostAddresses() {
  std::vector<std::string> out;
  ifaddrs* list = nullptr;
  if (getifaddrs(&list) != 0) return out;
  for (ifaddrs* i = list; i != nullptr; i = i->ifa_next) {
    if (i->ifa_addr == nullptr) continue;
    char text[INET6_ADDRSTRLEN] = {};
    if (i->ifa_addr->sa_family == AF_INET) {
      auto* a = reinterpret_cast<sockaddr_in*>(i->ifa_addr);
      if ((ntohl(a->sin_addr.s_addr) >> 24) == 127) continue;
      inet_ntop(AF_INET, &a->sin_addr, text, sizeof(text));
    } else if (i->ifa_addr->sa_family == AF_INET6) {
      auto* a = reinterpret_cast<sockaddr_in6*>(i->ifa_addr);
      if (IN6_IS_ADDR_LOOPBACK(&a->sin6_addr) ||
          IN6_IS_ADDR_LINKLOCAL(&a->sin6_addr)) {
        continue;
      }
      inet_ntop(AF_INET6, &a->sin6_addr, text, sizeof(text));
    } else {
      continue;
    }
    if (std::find(out.begin(), out.end(), text) == out.end()) {
      out.push_back(text);
    }
  }
  freeifaddrs(list);
  return out;
}

std::string Records(const RecordsInput& in) {
  const std::string d = absl::StrCat(in.domain, ".");
  const std::string host = absl::StrCat(in.hostname, ".");
  const std::string report = in.report_address.empty()
                                 ? absl::StrCat("postmaster@", in.domain)
                                 : in.report_address;
  std::string out = absl::StrCat(
      "; DNS records for ", in.domain, " (peregrine dns-records).\n",
      "; Peregrine sends and receives as ", in.hostname,
      " (server.hostname).\n",
      absl::StrContains(in.hostname, '.')
          ? ""
          : absl::StrCat("; WARNING: \"", in.hostname,
                         "\" is not a full host name; receivers want one "
                         "that resolves: set server.hostname = "
                         "\"mail.",
                         in.domain, "\"\n"),
      "\n");
  // MX and the host's addresses.
  absl::StrAppend(&out, "; Mail for ", in.domain, " comes to this host:\n", d,
                  "\tIN MX\t10 ", host, "\n");
  const bool host_in_zone =
      absl::EndsWith(in.hostname, "." + in.domain) || in.hostname == in.domain;
  if (!host_in_zone) {
    absl::StrAppend(&out, "; (the A/AAAA records below belong in the zone of ",
                    in.hostname, ")\n");
  }
  if (in.addresses.empty()) {
    absl::StrAppend(&out,
                    "; No egress address known: give them with --ip, or "
                    "list [[delivery.sources]].\n");
  }
  for (const std::string& ip : in.addresses) {
    absl::StrAppend(
        &out, host, "\tIN ", IsV6(ip) ? "AAAA" : "A", "\t", ip,
        Private(ip) ? "\t; private: put your public address here" : "", "\n");
  }
  // SPF.
  std::string spf = "v=spf1";
  for (const std::string& ip : in.addresses) {
    if (Private(ip)) continue;
    absl::StrAppend(&spf, IsV6(ip) ? " ip6:" : " ip4:", ip);
  }
  absl::StrAppend(&spf, " mx ~all");
  absl::StrAppend(
      &out, "\n; SPF: the addresses that may send for ", in.domain,
      " (add what else sends for it; make ~all -all once the DMARC reports "
      "show nothing else):\n",
      d, "\tIN TXT\t\"", spf, "\"\n");
  // DKIM.
  absl::StrAppend(&out, "\n; DKIM: the public half of each signing key:\n");
  if (in.dkim.empty()) {
    absl::StrAppend(&out, "; none configured for ", in.domain,
                    ": make one with `peregrine dkim keygen --domain ",
                    in.domain, " --selector s1` and add it to [[dkim.keys]]\n");
  }
  for (const RecordsInput::Dkim& k : in.dkim) {
    absl::StrAppend(&out, k.selector, "._domainkey.", k.domain, ".\tIN TXT\t( ",
                    dkim::QuoteTxt(k.record), " )\n");
  }
  // DMARC.
  absl::StrAppend(
      &out,
      "\n; DMARC: start with p=none and read the reports; then p=quarantine, "
      "then p=reject:\n",
      "_dmarc.", d, "\tIN TXT\t\"v=DMARC1; p=none; rua=mailto:", report,
      "; adkim=r; aspf=r\"\n");
  // MTA-STS and TLS-RPT.
  std::string id =
      absl::FormatTime("%Y%m%d%H%M%S", in.now, absl::UTCTimeZone());
  absl::StrAppend(
      &out,
      "\n; MTA-STS: senders insist on TLS to your MX. Serve this file at\n"
      "; https://mta-sts.",
      in.domain,
      "/.well-known/mta-sts.txt (a valid certificate for that name):\n"
      ";   version: STSv1\n;   mode: testing\n;   mx: ",
      in.hostname,
      "\n;   max_age: 86400\n"
      "; then publish its id (change it whenever the file changes), and "
      "mode: enforce once the TLS reports are clean:\n",
      "_mta-sts.", d, "\tIN TXT\t\"v=STSv1; id=", id, "\"\n",
      "\n; TLS-RPT: where senders report TLS failures to your MX:\n",
      "_smtp._tls.", d, "\tIN TXT\t\"v=TLSRPTv1; rua=mailto:", report, "\"\n");
  // DANE.
  if (!in.tlsa.empty()) {
    absl::StrAppend(
        &out,
        "\n; DANE: senders that validate DNSSEC check your certificate "
        "against this\n; (only in a DNSSEC-signed zone; renew with the same "
        "key, or publish the\n; new key's record beside this one before "
        "switching):\n",
        "_25._tcp.", host, "\tIN TLSA\t", in.tlsa, "\n");
  }
  // PTR.
  absl::StrAppend(&out,
                  "\n; Reverse DNS: not in your zone; ask your VPS provider "
                  "(its panel) for these:\n");
  for (const std::string& ip : in.addresses) {
    if (Private(ip)) continue;
    absl::StrAppend(&out, "; ", ReverseName(ip), "\tIN PTR\t", host, "\n");
  }
  return out;
}

int DnsRecordsCommand(const DnsRecordsArgs& a, std::ostream& out,
                      std::ostream& err) {
  const char* name = "peregrine dns-records";
  absl::StatusOr<Config> config =
      a.config_path.empty() ? DefaultConfig() : LoadConfigFile(a.config_path);
  if (!config.ok()) {
    err << name << ": " << config.status().message() << "\n";
    return 2;
  }
  std::string domain = absl::AsciiStrToLower(a.domain);
  if (domain.empty() || !absl::StrContains(domain, '.') ||
      absl::StrContains(domain, ' ') || absl::StrContains(domain, '@')) {
    err << name << ": --domain: \"" << a.domain
        << "\" is not a domain (like example.com)\n";
    return 2;
  }
  RecordsInput in;
  in.domain = domain;
  in.hostname = config->EffectiveHostname();
  in.report_address = a.report_address;
  in.now = absl::Now();
  for (const std::string& ip : a.addresses) {
    if (ReverseName(ip).empty()) {
      err << name << ": --ip: \"" << ip << "\" is not an IP address\n";
      return 2;
    }
    in.addresses.push_back(ip);
  }
  if (in.addresses.empty()) {
    for (const delivery::Source& s : config->delivery.sources) {
      if (!s.address.empty()) in.addresses.push_back(s.address);
    }
  }
  if (in.addresses.empty()) in.addresses = HostAddresses();
  auto table = dkim::SigningTable::Load(config->dkim);
  for (const auto& e : table->entries()) {
    bool ours = e.spec.domain == domain;
    for (const std::string& m : e.spec.match) ours = ours || m == domain;
    if (!ours) continue;
    if (!e.signer.ok()) {
      err << name << ": DKIM key " << e.spec.selector << "._domainkey."
          << e.spec.domain << ": " << e.signer.status().message() << "\n";
      return 2;
    }
    in.dkim.push_back(
        {e.spec.domain, e.spec.selector, e.signer->key().DnsRecord()});
  }
  if (!config->tls_cert_file.empty()) {
    absl::StatusOr<std::string> tlsa = TlsaRecordFor(config->tls_cert_file);
    if (!tlsa.ok()) {
      err << name << ": tls.cert_file: " << tlsa.status().message() << "\n";
      return 2;
    }
    in.tlsa = *tlsa;
  }
  out << Records(in);
  return 0;
}

absl::StatusOr<std::string> TlsaRecordFor(const std::string& cert_file) {
  std::unique_ptr<FILE, int (*)(FILE*)> f(fopen(cert_file.c_str(), "r"),
                                          fclose);
  if (f == nullptr) {
    return absl::NotFoundError(absl::StrCat("cannot read ", cert_file));
  }
  std::unique_ptr<X509, void (*)(X509*)> leaf(
      PEM_read_X509(f.get(), nullptr, nullptr, nullptr), X509_free);
  if (leaf == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat(cert_file, " holds no certificate"));
  }
  unsigned char* der = nullptr;
  int len = i2d_X509_PUBKEY(X509_get_X509_PUBKEY(leaf.get()), &der);
  if (len <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(cert_file, ": its public key cannot be read"));
  }
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  EVP_Digest(der, static_cast<size_t>(len), digest, &n, EVP_sha256(), nullptr);
  OPENSSL_free(der);
  return absl::StrCat("3 1 1 ", absl::BytesToHexString(absl::string_view(
                                    reinterpret_cast<char*>(digest), n)));
}

}  // namespace peregrine
