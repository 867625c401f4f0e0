#include "mta/tls_reporter.h"

#include <zlib.h>

#include <cstdio>
#include <string>

#include "absl/strings/match.h"
#include "gtest/gtest.h"

namespace peregrine {
namespace {

std::string Gunzip(const std::string& in) {
  z_stream z{};
  inflateInit2(&z, 16 + MAX_WBITS);
  std::string out(1 << 20, '\0');
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(in.data()));
  z.avail_in = static_cast<uInt>(in.size());
  z.next_out = reinterpret_cast<Bytef*>(out.data());
  z.avail_out = static_cast<uInt>(out.size());
  int rc = inflate(&z, Z_FINISH);
  out.resize(z.total_out);
  inflateEnd(&z);
  return rc == Z_STREAM_END ? out : "";
}

TEST(TlsReporter, RecordGivesItsReportAddresses) {
  auto rua = delivery::ParseTlsRptRecord(
      {"v=spf1 -all",
       "v=TLSRPTv1; rua=mailto:tls@example.com,https://r.example.com/x"});
  ASSERT_TRUE(rua.ok());
  EXPECT_EQ(*rua, (std::vector<std::string>{"mailto:tls@example.com",
                                            "https://r.example.com/x"}));
  EXPECT_TRUE(absl::IsNotFound(delivery::ParseTlsRptRecord({}).status()));
  EXPECT_TRUE(absl::IsNotFound(
      delivery::ParseTlsRptRecord({"v=STSv1; id=1"}).status()));
  // Two records, or none usable: no report (RFC 8460 3).
  EXPECT_FALSE(delivery::ParseTlsRptRecord({"v=TLSRPTv1; rua=mailto:a@b.c",
                                            "v=TLSRPTv1; rua=mailto:d@e.f"})
                   .ok());
  EXPECT_FALSE(
      delivery::ParseTlsRptRecord({"v=TLSRPTv1; rua=ftp://x.example"}).ok());
  EXPECT_FALSE(delivery::ParseTlsRptRecord({"v=TLSRPTv1;"}).ok());
}

TEST(TlsReporter, GzipRoundTrip) {
  std::string json = R"({"organization-name":"x"})";
  EXPECT_EQ(Gunzip(TlsReporter::Gzip(json)), json);
  EXPECT_EQ(Gunzip(TlsReporter::Gzip("")), "");
}

TEST(TlsReporter, ReportMailHasTheRfcShape) {
  std::string gz = TlsReporter::Gzip("{}");
  std::string mail = TlsReporter::ReportMail(
      "tlsrpt@mx.example.net", "tls@example.com", "example.com",
      "mx.example.net", "20261128T000000Z.example.com@mx.example.net",
      "mx.example.net!example.com!1!2.json.gz", gz,
      absl::FromUnixSeconds(1795000000));
  for (const char* want :
       {"Subject: Report Domain: example.com Submitter: mx.example.net "
        "Report-ID: <20261128T000000Z.example.com@mx.example.net>\r\n",
        "TLS-Report-Domain: example.com\r\n",
        "TLS-Report-Submitter: mx.example.net\r\n",
        "Content-Type: multipart/report; report-type=\"tlsrpt\";",
        "Content-Type: application/tlsrpt+gzip\r\n",
        "filename=\"mx.example.net!example.com!1!2.json.gz\""}) {
    EXPECT_TRUE(absl::StrContains(mail, want)) << want << "\n" << mail;
  }
  // Only CRLF line ends, lines short enough for SMTP.
  for (size_t i = 0; i < mail.size(); ++i) {
    if (mail[i] == '\n') EXPECT_EQ(mail[i - 1], '\r');
  }
}

outcome::Outcome Delivered(const std::string& to, const std::string& policy,
                           const std::string& failure = "") {
  outcome::Outcome o;
  o.kind = outcome::Kind::kDelivered;
  o.recipient = to;
  o.tls_policy = policy;
  o.tls_failure = failure;
  o.mx = "mx.example.com";
  o.ip = "192.0.2.1";
  return o;
}

TEST(TlsReporter, CountsSurviveARestart) {
  std::string state = ::testing::TempDir() + "/tls-report.json";
  std::remove(state.c_str());
  TlsReporterOptions o;
  o.state_file = state;
  {
    TlsReporter r(o);
    r.OnOutcome(Delivered("a@example.com", "mta-sts"));
    outcome::Outcome f =
        Delivered("b@example.com", "mta-sts", "starttls-not-supported");
    f.kind = outcome::Kind::kDeferred;
    r.OnOutcome(f);
    // Not counted: a smarthost's, a deferral no policy caused, a refusal,
    // a queue transfer to another node (no session with the domain).
    r.OnOutcome(Delivered("c@example.com", "smarthost"));
    outcome::Outcome moved = Delivered("d@example.org", "");
    moved.operator_action = "transfer";
    r.OnOutcome(moved);
    f.tls_failure.clear();
    r.OnOutcome(f);
    outcome::Outcome refused;
    refused.kind = outcome::Kind::kRejected;
    r.OnOutcome(refused);
  }
  FILE* f = std::fopen(state.c_str(), "r");
  ASSERT_NE(f, nullptr);
  char buffer[4096] = {};
  size_t n = std::fread(buffer, 1, sizeof(buffer) - 1, f);
  std::fclose(f);
  std::string text(buffer, n);
  EXPECT_TRUE(absl::StrContains(text, R"("successful":1)")) << text;
  EXPECT_TRUE(absl::StrContains(
      text, R"(["starttls-not-supported","mx.example.com","192.0.2.1",1])"))
      << text;
  EXPECT_FALSE(absl::StrContains(text, "smarthost")) << text;
  EXPECT_FALSE(absl::StrContains(text, "example.org")) << text;
  // Read back, counted on, kept again.
  {
    TlsReporter r(o);
    r.OnOutcome(Delivered("z@EXAMPLE.com", "mta-sts"));
  }
  f = std::fopen(state.c_str(), "r");
  ASSERT_NE(f, nullptr);
  n = std::fread(buffer, 1, sizeof(buffer) - 1, f);
  std::fclose(f);
  text.assign(buffer, n);
  EXPECT_TRUE(absl::StrContains(text, R"("successful":2)")) << text;
}

TEST(TlsReporter, AGarbledStateFileStartsAgain) {
  std::string state = ::testing::TempDir() + "/tls-report-bad.json";
  FILE* f = std::fopen(state.c_str(), "w");
  std::fputs(R"({"period_start":1,"domains":{"x":{"failed":7}}})", f);
  std::fclose(f);
  TlsReporterOptions o;
  o.state_file = state;
  TlsReporter r(o);  // Logs, starts empty, does not crash.
  EXPECT_EQ(r.sent(), 0u);
}

TEST(TlsReporter, DomainsAreBounded) {
  TlsReporterOptions o;
  TlsReporter r(o);
  for (size_t i = 0; i < TlsReporter::kMaxDomains + 5; ++i) {
    r.OnOutcome(Delivered("a@d" + std::to_string(i) + ".example", "dane"));
  }
  EXPECT_EQ(r.dropped(), 5u);
}

}  // namespace
}  // namespace peregrine
