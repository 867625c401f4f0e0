// The TLS-RPT aggregate report (mta/delivery/tls_report.h): the fields of
// RFC 8460 4.4, in its shape, and what breaks the RFC refused.
#include "mta/delivery/tls_report.h"

#include "absl/strings/match.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace peregrine::delivery {
namespace {

TlsReport Example() {
  TlsReport r;
  r.organization = "Company-X";
  r.contact = "sts-reporting@company-x.example";
  r.report_id = "5065427c-23d3-47ca-b6e0-946ea0e8c4be";
  r.start = absl::FromUnixSeconds(1459468800);  // 2016-04-01T00:00:00Z
  r.end = absl::FromUnixSeconds(1459555199);    // 2016-04-01T23:59:59Z
  TlsPolicyResult p;
  p.policy_type = "sts";
  p.policy_string = {"version: STSv1", "mode: testing",
                     "mx: *.mail.company-y.example", "max_age: 86400"};
  p.policy_domain = "company-y.example";
  p.mx_host = {"*.mail.company-y.example"};
  p.successful = 5326;
  p.failed = 303;
  p.failures.push_back({"certificate-expired", "2001:db8:abcd:0012::1",
                        "mx1.mail.company-y.example", "203.0.113.56", 100, ""});
  p.failures.push_back({"starttls-not-supported", "2001:db8:abcd:0013::1",
                        "mx2.mail.company-y.example", "203.0.113.128", 200,
                        "421 4.7.0 no TLS here"});
  p.failures.push_back({"validation-failure", "198.51.100.62",
                        "mx-backup.mail.company-y.example", "203.0.113.36", 3,
                        "X509_V_ERR_PROXY_PATH_LENGTH_EXCEEDED"});
  r.policies.push_back(p);
  return r;
}

TEST(TlsReport, TheRfcExamplesShape) {
  // RFC 8460 Appendix B's report, made again.
  auto text = TlsReportJson(Example());
  ASSERT_TRUE(text.ok()) << text.status();
  auto j = nlohmann::json::parse(*text, nullptr, /*allow_exceptions=*/false);
  ASSERT_FALSE(j.is_discarded()) << *text;
  EXPECT_EQ(j["organization-name"], "Company-X");
  EXPECT_EQ(j["date-range"]["start-datetime"], "2016-04-01T00:00:00Z");
  EXPECT_EQ(j["date-range"]["end-datetime"], "2016-04-01T23:59:59Z");
  EXPECT_EQ(j["contact-info"], "sts-reporting@company-x.example");
  EXPECT_EQ(j["report-id"], "5065427c-23d3-47ca-b6e0-946ea0e8c4be");
  const auto& p = j["policies"][0];
  EXPECT_EQ(p["policy"]["policy-type"], "sts");
  EXPECT_EQ(p["policy"]["policy-string"].size(), 4u);
  EXPECT_EQ(p["policy"]["policy-domain"], "company-y.example");
  EXPECT_EQ(p["policy"]["mx-host"][0], "*.mail.company-y.example");
  EXPECT_EQ(p["summary"]["total-successful-session-count"], 5326);
  EXPECT_EQ(p["summary"]["total-failure-session-count"], 303);
  ASSERT_EQ(p["failure-details"].size(), 3u);
  EXPECT_EQ(p["failure-details"][0]["result-type"], "certificate-expired");
  EXPECT_EQ(p["failure-details"][0]["receiving-ip"], "203.0.113.56");
  EXPECT_FALSE(p["failure-details"][0].contains("failure-reason-code"));
  EXPECT_EQ(p["failure-details"][1]["failed-session-count"], 200);
  EXPECT_EQ(p["failure-details"][2]["failure-reason-code"],
            "X509_V_ERR_PROXY_PATH_LENGTH_EXCEEDED");
  EXPECT_EQ(
      TlsReportFileName("mail.sender.example", "company-y.example", Example()),
      "mail.sender.example!company-y.example!1459468800!1459555199!"
      "5065427c-23d3-47ca-b6e0-946ea0e8c4be.json.gz");
}

TEST(TlsReport, WhatBreaksTheRfcIsRefused) {
  TlsReport r = Example();
  r.policies[0].failures[0].result_type = "made-up";
  EXPECT_TRUE(absl::StrContains(TlsReportJson(r).status().message(),
                                "result type 'made-up'"));
  r = Example();
  r.policies[0].policy_type = "dane";
  EXPECT_FALSE(TlsReportJson(r).ok());
  r = Example();
  r.policies[0].failed = 10;  // Fewer than the 303 in detail.
  EXPECT_TRUE(absl::StrContains(TlsReportJson(r).status().message(),
                                "303 failed sessions in detail but 10"));
  r = Example();
  std::swap(r.start, r.end);
  EXPECT_FALSE(TlsReportJson(r).ok());
  // A receiver's bytes in a reason (not UTF-8) do not break the JSON.
  r = Example();
  r.policies[0].failures[1].failure_reason_code = "421 \xff\xfe bad";
  auto text = TlsReportJson(r);
  ASSERT_TRUE(text.ok());
  EXPECT_FALSE(nlohmann::json::parse(*text, nullptr, false).is_discarded());
  // No policy found, no details: the optional fields are left out.
  r = TlsReport{
      "X", "mailto:a@b.example", "1", absl::UnixEpoch(), absl::UnixEpoch(), {}};
  TlsPolicyResult none;
  none.policy_type = "no-policy-found";
  none.policy_domain = "plain.example";
  none.successful = 7;
  r.policies.push_back(none);
  text = TlsReportJson(r);
  ASSERT_TRUE(text.ok());
  auto j = nlohmann::json::parse(*text, nullptr, false);
  EXPECT_FALSE(j["policies"][0].contains("failure-details"));
  EXPECT_FALSE(j["policies"][0]["policy"].contains("policy-string"));
}

}  // namespace
}  // namespace peregrine::delivery
