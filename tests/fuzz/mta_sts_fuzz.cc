// MTA-STS policies and records from any web or DNS server
// (mta/delivery/mta_sts.h), and TLS-RPT records and report text
// (tls_report.h): never crash; a parsed policy has a valid
// max_age, an mx unless its mode is none, and every mx pattern matches a
// host made from it.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_split.h"
#include "mta/delivery/mta_sts.h"
#include "mta/delivery/tls_report.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace peregrine::delivery;
  std::string in(reinterpret_cast<const char*>(data), size);
  (void)ParseStsRecord(in);
  // TLS-RPT records as DNS gives them (one TXT string per line), and a
  // report carrying the bytes where a receiver's words go: never a crash or
  // an exception, and the JSON always made.
  std::vector<std::string> txt = absl::StrSplit(in, '\n');
  auto rua = ParseTlsRptRecord(txt);
  if (rua.ok()) {
    for (const std::string& uri : *rua) {
      if (!absl::StartsWith(uri, "mailto:") &&
          !absl::StartsWith(uri, "https:")) {
        abort();
      }
    }
  }
  TlsReport report;
  report.organization = in;
  report.report_id = in;
  TlsPolicyResult p;
  p.policy_type = "sts";
  p.policy_domain = in;
  p.policy_string = txt;
  p.failed = 1;
  TlsFailureDetail f;
  f.result_type = "validation-failure";
  f.failure_reason_code = in;
  f.receiving_mx_hostname = in;
  f.failed_session_count = 1;
  p.failures.push_back(f);
  report.policies.push_back(p);
  if (!TlsReportJson(report).ok()) abort();
  auto policy = ParseStsPolicy(in);
  if (!policy.ok()) return 0;
  if (policy->max_age < 0 || policy->max_age > 31557600) abort();
  if (policy->mode != StsMode::kNone && policy->mx.empty()) abort();
  for (const std::string& p : policy->mx) {
    std::string host = absl::StartsWith(p, "*.") ? "mx" + p.substr(1) : p;
    if (!StsMxMatches(p, host) || !StsAllows(*policy, host)) abort();
    (void)StsMxMatches(p, in);
  }
  return 0;
}
