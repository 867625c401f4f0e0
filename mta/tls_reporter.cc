#include "mta/tls_reporter.h"

#include <curl/curl.h>
#include <zlib.h>

#include <fstream>
#include <mutex>
#include <sstream>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "base/files.h"
#include "base/log.h"
#include "base/mime.h"
#include "nlohmann/json.hpp"

namespace peregrine {
namespace {

constexpr char kLog[] = "tls-report";

size_t Discard(char*, size_t size, size_t n, void*) { return size * n; }

std::string PolicyType(absl::string_view tls_policy) {
  if (absl::StartsWith(tls_policy, "mta-sts")) return "sts";
  if (absl::StartsWith(tls_policy, "dane")) return "tlsa";
  return "no-policy-found";
}

}  // namespace

TlsReporter::TlsReporter(TlsReporterOptions options)
    : options_(std::move(options)) {
  {
    absl::MutexLock lock(&mu_);
    period_start_ = PeriodStart(absl::Now());
  }
  Load();
  thread_ = std::thread([this] { Run(); });
}

TlsReporter::~TlsReporter() {
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
  }
  thread_.join();
  Save();
}

absl::Time TlsReporter::PeriodStart(absl::Time now) const {
  int64_t step = std::max<int64_t>(1, absl::ToInt64Seconds(options_.interval));
  int64_t t = absl::ToUnixSeconds(now);
  return absl::FromUnixSeconds(t - t % step);  // UTC days for 24h.
}

void TlsReporter::OnOutcome(const outcome::Outcome& o) {
  bool delivered = o.kind == outcome::Kind::kDelivered;
  bool failed = o.kind == outcome::Kind::kDeferred && o.attempted &&
                !o.tls_failure.empty();
  // A smarthost's session, or an operator's (a queue transfer): not one
  // with the domain.
  if ((!delivered && !failed) || o.tls_policy == "smarthost" ||
      !o.operator_action.empty()) {
    return;
  }
  size_t at = o.recipient.rfind('@');
  if (at == std::string::npos) return;
  std::string domain = absl::AsciiStrToLower(o.recipient.substr(at + 1));
  absl::MutexLock lock(&mu_);
  auto it = counts_.find(domain);
  if (it == counts_.end()) {
    if (counts_.size() >= kMaxDomains) {
      ++dropped_;
      return;
    }
    it = counts_.emplace(domain, Counts{}).first;
  }
  Counts& c = it->second;
  std::string type = PolicyType(o.tls_policy);
  if (type != "no-policy-found" || c.policy_type == "no-policy-found") {
    c.policy_type = type;
  }
  if (o.tls_failure.empty()) {
    ++c.successful;
    return;
  }
  std::tuple<std::string, std::string, std::string> key{o.tls_failure, o.mx,
                                                        o.ip};
  // A domain's failure details are bounded too: past kMaxDetails kinds the
  // rest count under their result type alone.
  if (!c.failed.contains(key) && c.failed.size() >= kMaxDetails) {
    key = {o.tls_failure, "", ""};
  }
  ++c.failed[key];
}

uint64_t TlsReporter::sent() const {
  absl::MutexLock lock(&mu_);
  return sent_;
}

uint64_t TlsReporter::dropped() const {
  absl::MutexLock lock(&mu_);
  return dropped_;
}

void TlsReporter::Run() {
  while (true) {
    absl::Time start;
    std::map<std::string, Counts> counts;
    {
      absl::MutexLock lock(&mu_);
      auto stopping = [this]()
                          ABSL_SHARED_LOCKS_REQUIRED(mu_) { return stop_; };
      mu_.AwaitWithTimeout(absl::Condition(&stopping), absl::Seconds(1));
      if (stop_) return;
      absl::Time now = absl::Now();
      if (now < period_start_ + options_.interval) continue;
      start = period_start_;
      counts = std::move(counts_);
      counts_.clear();
      period_start_ = PeriodStart(now);
    }
    SendPeriod(start, start + options_.interval, std::move(counts));
  }
}

void TlsReporter::SendPeriod(absl::Time start, absl::Time end,
                             std::map<std::string, Counts> counts) {
  for (const auto& [domain, c] : counts) SendOne(domain, c, start, end);
}

std::string TlsReporter::Gzip(const std::string& data) {
  z_stream z{};
  // 16 + 15 window bits: a gzip wrapper.
  deflateInit2(&z, Z_BEST_COMPRESSION, Z_DEFLATED, 16 + MAX_WBITS, 8,
               Z_DEFAULT_STRATEGY);
  std::string out(deflateBound(&z, data.size()) + 32, '\0');
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(data.data()));
  z.avail_in = static_cast<uInt>(data.size());
  z.next_out = reinterpret_cast<Bytef*>(out.data());
  z.avail_out = static_cast<uInt>(out.size());
  deflate(&z, Z_FINISH);
  out.resize(z.total_out);
  deflateEnd(&z);
  return out;
}

std::string TlsReporter::ReportMail(
    const std::string& from, const std::string& to, const std::string& domain,
    const std::string& submitter, const std::string& report_id,
    const std::string& file_name, const std::string& gzipped, absl::Time now) {
  std::string boundary = absl::StrCat("tlsrpt-", absl::ToUnixNanos(now));
  return absl::StrCat(
      "From: <", from, ">\r\nTo: <", to,
      ">\r\nSubject: Report Domain: ", domain, " Submitter: ", submitter,
      " Report-ID: <", report_id, ">\r\nDate: ",
      absl::FormatTime("%a, %d %b %Y %H:%M:%S +0000", now, absl::UTCTimeZone()),
      "\r\nMessage-ID: <", report_id, ">\r\nTLS-Report-Domain: ", domain,
      "\r\nTLS-Report-Submitter: ", submitter,
      "\r\nMIME-Version: 1.0\r\n"
      "Content-Type: multipart/report; report-type=\"tlsrpt\";\r\n"
      " boundary=\"",
      boundary, "\"\r\n\r\n--", boundary,
      "\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
      "This is an aggregate TLS report (RFC 8460) from ",
      submitter, " for ", domain, ".\r\n\r\n--", boundary,
      "\r\nContent-Type: application/tlsrpt+gzip\r\n"
      "Content-Transfer-Encoding: base64\r\n"
      "Content-Disposition: attachment;\r\n filename=\"",
      file_name, "\"\r\n\r\n", Base64Lines(gzipped), "\r\n--", boundary,
      "--\r\n");
}

void TlsReporter::SendOne(const std::string& domain, const Counts& c,
                          absl::Time start, absl::Time end) {
  dns::BlockingClient dns(options_.dns);
  absl::StatusOr<dns::BlockingAnswer> txt =
      dns.Lookup(absl::StrCat("_smtp._tls.", domain), dns::kTxt);
  if (!txt.ok()) {
    log::Warn(kLog, "%s: _smtp._tls look-up failed (%s); no report", domain,
              txt.status().message());
    return;
  }
  std::vector<std::string> texts;
  for (const dns::Record& r : txt->records) {
    texts.push_back(absl::StrJoin(r.texts, ""));
  }
  absl::StatusOr<std::vector<std::string>> rua =
      delivery::ParseTlsRptRecord(texts);
  if (!rua.ok()) {
    if (!absl::IsNotFound(rua.status())) {
      log::Warn(kLog, "%s: _smtp._tls record: %s; no report", domain,
                rua.status().message());
    }
    return;
  }
  delivery::TlsReport report;
  report.organization = options_.organization;
  report.contact = options_.contact;
  report.report_id = absl::StrCat(
      absl::FormatTime("%Y%m%dT%H%M%SZ", start, absl::UTCTimeZone()), ".",
      domain, "@", options_.submitter);
  report.start = start;
  report.end = end;
  delivery::TlsPolicyResult p;
  p.policy_type = c.policy_type;
  p.policy_domain = domain;
  if (c.policy_type == "sts" && options_.sts != nullptr) {
    if (auto e = options_.sts->Get(domain, absl::Now())) {
      const char* mode =
          e->policy.mode == delivery::StsMode::kEnforce   ? "enforce"
          : e->policy.mode == delivery::StsMode::kTesting ? "testing"
                                                          : "none";
      p.policy_string = {"version: STSv1", absl::StrCat("mode: ", mode)};
      for (const std::string& mx : e->policy.mx) {
        p.policy_string.push_back(absl::StrCat("mx: ", mx));
        p.mx_host.push_back(mx);
      }
      p.policy_string.push_back(absl::StrCat("max_age: ", e->policy.max_age));
    }
  }
  p.successful = c.successful;
  for (const auto& [key, n] : c.failed) {
    const auto& [type, mx, ip] = key;
    delivery::TlsFailureDetail f;
    f.result_type = type;
    f.receiving_mx_hostname = mx;
    f.receiving_ip = ip;
    f.failed_session_count = n;
    p.failed += n;
    p.failures.push_back(std::move(f));
  }
  report.policies.push_back(std::move(p));
  absl::StatusOr<std::string> json = delivery::TlsReportJson(report);
  if (!json.ok()) {
    log::Error(kLog, "%s: report not made: %s", domain,
               json.status().message());
    return;
  }
  std::string gzipped = Gzip(*json);
  std::string file =
      delivery::TlsReportFileName(options_.submitter, domain, report);
  for (const std::string& uri : *rua) {
    absl::Status s;
    if (absl::StartsWith(uri, "mailto:")) {
      std::string to(absl::StripPrefix(uri, "mailto:"));
      to = to.substr(0, to.find('?'));
      if (!options_.send_mail) {
        s = absl::FailedPreconditionError("no relay listener to send from");
      } else {
        s = options_.send_mail(
            options_.from, to,
            ReportMail(options_.from, to, domain, options_.submitter,
                       report.report_id, file, gzipped, absl::Now()));
      }
    } else {
      // https://host[:port]/path, the host resolved with our own DNS.
      absl::string_view rest = absl::StripPrefix(uri, "https://");
      std::string hostport(rest.substr(0, rest.find('/')));
      std::string host = hostport.substr(0, hostport.find(':'));
      std::string port = hostport.find(':') == std::string::npos
                             ? "443"
                             : hostport.substr(hostport.find(':') + 1);
      std::vector<std::string> ips;
      for (uint16_t type : {uint16_t{dns::kA}, uint16_t{dns::kAaaa}}) {
        auto a = dns.Lookup(host, type);
        if (!a.ok()) continue;
        for (const dns::Record& r : a->records) {
          std::string ip = r.address.ToString();
          ips.push_back(type == dns::kAaaa ? absl::StrCat("[", ip, "]") : ip);
        }
      }
      if (ips.empty()) {
        s = absl::UnavailableError(absl::StrCat(host, " has no address"));
      } else {
        CURL* curl = curl_easy_init();
        std::string resolve =
            absl::StrCat(host, ":", port, ":", absl::StrJoin(ips, ","));
        curl_slist* resolves = curl_slist_append(nullptr, resolve.c_str());
        curl_slist* headers =
            curl_slist_append(nullptr, "Content-Type: application/tlsrpt+gzip");
        curl_easy_setopt(curl, CURLOPT_URL, uri.c_str());
        curl_easy_setopt(curl, CURLOPT_RESOLVE, resolves);
        curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "https");
        curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
        curl_easy_setopt(curl, CURLOPT_POSTFIELDS, gzipped.data());
        curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE_LARGE,
                         static_cast<curl_off_t>(gzipped.size()));
        curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, 30000L);
        curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, Discard);
        if (!options_.ca_file.empty()) {
          curl_easy_setopt(curl, CURLOPT_CAINFO, options_.ca_file.c_str());
        }
        curl_easy_setopt(curl, CURLOPT_USERAGENT, "peregrine-tlsrpt");
        CURLcode rc = curl_easy_perform(curl);
        long status = 0;
        curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
        curl_slist_free_all(headers);
        curl_slist_free_all(resolves);
        curl_easy_cleanup(curl);
        if (rc != CURLE_OK) {
          s = absl::UnavailableError(curl_easy_strerror(rc));
        } else if (status < 200 || status > 299) {
          s = absl::UnavailableError(absl::StrCat("answered HTTP ", status));
        }
      }
    }
    if (s.ok()) {
      log::Info(kLog, "%s: report %s sent to %s (%d successful, %d failed)",
                domain, report.report_id, uri, report.policies[0].successful,
                report.policies[0].failed);
      absl::MutexLock lock(&mu_);
      ++sent_;
    } else {
      log::Warn(kLog, "%s: report to %s not sent: %s", domain, uri,
                s.message());
    }
  }
}

void TlsReporter::Save() {
  if (options_.state_file.empty()) return;
  nlohmann::json j;
  {
    absl::MutexLock lock(&mu_);
    j["period_start"] = absl::ToUnixSeconds(period_start_);
    nlohmann::json domains = nlohmann::json::object();
    for (const auto& [domain, c] : counts_) {
      nlohmann::json failed = nlohmann::json::array();
      for (const auto& [key, n] : c.failed) {
        const auto& [type, mx, ip] = key;
        failed.push_back({type, mx, ip, n});
      }
      domains[domain] = {{"policy_type", c.policy_type},
                         {"successful", c.successful},
                         {"failed", failed}};
    }
    j["domains"] = std::move(domains);
  }
  std::string text =
      j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  absl::Status s = WriteFileAtomically(options_.state_file, text);
  if (!s.ok()) {
    log::Warn(kLog, "the counts of this period are lost: %s", s.message());
  }
}

void TlsReporter::Load() {
  if (options_.state_file.empty()) return;
  std::ifstream in(options_.state_file);
  if (!in) return;
  std::stringstream text;
  text << in.rdbuf();
  nlohmann::json j = nlohmann::json::parse(text.str(), nullptr, false);
  auto bad = [&] {
    log::Warn(kLog, "%s is not readable; this period's counts start again",
              options_.state_file);
  };
  if (!j.is_object() || !j.contains("period_start") ||
      !j["period_start"].is_number_integer() || !j.contains("domains") ||
      !j["domains"].is_object()) {
    return bad();
  }
  std::map<std::string, Counts> counts;
  for (const auto& [domain, d] : j["domains"].items()) {
    if (!d.is_object() || !d.contains("policy_type") ||
        !d["policy_type"].is_string() || !d.contains("successful") ||
        !d["successful"].is_number_integer() || !d.contains("failed") ||
        !d["failed"].is_array()) {
      return bad();
    }
    Counts c;
    c.policy_type = d["policy_type"].get<std::string>();
    c.successful = d["successful"].get<int64_t>();
    for (const auto& f : d["failed"]) {
      if (!f.is_array() || f.size() != 4 || !f[0].is_string() ||
          !f[1].is_string() || !f[2].is_string() || !f[3].is_number_integer()) {
        return bad();
      }
      c.failed[{f[0].get<std::string>(), f[1].get<std::string>(),
                f[2].get<std::string>()}] = f[3].get<int64_t>();
    }
    counts[domain] = std::move(c);
    if (counts.size() >= kMaxDomains) break;
  }
  absl::MutexLock lock(&mu_);
  // A period that ended while the daemon was down is sent by Run() at once.
  period_start_ = absl::FromUnixSeconds(j["period_start"].get<int64_t>());
  counts_ = std::move(counts);
}

}  // namespace peregrine
