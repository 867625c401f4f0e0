// MTA-STS policies, records and MX patterns (mta/delivery/mta_sts.h), on
// RFC 8461's examples and on what a careless or hostile server sends.
#include "mta/delivery/mta_sts.h"

#include <string>

#include "absl/strings/match.h"
#include "gtest/gtest.h"

namespace peregrine::delivery {
namespace {

TEST(MtaSts, TheRfcExamplePolicy) {
  // RFC 8461 3.2.
  auto p = ParseStsPolicy(
      "version: STSv1\r\nmode: testing\r\nmx: mx1.example.com\r\n"
      "mx: mx2.example.com\r\nmx: mx.backup-example.com\r\n"
      "max_age: 1296000\r\n");
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->mode, StsMode::kTesting);
  EXPECT_EQ(p->max_age, 1296000);
  EXPECT_EQ(p->mx,
            (std::vector<std::string>{"mx1.example.com", "mx2.example.com",
                                      "mx.backup-example.com"}));
  EXPECT_TRUE(StsAllows(*p, "MX2.example.com."));
  EXPECT_FALSE(StsAllows(*p, "mx3.example.com"));
}

TEST(MtaSts, LineEndsUnknownKeysRepeatsAndModeNone) {
  auto p = ParseStsPolicy(
      "version:STSv1\nmode:  enforce \nmx: *.Example.NET\nfuture: x\n"
      "mode: none\nmax_age: 86400\nmax_age: 1\n\n");
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->mode, StsMode::kEnforce);  // The first mode counts.
  EXPECT_EQ(p->max_age, 86400);
  EXPECT_EQ(p->mx, std::vector<std::string>{"*.example.net"});
  auto none = ParseStsPolicy("version: STSv1\nmode: none\nmax_age: 0\n");
  ASSERT_TRUE(none.ok()) << none.status();
  EXPECT_TRUE(none->mx.empty());
}

TEST(MtaSts, MalformedPoliciesNameTheProblem) {
  auto error = [](absl::string_view text) {
    auto p = ParseStsPolicy(text);
    EXPECT_FALSE(p.ok()) << text;
    return std::string(p.status().message());
  };
  const char* ok =
      "version: STSv1\nmode: enforce\nmx: mx.example.com\n"
      "max_age: 86400\n";
  EXPECT_TRUE(ParseStsPolicy(ok).ok());
  EXPECT_TRUE(absl::StrContains(
      error("version: STSv2\nmode: enforce\nmx: a.b\nmax_age: 1\n"),
      "line 1: version 'STSv2'"));
  EXPECT_TRUE(absl::StrContains(
      error("version: STSv1\nmode: strict\nmx: a.b\nmax_age: 1\n"),
      "mode 'strict'"));
  EXPECT_TRUE(absl::StrContains(
      error("version: STSv1\nmode: enforce\nmx: a.b\nmax_age: -1\n"),
      "max_age '-1'"));
  EXPECT_TRUE(absl::StrContains(
      error("version: STSv1\nmode: enforce\nmx: a.b\nmax_age: 31557601\n"),
      "max_age"));
  EXPECT_TRUE(absl::StrContains(
      error("version: STSv1\nmode: enforce\nmax_age: 1\n"), "no mx"));
  EXPECT_TRUE(absl::StrContains(error("mode: enforce\nmx: a.b\nmax_age: 1\n"),
                                "no version"));
  EXPECT_TRUE(absl::StrContains(
      error("version: STSv1\nmode: enforce\nmx: a..b\nmax_age: 1\n"),
      "mx 'a..b'"));
  EXPECT_TRUE(absl::StrContains(
      error("version: STSv1\nmode: enforce\nmx: *.*.b\nmax_age: 1\n"),
      "mx '*.*.b'"));
  EXPECT_TRUE(absl::StrContains(error("<html>not a policy</html>\n"),
                                "expected \"key: value\""));
  std::string huge(64 * 1024 + 1, '\n');
  EXPECT_TRUE(absl::StrContains(error(huge), "64 KiB"));
}

TEST(MtaSts, Records) {
  EXPECT_EQ(*ParseStsRecord("v=STSv1; id=20160831085700Z;"),
            "20160831085700Z");  // RFC 8461 3.1.
  EXPECT_EQ(*ParseStsRecord("v=STSv1;id=abc"), "abc");
  EXPECT_FALSE(ParseStsRecord("v=STSv2; id=1;").ok());
  EXPECT_FALSE(ParseStsRecord("id=1; v=STSv1").ok());
  EXPECT_FALSE(ParseStsRecord("v=STSv1;").ok());
  EXPECT_FALSE(ParseStsRecord("v=STSv1; id=has-dash").ok());
  EXPECT_FALSE(
      ParseStsRecord(std::string("v=STSv1; id=") + std::string(33, 'a')).ok());
}

TEST(MtaSts, WildcardsCoverOneLabel) {
  // RFC 8461 4.1.
  EXPECT_TRUE(StsMxMatches("*.example.com", "mx1.example.com"));
  EXPECT_TRUE(StsMxMatches("*.example.com", "MX1.Example.Com."));
  EXPECT_FALSE(StsMxMatches("*.example.com", "example.com"));
  EXPECT_FALSE(StsMxMatches("*.example.com", "a.mx1.example.com"));
  EXPECT_FALSE(StsMxMatches("*.example.com", ".example.com"));
  EXPECT_FALSE(StsMxMatches("*.example.com", "mx1.example.com.evil.test"));
  EXPECT_TRUE(StsMxMatches("mx.example.com", "mx.example.com"));
  EXPECT_FALSE(StsMxMatches("mx.example.com", "x.mx.example.com"));
}

}  // namespace
}  // namespace peregrine::delivery
