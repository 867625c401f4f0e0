// TlsReporter: TLS reporting (RFC 8460), off by default ([tls_report]).
//
// Counts, per recipient domain, what the outcome seam says about TLS: each
// delivery is a successful session, unless it carries a TLS policy failure
// (Outcome::tls_failure: an MTA-STS policy in testing mode that would have
// refused it), and each deferral a policy caused is a failed one, by result
// type, MX host and address. The policy type comes from
// Outcome::tls_policy: "sts" (MTA-STS), "tlsa" (DANE), else
// "no-policy-found". Counted per recipient outcome: the closest the seam
// comes to sessions (a transaction to many recipients counts each).
//
// At the end of each period (a UTC day by default, as the RFC asks), for
// every counted domain that publishes `_smtp._tls.DOMAIN` TXT
// ("v=TLSRPTv1; rua=mailto:...,https://..."), it builds the JSON aggregate
// report (mta/delivery/tls_report.h), gzips it, and sends it to each rua:
// mailto: as a multipart/report mail (RFC 8460 5.3) submitted through this
// daemon's own relay listener (so it is queued, DKIM-signed and delivered
// like any mail); https: POSTed as application/tlsrpt+gzip (certificate
// checked). Domains without the record get nothing.
//
// Threads: OnOutcome() from any shard (one mutex, a few map updates; at
// most kMaxDomains domains a period, the rest counted as dropped); the
// sending runs on the reporter's own thread, never a shard's.
//
// Lifetime: made before the shards start, destroyed after they stopped.
// A report being sent when it is destroyed is finished first (at most 30 s
// an address). The counts of the period under way are kept in `state_file`
// when the reporter is destroyed and read back when it is made, so a
// restart loses none; a period that ended while the daemon was down is sent
// at start.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "dns/blocking_client.h"
#include "mta/delivery/mta_sts_cache.h"
#include "mta/delivery/tls_report.h"
#include "mta/outcome/outcome.h"

namespace peregrine {

struct TlsReporterOptions {
  std::string organization;  // organization-name.
  std::string contact;       // contact-info ("mailto:postmaster@...").
  std::string submitter;     // TLS-Report-Submitter: our host name.
  std::string from;          // The report mail's sender.
  absl::Duration interval = absl::Hours(24);
  std::string state_file;  // Counts across a restart; "" keeps none.
  dns::BlockingOptions dns;
  std::string ca_file;  // For https: reports; "" the system's.
  // Submits a mail (its envelope and bytes) to this daemon.
  std::function<absl::Status(const std::string& from, const std::string& to,
                             const std::string& message)>
      send_mail;
  // MTA-STS policies, for the policy-string of "sts" reports (may be null).
  const delivery::StsCache* sts = nullptr;
};

class TlsReporter : public outcome::Consumer {
 public:
  static constexpr size_t kMaxDomains = 10000;
  static constexpr size_t kMaxDetails = 100;  // Failure kinds per domain.

  explicit TlsReporter(TlsReporterOptions options);
  ~TlsReporter() override;
  TlsReporter(const TlsReporter&) = delete;
  TlsReporter& operator=(const TlsReporter&) = delete;

  void OnOutcome(const outcome::Outcome& o) override;

  // The report mail (RFC 8460 5.3) carrying `gzipped` as `file_name`.
  static std::string ReportMail(const std::string& from, const std::string& to,
                                const std::string& domain,
                                const std::string& submitter,
                                const std::string& report_id,
                                const std::string& file_name,
                                const std::string& gzipped, absl::Time now);
  static std::string Gzip(const std::string& data);

  uint64_t sent() const;     // Reports delivered to a rua (mail queued,
                             // or POST answered 2xx).
  uint64_t dropped() const;  // Outcomes past kMaxDomains.

 private:
  struct Counts {
    std::string policy_type = "no-policy-found";
    int64_t successful = 0;
    // (result type, MX host, its address) -> sessions.
    std::map<std::tuple<std::string, std::string, std::string>, int64_t> failed;
  };
  void Run();
  // The period that `now` falls in.
  absl::Time PeriodStart(absl::Time now) const;
  void SendPeriod(absl::Time start, absl::Time end,
                  std::map<std::string, Counts> counts);
  void SendOne(const std::string& domain, const Counts& counts,
               absl::Time start, absl::Time end);
  void Save();
  void Load();

  const TlsReporterOptions options_;
  mutable absl::Mutex mu_;
  absl::Time period_start_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, Counts> counts_ ABSL_GUARDED_BY(mu_);
  uint64_t dropped_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t sent_ ABSL_GUARDED_BY(mu_) = 0;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

}  // namespace peregrine
