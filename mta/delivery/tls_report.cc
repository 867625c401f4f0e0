#include "mta/delivery/tls_report.h"

#include <algorithm>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "nlohmann/json.hpp"

namespace peregrine::delivery {
namespace {

constexpr const char* kResultTypes[] = {
    "starttls-not-supported", "certificate-host-mismatch",
    "certificate-expired",    "certificate-not-trusted",
    "validation-failure",     "tlsa-invalid",
    "dnssec-invalid",         "dane-required",
    "sts-policy-fetch-error", "sts-policy-invalid",
    "sts-webpki-invalid"};

std::string Rfc3339(absl::Time t) {
  return absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", t, absl::UTCTimeZone());
}

}  // namespace

absl::StatusOr<std::string> TlsReportJson(const TlsReport& r) {
  if (r.end < r.start) {
    return absl::InvalidArgumentError("the report ends before it starts");
  }
  nlohmann::json policies = nlohmann::json::array();
  for (const TlsPolicyResult& p : r.policies) {
    if (p.policy_type != "sts" && p.policy_type != "tlsa" &&
        p.policy_type != "no-policy-found") {
      return absl::InvalidArgumentError(
          absl::StrCat("policy type '", p.policy_type,
                       "' is not sts, tlsa or no-policy-found"));
    }
    int64_t detailed = 0;
    nlohmann::json details = nlohmann::json::array();
    for (const TlsFailureDetail& f : p.failures) {
      if (std::find(std::begin(kResultTypes), std::end(kResultTypes),
                    f.result_type) == std::end(kResultTypes)) {
        return absl::InvalidArgumentError(absl::StrCat(
            "result type '", f.result_type, "' is not one of RFC 8460's"));
      }
      detailed += f.failed_session_count;
      nlohmann::json d = {{"result-type", f.result_type},
                          {"failed-session-count", f.failed_session_count}};
      if (!f.sending_mta_ip.empty()) d["sending-mta-ip"] = f.sending_mta_ip;
      if (!f.receiving_mx_hostname.empty()) {
        d["receiving-mx-hostname"] = f.receiving_mx_hostname;
      }
      if (!f.receiving_ip.empty()) d["receiving-ip"] = f.receiving_ip;
      if (!f.failure_reason_code.empty()) {
        d["failure-reason-code"] = f.failure_reason_code;
      }
      details.push_back(std::move(d));
    }
    if (detailed > p.failed || p.successful < 0 || p.failed < 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          p.policy_domain, ": ", detailed, " failed sessions in detail but ",
          p.failed, " counted"));
    }
    nlohmann::json policy = {{"policy-type", p.policy_type},
                             {"policy-domain", p.policy_domain}};
    if (!p.policy_string.empty()) policy["policy-string"] = p.policy_string;
    if (!p.mx_host.empty()) policy["mx-host"] = p.mx_host;
    nlohmann::json entry = {{"policy", policy},
                            {"summary",
                             {{"total-successful-session-count", p.successful},
                              {"total-failure-session-count", p.failed}}}};
    if (!details.empty()) entry["failure-details"] = details;
    policies.push_back(std::move(entry));
  }
  nlohmann::json out = {{"organization-name", r.organization},
                        {"date-range",
                         {{"start-datetime", Rfc3339(r.start)},
                          {"end-datetime", Rfc3339(r.end)}}},
                        {"contact-info", r.contact},
                        {"report-id", r.report_id},
                        {"policies", policies}};
  return out.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

std::string TlsReportFileName(const std::string& sender,
                              const std::string& policy_domain,
                              const TlsReport& r) {
  return absl::StrCat(sender, "!", policy_domain, "!",
                      absl::ToUnixSeconds(r.start), "!",
                      absl::ToUnixSeconds(r.end), "!", r.report_id, ".json.gz");
}

absl::StatusOr<std::vector<std::string>> ParseTlsRptRecord(
    const std::vector<std::string>& txt) {
  std::vector<std::string> records;
  for (const std::string& t : txt) {
    if (absl::StartsWith(t, "v=TLSRPTv1")) records.push_back(t);
  }
  if (records.empty()) return absl::NotFoundError("no TLSRPTv1 record");
  if (records.size() > 1) {
    return absl::InvalidArgumentError("more than one TLSRPTv1 record");
  }
  std::vector<std::string> out;
  for (absl::string_view field : absl::StrSplit(records[0], ';')) {
    field = absl::StripAsciiWhitespace(field);
    if (!absl::ConsumePrefix(&field, "rua=")) continue;
    for (absl::string_view uri : absl::StrSplit(field, ',')) {
      uri = absl::StripAsciiWhitespace(uri);
      if (absl::StartsWith(uri, "mailto:") || absl::StartsWith(uri, "https:")) {
        out.emplace_back(uri);
      }
    }
  }
  if (out.empty()) {
    return absl::InvalidArgumentError("no mailto: or https: rua");
  }
  return out;
}

}  // namespace peregrine::delivery
