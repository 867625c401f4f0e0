// TLS reporting (RFC 8460): the JSON aggregate report a sending MTA mails
// or POSTs to the `rua` of `_smtp._tls.DOMAIN` once a day, and the name
// its attachment carries. Pure: counts in, text out; counting sessions in
// the engine and sending the report come with the rest of issue 19.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace peregrine::delivery {

// One kind of failed session (RFC 8460 4.3).
struct TlsFailureDetail {
  // One of RFC 8460 4.3's result types: "starttls-not-supported",
  // "certificate-host-mismatch", "certificate-expired",
  // "certificate-not-trusted", "validation-failure", "tlsa-invalid",
  // "dnssec-invalid", "dane-required", "sts-policy-fetch-error",
  // "sts-policy-invalid", "sts-webpki-invalid".
  std::string result_type;
  std::string sending_mta_ip;
  std::string receiving_mx_hostname;
  std::string receiving_ip;
  int64_t failed_session_count = 0;
  std::string failure_reason_code;  // The SMTP reply or OpenSSL's words.
};

// One policy's sessions (RFC 8460 4.4).
struct TlsPolicyResult {
  std::string policy_type;  // "sts", "tlsa" or "no-policy-found".
  std::vector<std::string> policy_string;  // The policy's lines, or TLSAs.
  std::string policy_domain;
  std::vector<std::string> mx_host;
  int64_t successful = 0;
  int64_t failed = 0;
  std::vector<TlsFailureDetail> failures;
};

struct TlsReport {
  std::string organization;  // Ours.
  std::string contact;       // "mailto:postmaster@example.com"
  std::string report_id;
  absl::Time start;
  absl::Time end;
  std::vector<TlsPolicyResult> policies;
};

// The report's JSON, or InvalidArgument naming a field that breaks the
// RFC (an unknown result type or policy type, counts that do not add up,
// an end before the start).
absl::StatusOr<std::string> TlsReportJson(const TlsReport& report);

// The attachment's file name (RFC 8460 5.3):
// "sender!policy-domain!begin!end!id.json.gz", times as Unix seconds.
std::string TlsReportFileName(const std::string& sender,
                              const std::string& policy_domain,
                              const TlsReport& report);

// The rua URIs of a `_smtp._tls.DOMAIN` TXT record set (RFC 8460 3):
// exactly one record starting "v=TLSRPTv1", its rua's comma-separated
// mailto: and https: URIs (others ignored). NotFound: no such record;
// InvalidArgument: more than one, or no usable rua.
absl::StatusOr<std::vector<std::string>> ParseTlsRptRecord(
    const std::vector<std::string>& txt);

}  // namespace peregrine::delivery
