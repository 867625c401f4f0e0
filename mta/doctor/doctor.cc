// Over 800 lines, one concern: the checks of `peregrine doctor`, each a
// short function over the same DNS client and findings list; split, they
// would share all of that through a header of their own.
#include "mta/doctor/doctor.h"

#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>
#include <openssl/x509v3.h>
#include <sys/socket.h>

#include <algorithm>
#include <cstdio>
#include <memory>
#include <optional>
#include <ostream>
#include <set>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "dkim/signing_table.h"
#include "dns/blocking_client.h"
#include "mta/blocking_smtp.h"
#include "mta/config.h"
#include "mta/dns_records.h"
#include "mta/doctor/cluster_checks.h"
#include "mta/doctor/spf.h"
#include "mta/doctor/tls_checks.h"
#include "nlohmann/json.hpp"

namespace peregrine::doctor {
namespace {

class Doctor {
 public:
  Doctor(const Config& config, const DoctorArgs& args)
      : config_(config),
        args_(args),
        dns_([&] {
          dns::BlockingOptions o;
          o.servers = config.dns_servers;
          o.timeout = config.dns_timeout > absl::ZeroDuration()
                          ? config.dns_timeout
                          : absl::Seconds(3);
          o.tries = std::max(1, config.dns_tries);
          return o;
        }()),
        hostname_(absl::AsciiStrToLower(config.EffectiveHostname())) {}

  std::vector<Finding> Run();

 private:
  void Add(std::string check, Status status, std::string found,
           std::string fix = "") {
    findings_.push_back(
        {std::move(check), status, std::move(found), std::move(fix)});
  }
  // The records, or nullopt after adding a warning that DNS failed.
  std::optional<std::vector<dns::Record>> Ask(const std::string& check,
                                              const std::string& name,
                                              uint16_t type) {
    auto a = dns_.Lookup(name, type);
    if (!a.ok()) {
      Add(check, Status::kWarning,
          absl::StrCat("could not ask DNS: ", a.status().message()),
          absl::StrCat("check [dns] servers (",
                       absl::StrJoin(dns_.servers(), ", "),
                       ") and run doctor again"));
      return std::nullopt;
    }
    return a->records;
  }
  // TXT records at `name`, each joined, that start with `prefix`.
  std::optional<std::vector<std::string>> Txt(const std::string& check,
                                              const std::string& name,
                                              absl::string_view prefix) {
    auto records = Ask(check, name, dns::kTxt);
    if (!records) return std::nullopt;
    std::vector<std::string> out;
    for (const dns::Record& r : *records) {
      std::string text = absl::StrJoin(r.texts, "");
      if (absl::StartsWithIgnoreCase(text, prefix)) out.push_back(text);
    }
    return out;
  }
  std::vector<dns::IpAddress> Addresses(const std::string& name) {
    std::vector<dns::IpAddress> out;
    for (uint16_t type : {dns::kA, dns::kAaaa}) {
      auto a = dns_.Lookup(name, type);
      if (!a.ok()) continue;
      for (const dns::Record& r : a->records) out.push_back(r.address);
    }
    return out;
  }

  void Hostname();
  void Ptr(const dns::IpAddress& ip);
  void Spf(const std::string& domain);
  void Dkim(const std::string& domain);
  void Dmarc(const std::string& domain);
  void Mx(const std::string& domain);
  void OptionalTxt(const std::string& domain);
  void Certificate();
  void Port25();
  void Listeners();
  void OpenRelay();

  const Config& config_;
  const DoctorArgs& args_;
  dns::BlockingClient dns_;
  const std::string hostname_;
  std::vector<dns::IpAddress> egress_;
  std::vector<Finding> findings_;
};

std::string Joined(const std::vector<dns::IpAddress>& ips) {
  std::vector<std::string> s;
  for (const dns::IpAddress& ip : ips) s.push_back(ip.ToString());
  return absl::StrJoin(s, ", ");
}

bool Contains(const std::vector<dns::IpAddress>& ips,
              const dns::IpAddress& ip) {
  return std::find(ips.begin(), ips.end(), ip) != ips.end();
}

// The organizational domain, roughly: the last two labels (three under a
// two-letter second level such as co.uk). Enough for alignment advice.
std::string OrgDomain(const std::string& d) {
  std::vector<std::string> l = absl::StrSplit(d, '.');
  size_t keep = 2;
  if (l.size() >= 3 && l[l.size() - 2].size() <= 3 &&
      l[l.size() - 1].size() == 2) {
    keep = 3;
  }
  if (l.size() <= keep) return d;
  return absl::StrJoin(l.end() - keep, l.end(), ".");
}

void Doctor::Hostname() {
  const std::string check = "hostname";
  if (!absl::StrContains(hostname_, '.')) {
    Add(check, Status::kFailed,
        absl::StrCat("'", hostname_,
                     "' is not a full name; receivers distrust "
                     "an EHLO that is not one"),
        absl::StrCat("set server.hostname = \"mail.example.com\" in ",
                     config_.source,
                     " (a name whose A record and PTR point here)"));
    return;
  }
  if (!Ask(check, hostname_, dns::kA)) return;  // DNS down: said so.
  std::vector<dns::IpAddress> found = Addresses(hostname_);
  if (found.empty()) {
    Add(check, Status::kFailed,
        absl::StrCat(hostname_, " has no A or AAAA record"),
        absl::StrCat(hostname_, ". IN A ",
                     egress_.empty() ? "<this server's address>"
                                     : egress_[0].ToString()));
    return;
  }
  std::vector<dns::IpAddress> missing;
  for (const dns::IpAddress& ip : egress_) {
    if (!Contains(found, ip)) missing.push_back(ip);
  }
  if (missing.empty()) {
    Add(check, Status::kOk,
        absl::StrCat(hostname_, " resolves to ", Joined(found)));
  } else {
    std::string fix;
    for (const dns::IpAddress& ip : missing) {
      absl::StrAppend(&fix, fix.empty() ? "" : "; ", hostname_, ". IN ",
                      ip.family() == AF_INET ? "A" : "AAAA", " ",
                      ip.ToString());
    }
    Add(check, Status::kWarning,
        absl::StrCat(hostname_, " resolves to ", Joined(found),
                     ", not to the egress address ", Joined(missing)),
        fix);
  }
}

void Doctor::Ptr(const dns::IpAddress& ip) {
  std::string check = absl::StrCat("ptr ", ip.ToString());
  auto names = Ask(check, ip.ReverseName(), dns::kPtr);
  if (!names) return;
  std::string ask =
      absl::StrCat("ask your VPS provider to set the reverse DNS (PTR) of ",
                   ip.ToString(), " to ", hostname_);
  if (names->empty()) {
    Add(check, Status::kFailed,
        absl::StrCat(ip.ToString(),
                     " has no PTR record; Gmail and Outlook refuse or junk "
                     "mail from addresses without one"),
        ask);
    return;
  }
  std::string name = dns::NormalizeName((*names)[0].target);
  if (!Contains(Addresses(name), ip)) {
    Add(check, Status::kFailed,
        absl::StrCat("the PTR of ", ip.ToString(), " is ", name,
                     ", which does not resolve back to it (no forward-"
                     "confirmed reverse DNS)"),
        absl::StrCat(name, ". IN ", ip.family() == AF_INET ? "A" : "AAAA", " ",
                     ip.ToString(), "  (or: ", ask, ")"));
    return;
  }
  if (name != hostname_) {
    Add(check, Status::kWarning,
        absl::StrCat("the PTR of ", ip.ToString(), " is ", name,
                     " (confirmed), but Peregrine says EHLO ", hostname_),
        absl::StrCat("set server.hostname = \"", name, "\", or ", ask));
    return;
  }
  Add(check, Status::kOk,
      absl::StrCat(ip.ToString(), " → ", name, " → ", ip.ToString(),
                   ", the EHLO name"));
}

void Doctor::Spf(const std::string& domain) {
  std::string check = absl::StrCat("spf ", domain);
  std::string wanted = "v=spf1";
  for (const dns::IpAddress& ip : egress_) {
    absl::StrAppend(&wanted,
                    ip.family() == AF_INET ? " ip4:" : " ip6:", ip.ToString());
  }
  absl::StrAppend(&wanted, " -all");
  std::string fix = absl::StrCat(domain, ". IN TXT \"", wanted, "\"");
  if (egress_.empty()) {
    Add(check, Status::kSkipped, "no egress address to check",
        "name them: peregrine doctor --ip ADDRESS");
    return;
  }
  SpfLookup lookup = [this](const std::string& name, uint16_t type) {
    return dns_.Lookup(name, type);
  };
  std::vector<std::string> failed;
  std::string record;
  for (const dns::IpAddress& ip : egress_) {
    SpfVerdict v = CheckHost(lookup, ip, domain, "");
    if (!v.record.empty()) record = v.record;
    switch (v.result) {
      case SpfResult::kPass:
        break;
      case SpfResult::kNone:
        Add(check, Status::kFailed,
            absl::StrCat(domain,
                         " publishes no SPF record: receivers cannot "
                         "tell your mail from forgeries"),
            fix);
        return;
      case SpfResult::kTempError:
        Add(check, Status::kWarning,
            absl::StrCat("could not evaluate: ", v.explanation));
        return;
      case SpfResult::kPermError:
        Add(check, Status::kFailed,
            absl::StrCat("\"", record,
                         "\" is broken for receivers: ", v.explanation),
            fix);
        return;
      default:
        failed.push_back(absl::StrCat(ip.ToString(), " (",
                                      SpfResultName(v.result), ": ",
                                      v.explanation, ")"));
    }
  }
  if (!failed.empty()) {
    Add(check, Status::kFailed,
        absl::StrCat("\"", record, "\" does not authorise ",
                     absl::StrJoin(failed, ", ")),
        absl::StrCat("add the address to the record, e.g. ", fix));
    return;
  }
  Add(check, Status::kOk,
      absl::StrCat("\"", record, "\" passes for ", Joined(egress_)));
}

// The p= of a DKIM record, without blanks.
std::string PublicKeyOf(const std::string& record) {
  for (absl::string_view tag : absl::StrSplit(record, ';')) {
    tag = absl::StripAsciiWhitespace(tag);
    if (absl::StartsWith(tag, "p=")) {
      std::string p(tag.substr(2));
      p.erase(std::remove_if(p.begin(), p.end(),
                             [](char c) { return absl::ascii_isspace(c); }),
              p.end());
      return p;
    }
  }
  return "";
}

void Doctor::Dkim(const std::string& domain) {
  auto table = dkim::SigningTable::Load(config_.dkim);
  bool any = false;
  for (const auto& e : table->entries()) {
    if (e.spec.domain != domain) continue;
    any = true;
    std::string name =
        absl::StrCat(e.spec.selector, "._domainkey.", e.spec.domain);
    std::string check = absl::StrCat("dkim ", name);
    if (!e.signer.ok()) {
      Add(check, Status::kFailed,
          absl::StrCat("the key cannot be used: ", e.signer.status().message()),
          absl::StrCat("peregrine dkim keygen --domain ", domain,
                       " --selector ", e.spec.selector, " --out ",
                       e.spec.key_file, " --force"));
      continue;
    }
    std::string ours = e.signer->key().DnsRecord();
    std::string fix = absl::StrCat(name, ". IN TXT \"", ours, "\"");
    auto records = Txt(check, name, "");
    if (!records) continue;
    std::vector<std::string> dkim_records;
    for (const std::string& r : *records) {
      if (absl::StrContains(r, "p=")) dkim_records.push_back(r);
    }
    if (dkim_records.empty()) {
      Add(check, Status::kFailed,
          absl::StrCat("no DKIM record at ", name,
                       ": receivers cannot check the signatures"),
          fix);
      continue;
    }
    bool match = false;
    for (const std::string& r : dkim_records) {
      if (PublicKeyOf(r) == PublicKeyOf(ours)) match = true;
    }
    if (!match) {
      Add(check, Status::kFailed,
          absl::StrCat("the record at ", name,
                       " holds another public key than ", e.spec.key_file,
                       ": every signature fails (a rotated key not "
                       "published, or the wrong file)"),
          fix);
      continue;
    }
    Add(check, Status::kOk,
        absl::StrCat("published, and the public half of ", e.spec.key_file));
  }
  if (!any) {
    Add(absl::StrCat("dkim ", domain), Status::kWarning,
        absl::StrCat("no [[dkim.keys]] key signs as ", domain,
                     "; Gmail and Yahoo want bulk mail signed"),
        absl::StrCat("peregrine dkim keygen --domain ", domain,
                     " --selector s1 --out /var/lib/peregrine/", domain,
                     ".key, then a [[dkim.keys]] entry"));
  }
}

void Doctor::Dmarc(const std::string& domain) {
  std::string check = absl::StrCat("dmarc ", domain);
  std::string name = absl::StrCat("_dmarc.", domain);
  std::string fix =
      absl::StrCat(name, ". IN TXT \"v=DMARC1; p=none; rua=mailto:postmaster@",
                   domain, "\"");
  auto records = Txt(check, name, "v=DMARC1");
  if (!records) return;
  if (records->empty() && OrgDomain(domain) != domain) {
    records =
        Txt(check, absl::StrCat("_dmarc.", OrgDomain(domain)), "v=DMARC1");
    if (!records) return;
  }
  if (records->empty()) {
    Add(check, Status::kFailed,
        absl::StrCat("no DMARC record at ", name,
                     "; Gmail and Yahoo require one of bulk senders"),
        fix);
    return;
  }
  if (records->size() > 1) {
    Add(check, Status::kFailed,
        absl::StrCat(records->size(),
                     " DMARC records: receivers ignore them all"),
        "keep one");
    return;
  }
  std::string policy;
  for (absl::string_view tag : absl::StrSplit((*records)[0], ';')) {
    tag = absl::StripAsciiWhitespace(tag);
    if (absl::StartsWith(tag, "p="))
      policy = absl::AsciiStrToLower(tag.substr(2));
  }
  if (policy != "none" && policy != "quarantine" && policy != "reject") {
    Add(check, Status::kFailed,
        absl::StrCat("\"", (*records)[0],
                     "\" has no valid p= (none, quarantine or reject)"),
        fix);
    return;
  }
  // Alignment: a key signing as the domain (or its organization).
  bool dkim_aligned = false;
  for (const dkim::KeySpec& k : config_.dkim.keys) {
    if (OrgDomain(k.domain) == OrgDomain(domain)) dkim_aligned = true;
  }
  if (!dkim_aligned) {
    Add(check, Status::kWarning,
        absl::StrCat("\"", (*records)[0], "\"; no DKIM key of ",
                     OrgDomain(domain),
                     ": only SPF can align, and forwarding breaks SPF"),
        absl::StrCat("peregrine dkim keygen --domain ", domain,
                     " --selector s1"));
    return;
  }
  if (policy == "none") {
    Add(check, Status::kWarning,
        absl::StrCat("\"", (*records)[0],
                     "\": p=none only watches; DKIM aligns"),
        "once the reports show only your own mail, move to p=quarantine");
    return;
  }
  Add(check, Status::kOk, absl::StrCat("\"", (*records)[0], "\"; DKIM aligns"));
}

void Doctor::Mx(const std::string& domain) {
  std::string check = absl::StrCat("mx ", domain);
  std::string fix = absl::StrCat(domain, ". IN MX 10 ", hostname_, ".");
  auto mx = Ask(check, domain, dns::kMx);
  if (!mx) return;
  if (mx->empty()) {
    Add(check, Status::kFailed,
        absl::StrCat(domain,
                     " is a local domain but has no MX record: mail for it "
                     "goes to its A record, or nowhere"),
        fix);
    return;
  }
  std::vector<std::string> hosts;
  bool here = false;
  for (const dns::Record& r : *mx) {
    std::string host = dns::NormalizeName(r.target);
    hosts.push_back(absl::StrCat(r.preference, " ", host));
    if (host == hostname_) here = true;
    for (const dns::IpAddress& ip : Addresses(host)) {
      if (Contains(egress_, ip)) here = true;
    }
  }
  if (!here) {
    Add(check, Status::kFailed,
        absl::StrCat("MX ", absl::StrJoin(hosts, ", "),
                     ": none is this server (", hostname_, ")"),
        fix);
    return;
  }
  Add(check, Status::kOk, absl::StrCat("MX ", absl::StrJoin(hosts, ", ")));
}

void Doctor::OptionalTxt(const std::string& domain) {
  struct Kind {
    const char* check;
    std::string name;
    const char* prefix;
    const char* needs;
    std::string fix;
  };
  for (const Kind& k :
       {Kind{"mta-sts", absl::StrCat("_mta-sts.", domain), "v=STSv1", "id=",
             absl::StrCat("_mta-sts.", domain,
                          ". IN TXT \"v=STSv1; id=20260101T000000\"")},
        Kind{"tls-rpt", absl::StrCat("_smtp._tls.", domain), "v=TLSRPTv1",
             "rua=",
             absl::StrCat("_smtp._tls.", domain,
                          ". IN TXT \"v=TLSRPTv1; rua=mailto:postmaster@",
                          domain, "\"")}}) {
    std::string check = absl::StrCat(k.check, " ", domain);
    auto all = Txt(check, k.name, "");
    if (!all) continue;
    if (all->empty()) {
      Add(check, Status::kSkipped,
          absl::StrCat("not published (optional; peregrine dns-records "
                       "--domain ",
                       domain, " prints it)"));
      continue;
    }
    std::vector<std::string> ours;
    for (const std::string& t : *all) {
      if (absl::StartsWithIgnoreCase(t, k.prefix)) ours.push_back(t);
    }
    if (ours.size() != 1 || !absl::StrContains(ours[0], k.needs)) {
      Add(check, Status::kFailed,
          absl::StrCat(k.name, " holds ", ours.size(), " ", k.prefix,
                       " records; exactly one, with ", k.needs, ", is needed"),
          k.fix);
      continue;
    }
    Add(check, Status::kOk, absl::StrCat("\"", ours[0], "\""));
  }
}

void Doctor::Certificate() {
  const std::string check = "certificate";
  std::string path = config_.tls_cert_file;
  if (path.empty()) {
    Add(check, Status::kWarning,
        "no [tls] cert_file: Peregrine uses a self-signed certificate "
        "(STARTTLS works; clients that verify refuse it)",
        absl::StrCat("certbot certonly --standalone -d ", hostname_,
                     ", then [tls] cert_file and key_file"));
    return;
  }
  std::unique_ptr<FILE, int (*)(FILE*)> f(fopen(path.c_str(), "r"), fclose);
  if (f == nullptr) {
    Add(check, Status::kFailed, absl::StrCat("cannot read ", path),
        "fix tls.cert_file, or let the user peregrine runs as read it");
    return;
  }
  std::unique_ptr<X509, void (*)(X509*)> leaf(
      PEM_read_X509(f.get(), nullptr, nullptr, nullptr), X509_free);
  if (leaf == nullptr) {
    Add(check, Status::kFailed, absl::StrCat(path, " holds no certificate"),
        "point tls.cert_file at the PEM file (fullchain.pem)");
    return;
  }
  std::unique_ptr<STACK_OF(X509), void (*)(STACK_OF(X509)*)> chain(
      sk_X509_new_null(),
      [](STACK_OF(X509) * s) { sk_X509_pop_free(s, X509_free); });
  while (X509* c = PEM_read_X509(f.get(), nullptr, nullptr, nullptr)) {
    sk_X509_push(chain.get(), c);
  }
  std::vector<std::string> problems;
  Status status = Status::kOk;
  int days = 0, seconds = 0;
  ASN1_TIME_diff(&days, &seconds, nullptr, X509_get0_notAfter(leaf.get()));
  if (days < 0 || (days == 0 && seconds < 0)) {
    problems.push_back(absl::StrCat("expired ", -days, " days ago"));
    status = Status::kFailed;
  } else if (days < 14) {
    problems.push_back(absl::StrCat("expires in ", days, " days"));
    if (status == Status::kOk) status = Status::kWarning;
  }
  if (X509_check_host(leaf.get(), hostname_.data(), hostname_.size(), 0,
                      nullptr) != 1) {
    problems.push_back(absl::StrCat("does not name ", hostname_));
    status = Status::kFailed;
  }
  std::unique_ptr<X509_STORE, void (*)(X509_STORE*)> store(X509_STORE_new(),
                                                           X509_STORE_free);
  if (!config_.delivery.ca_file.empty()) {
    X509_STORE_load_locations(store.get(), config_.delivery.ca_file.c_str(),
                              nullptr);
  } else {
    X509_STORE_set_default_paths(store.get());
  }
  std::unique_ptr<X509_STORE_CTX, void (*)(X509_STORE_CTX*)> ctx(
      X509_STORE_CTX_new(), X509_STORE_CTX_free);
  X509_STORE_CTX_init(ctx.get(), store.get(), leaf.get(), chain.get());
  if (X509_verify_cert(ctx.get()) != 1) {
    int e = X509_STORE_CTX_get_error(ctx.get());
    if (e != X509_V_ERR_CERT_HAS_EXPIRED) {
      problems.push_back(absl::StrCat("does not chain to a trusted root: ",
                                      X509_verify_cert_error_string(e)));
      status = Status::kFailed;
    }
  }
  std::string found = absl::StrCat(
      path, ": ", days >= 0 ? absl::StrCat(days, " days left") : "expired");
  if (status == Status::kOk) {
    Add(check, Status::kOk,
        absl::StrCat(found, ", names ", hostname_, ", chain verified"));
    return;
  }
  Add(check, status, absl::StrCat(path, " ", absl::StrJoin(problems, "; ")),
      absl::StrCat("renew it (certbot renew) or get one for ", hostname_,
                   " (certbot certonly --standalone -d ", hostname_,
                   "), with its intermediates (fullchain.pem); SIGHUP "
                   "loads it"));
}

// The Date in an SMTP banner ("… ESMTP Exim 4.96 Sat, 28 Nov 2026 01:00:00
// +0000"), if any.
std::optional<absl::Time> BannerTime(const std::string& banner) {
  static const char* kDays[] = {"Mon,", "Tue,", "Wed,", "Thu,",
                                "Fri,", "Sat,", "Sun,"};
  for (const char* d : kDays) {
    size_t at = banner.find(d);
    if (at == std::string::npos) continue;
    absl::Time t;
    std::string err;
    std::string text = banner.substr(at, 31);
    if (absl::ParseTime("%a, %d %b %Y %H:%M:%S %z", text, &t, &err)) return t;
  }
  return std::nullopt;
}

void Doctor::Port25() {
  if (args_.port25 == "none") return;
  const std::string check = "port 25";
  if (!config_.delivery.smarthost.host.empty()) {
    Add(check, Status::kSkipped,
        absl::StrCat("mail goes through [smarthost] ",
                     config_.delivery.smarthost.host, ":",
                     config_.delivery.smarthost.port,
                     " (send-test checks that path)"));
    return;
  }
  // HOST:PORT, an address, or a domain whose first MX is tried.
  std::string host = args_.port25;
  std::string port = absl::StrCat(config_.delivery.port);
  if (size_t colon = host.rfind(':');
      colon != std::string::npos &&
      std::count(host.begin(), host.end(), ':') == 1) {
    port = host.substr(colon + 1);
    host = host.substr(0, colon);
  }
  if (!dns::IpAddress::Parse(host).ok()) {
    auto mx = Ask(check, host, dns::kMx);
    if (!mx) return;
    std::string exchange = host;
    uint16_t best = 65535;
    for (const dns::Record& r : *mx) {
      if (r.preference < best) {
        best = r.preference;
        exchange = dns::NormalizeName(r.target);
      }
    }
    std::vector<dns::IpAddress> ips = Addresses(exchange);
    if (ips.empty()) {
      Add(check, Status::kWarning,
          absl::StrCat("cannot test: ", exchange, " has no address in DNS"));
      return;
    }
    host = ips[0].ToString();
  }
  auto address = shard::SocketAddress::Parse(
      absl::StrContains(host, ':') ? absl::StrCat("[", host, "]:", port)
                                   : absl::StrCat(host, ":", port));
  if (!address.ok()) {
    Add(check, Status::kWarning,
        absl::StrCat("cannot test: '", args_.port25, "' is no address"));
    return;
  }
  BlockingSmtp smtp;
  absl::Status s = smtp.Connect(*address, args_.port25_timeout_s);
  std::string banner;
  if (s.ok() && smtp.Reply(&banner) == 220) {
    Add(check, Status::kOk,
        absl::StrCat("outbound SMTP reaches ", address->ToString(), ": ",
                     banner.substr(0, 80)));
    smtp.Send("QUIT\r\n");
    std::optional<absl::Time> peer = BannerTime(banner);
    // The banner tells whole seconds.
    absl::Duration skew =
        peer ? absl::Trunc(absl::AbsDuration(absl::Now() - *peer) +
                               absl::Milliseconds(500),
                           absl::Seconds(1))
             : absl::ZeroDuration();
    if (!peer) {
      Add("clock", Status::kSkipped, "the peer's banner tells no time");
    } else if (skew > absl::Seconds(10)) {
      Add("clock", Status::kWarning,
          absl::StrCat("this clock is ", absl::FormatDuration(skew),
                       " off the peer's; Date headers and DKIM times "
                       "look wrong"),
          "timedatectl set-ntp true (or install chrony)");
    } else {
      Add("clock", Status::kOk,
          absl::StrCat("within ", absl::FormatDuration(skew), " of ",
                       address->ToString(), "'s"));
    }
    return;
  }
  std::string why(s.message());
  if (s.ok()) why = absl::StrCat("it answered \"", banner, "\", not 220");
  if (absl::StrContains(why, "timed out")) {
    Add(check, Status::kFailed,
        absl::StrCat("connecting to ", address->ToString(), " timed out after ",
                     args_.port25_timeout_s,
                     " s: your provider blocks outbound port 25"),
        "ask them to open it (many do on request), or relay through "
        "[smarthost] on port 587");
  } else if (absl::StrContains(why, "unreachable")) {
    Add(check, Status::kFailed,
        absl::StrCat("no route to ", address->ToString(), ": ", why),
        "check this host's network (IPv4 or IPv6 egress)");
  } else {
    Add(check, Status::kWarning,
        absl::StrCat(address->ToString(), ": ", why,
                     " (a firewall here, or that host refuses)"));
  }
}

void Doctor::Listeners() {
  for (const ListenerConfig& l : config_.listeners) {
    if (l.kind == ListenerKind::kAdmin || l.addresses.empty()) continue;
    auto address = ListenerAddress(config_, l.kind);
    if (!address.ok()) continue;
    std::string check = absl::StrCat("listener ", l.key);
    BlockingSmtp smtp;
    absl::Status s = smtp.Connect(*address, 5);
    if (!s.ok()) {
      Add(check, Status::kFailed,
          absl::StrCat(address->ToString(), ": ", s.message()),
          "is peregrine running? systemctl status peregrine (or: peregrine "
          "serve)");
      continue;
    }
    if (l.kind == ListenerKind::kSubmissions) {
      auto tls = smtp.StartTls();
      if (!tls.ok()) {
        Add(check, Status::kFailed,
            absl::StrCat(address->ToString(), ": ", tls.status().message()));
        continue;
      }
    }
    std::string banner;
    int code = smtp.Reply(&banner);
    smtp.Send("QUIT\r\n");
    if (code != 220) {
      Add(check, Status::kFailed,
          absl::StrCat(address->ToString(), " answered \"", banner, "\""));
      continue;
    }
    Add(check, Status::kOk,
        absl::StrCat(address->ToString(), ": ", banner.substr(0, 60)));
  }
}

void Doctor::OpenRelay() {
  const std::string check = "open relay";
  auto relay = ListenerAddress(config_, ListenerKind::kRelay);
  if (!relay.ok()) return;
  // A source address the relay does not trust: an egress address, or one
  // of loopback's others when the relay listens there.
  std::vector<std::string> candidates;
  for (const dns::IpAddress& ip : egress_) candidates.push_back(ip.ToString());
  if (relay->family() == AF_INET) {
    for (int i = 2; i < 10; ++i)
      candidates.push_back(absl::StrCat("127.0.0.", i));
  }
  for (const std::string& c : candidates) {
    auto source = shard::SocketAddress::Parse(absl::StrContains(c, ':')
                                                  ? absl::StrCat("[", c, "]:0")
                                                  : absl::StrCat(c, ":0"));
    if (!source.ok() || source->family() != relay->family()) continue;
    bool trusted = false;
    for (const shard::Cidr& net : config_.trusted_networks) {
      if (net.Contains(*source)) trusted = true;
    }
    if (trusted) continue;
    BlockingSmtp smtp;
    absl::Status connected = smtp.Connect(*relay, 5, &*source);
    if (absl::IsUnavailable(connected)) {
      Add(check, Status::kSkipped,
          absl::StrCat("the relay listener ", relay->ToString(),
                       " does not answer: ", connected.message()));
      return;
    }
    std::string reply;
    if (!connected.ok() || smtp.Reply(&reply) != 220) continue;
    smtp.Send("EHLO doctor.invalid\r\n");
    smtp.Reply(&reply);
    smtp.Send("MAIL FROM:<doctor@relay-test.invalid>\r\n");
    smtp.Reply(&reply);
    smtp.Send("RCPT TO:<doctor@relay-test.invalid>\r\n");
    int code = smtp.Reply(&reply);
    smtp.Send("QUIT\r\n");
    if (code >= 200 && code < 300) {
      Add(check, Status::kFailed,
          absl::StrCat("OPEN RELAY: from ", c, ", ", relay->ToString(),
                       " took mail for another domain; spammers find "
                       "such servers within hours"),
          absl::StrCat("narrow relay.trusted_networks in ", config_.source,
                       " to your own networks"));
    } else {
      Add(check, Status::kOk,
          absl::StrCat("from ", c, ", mail for another domain is refused: ",
                       reply.substr(0, 60)));
    }
    return;
  }
  Add(check, Status::kSkipped,
      "no untrusted address to test from (every address of this host is in "
      "relay.trusted_networks)");
}

std::vector<Finding> Doctor::Run() {
  std::vector<std::string> addresses = args_.addresses;
  if (addresses.empty()) {
    for (const delivery::Source& s : config_.delivery.sources) {
      if (!s.address.empty()) addresses.push_back(s.address);
    }
  }
  if (addresses.empty()) addresses = HostAddresses();
  for (const std::string& a : addresses) {
    if (auto ip = dns::IpAddress::Parse(a); ip.ok()) egress_.push_back(*ip);
  }
  Hostname();
  for (const dns::IpAddress& ip : egress_) Ptr(ip);
  std::set<std::string> seen;
  std::vector<std::string> domains = args_.domains;
  if (domains.empty()) {
    for (const dkim::KeySpec& k : config_.dkim.keys)
      domains.push_back(k.domain);
    for (const std::string& d : config_.local_domains) domains.push_back(d);
  }
  if (domains.empty()) {
    Add("domains", Status::kSkipped,
        "no sending domain: none given, no [[dkim.keys]], no local.domains",
        "peregrine doctor --domain example.com");
  }
  for (std::string d : domains) {
    d = absl::AsciiStrToLower(d);
    if (!seen.insert(d).second) continue;
    Spf(d);
    Dkim(d);
    Dmarc(d);
    if (std::find(config_.local_domains.begin(), config_.local_domains.end(),
                  d) != config_.local_domains.end()) {
      Mx(d);
    }
    OptionalTxt(d);
    for (Finding& f :
         StsPolicyChecks(dns_, d, hostname_, config_.delivery.ca_file)) {
      findings_.push_back(std::move(f));
    }
  }
  Certificate();
  for (Finding& f : TlsaChecks(dns_, hostname_, config_.tls_cert_file)) {
    findings_.push_back(std::move(f));
  }
  Port25();
  Listeners();
  OpenRelay();
  for (Finding& f : ClusterChecks(config_)) findings_.push_back(std::move(f));
  return std::move(findings_);
}

const char* StatusName(Status s) {
  switch (s) {
    case Status::kOk:
      return "ok";
    case Status::kWarning:
      return "warning";
    case Status::kFailed:
      return "failed";
    case Status::kSkipped:
      return "skipped";
  }
  return "?";
}

}  // namespace

std::string Render(const std::vector<Finding>& findings, bool json) {
  int counts[4] = {};
  for (const Finding& f : findings) ++counts[static_cast<int>(f.status)];
  if (json) {
    nlohmann::json all = nlohmann::json::array();
    for (const Finding& f : findings) {
      all.push_back({{"check", f.check},
                     {"status", StatusName(f.status)},
                     {"found", f.found},
                     {"fix", f.fix}});
    }
    nlohmann::json out = {{"checks", all},
                          {"ok", counts[0]},
                          {"warnings", counts[1]},
                          {"failed", counts[2]},
                          {"skipped", counts[3]}};
    return out.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) +
           "\n";
  }
  std::string out;
  for (const Finding& f : findings) {
    const char* mark = f.status == Status::kOk        ? "✓"
                       : f.status == Status::kWarning ? "!"
                       : f.status == Status::kFailed  ? "✗"
                                                      : "-";
    absl::StrAppend(&out, mark, " ", f.check, ": ", f.found, "\n");
    if (!f.fix.empty() && f.status != Status::kOk) {
      absl::StrAppend(&out, "    fix: ", f.fix, "\n");
    }
  }
  absl::StrAppend(&out, counts[0], " ok, ", counts[1], " warnings, ", counts[2],
                  " failed, ", counts[3], " skipped\n");
  return out;
}

int DoctorCommand(const DoctorArgs& args, std::ostream& out,
                  std::ostream& err) {
  absl::StatusOr<Config> config = args.config_path.empty()
                                      ? DefaultConfig()
                                      : LoadConfigFile(args.config_path);
  if (!config.ok()) {
    err << "peregrine doctor: " << config.status().message() << "\n";
    return 2;
  }
  if (!args.data_dir.empty()) config->data_dir = args.data_dir;
  for (const std::string& a : args.addresses) {
    if (!dns::IpAddress::Parse(a).ok()) {
      err << "peregrine doctor: --ip: \"" << a << "\" is not an IP address\n";
      return 2;
    }
  }
  for (const std::string& d : args.domains) {
    if (!absl::StrContains(d, '.') || absl::StrContains(d, '@') ||
        absl::StrContains(d, ' ')) {
      err << "peregrine doctor: --domain: \"" << d
          << "\" is not a domain (like example.com)\n";
      return 2;
    }
  }
  Doctor doctor(*config, args);
  std::vector<Finding> findings = doctor.Run();
  out << Render(findings, args.json);
  for (const Finding& f : findings) {
    if (f.status == Status::kFailed) return 1;
  }
  return 0;
}

}  // namespace peregrine::doctor
