// SPF's check_host() (mta/doctor/spf.h) on RFC 7208 Appendix A's zone and
// its examples, and on the limits receivers enforce.
#include "mta/doctor/spf.h"

#include <map>
#include <utility>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace peregrine::doctor {
namespace {

using dns::IpAddress;
using dns::Record;

class Zone {
 public:
  Zone() {
    // RFC 7208 Appendix A.
    A("example.com", "192.0.2.10");
    A("example.com", "192.0.2.11");
    A("amy.example.com", "192.0.2.65");
    A("bob.example.com", "192.0.2.66");
    A("mail-a.example.com", "192.0.2.129");
    A("mail-b.example.com", "192.0.2.130");
    A("www.example.com", "192.0.2.10");  // The CNAME, as a resolver gives it.
    A("www.example.com", "192.0.2.11");
    A("mail-c.example.org", "192.0.2.140");
    Mx("example.com", 10, "mail-a.example.com");
    Mx("example.com", 20, "mail-b.example.com");
    Mx("example.org", 10, "mail-c.example.org");
    Ptr("192.0.2.10", "example.com");
    Ptr("192.0.2.11", "example.com");
    Ptr("192.0.2.65", "amy.example.com");
    Ptr("192.0.2.66", "bob.example.com");
    Ptr("192.0.2.129", "mail-a.example.com");
    Ptr("192.0.2.130", "mail-b.example.com");
    Ptr("192.0.2.140", "mail-c.example.org");
    Ptr("10.0.0.4", "bob.example.com");
  }
  void A(const std::string& name, const std::string& ip) {
    Record r;
    r.name = name;
    r.type = ip.find(':') == std::string::npos ? dns::kA : dns::kAaaa;
    r.address = *IpAddress::Parse(ip);
    records_[{name, r.type}].push_back(r);
  }
  void Mx(const std::string& name, int pref, const std::string& host) {
    Record r;
    r.name = name;
    r.type = dns::kMx;
    r.preference = pref;
    r.target = host;
    records_[{name, dns::kMx}].push_back(r);
  }
  void Ptr(const std::string& ip, const std::string& host) {
    Record r;
    r.type = dns::kPtr;
    r.target = host;
    r.name = IpAddress::Parse(ip)->ReverseName();
    records_[{r.name, dns::kPtr}].push_back(r);
  }
  void Txt(const std::string& name, const std::string& text) {
    Record r;
    r.name = name;
    r.type = dns::kTxt;
    // Split as a long TXT record is, in strings of up to 255.
    for (size_t i = 0; i < text.size(); i += 255) {
      r.texts.push_back(text.substr(i, 255));
    }
    records_[{name, dns::kTxt}].push_back(r);
  }
  void Fail(const std::string& name) { failing_ = name; }
  SpfLookup Lookup() {
    return [this](const std::string& name,
                  uint16_t type) -> absl::StatusOr<dns::BlockingAnswer> {
      ++queries;
      if (name == failing_) return absl::UnavailableError("timed out");
      dns::BlockingAnswer a;
      auto it = records_.find({name, type});
      if (it != records_.end()) a.records = it->second;
      return a;
    };
  }
  int queries = 0;

 private:
  std::map<std::pair<std::string, uint16_t>, std::vector<Record>> records_;
  std::string failing_;
};

SpfResult Check(Zone& z, const std::string& ip, const std::string& record) {
  Zone copy = z;
  copy.Txt("example.com", record);
  return CheckHost(copy.Lookup(), *IpAddress::Parse(ip), "example.com",
                   "user@example.com")
      .result;
}

// RFC 7208 A.1: for each record, which of the zone's addresses pass.
TEST(Spf, AppendixAExamples) {
  Zone z;
  const std::vector<std::string> all = {
      "192.0.2.10",  "192.0.2.11",  "192.0.2.65",  "192.0.2.66",
      "192.0.2.129", "192.0.2.130", "192.0.2.131", "192.0.2.140",
      "192.0.2.143", "192.0.2.144", "10.0.0.4",    "192.0.2.128"};
  struct Case {
    std::string record;
    std::vector<std::string> pass;
  };
  const std::vector<Case> cases = {
      {"v=spf1 +all", all},
      {"v=spf1 a -all", {"192.0.2.10", "192.0.2.11"}},
      {"v=spf1 a:example.org -all", {}},
      {"v=spf1 mx -all", {"192.0.2.129", "192.0.2.130"}},
      {"v=spf1 mx:example.org -all", {"192.0.2.140"}},
      {"v=spf1 mx mx:example.org -all",
       {"192.0.2.129", "192.0.2.130", "192.0.2.140"}},
      {"v=spf1 mx/30 mx:example.org/30 -all",
       {"192.0.2.129", "192.0.2.130", "192.0.2.131", "192.0.2.140",
        "192.0.2.143", "192.0.2.128"}},
      {"v=spf1 ptr -all",
       {"192.0.2.10", "192.0.2.11", "192.0.2.65", "192.0.2.66", "192.0.2.129",
        "192.0.2.130"}},
      {"v=spf1 ip4:192.0.2.128/28 -all",
       {"192.0.2.129", "192.0.2.130", "192.0.2.131", "192.0.2.140",
        "192.0.2.143", "192.0.2.128"}},
  };
  for (const Case& c : cases) {
    for (const std::string& ip : all) {
      bool want = std::find(c.pass.begin(), c.pass.end(), ip) != c.pass.end();
      EXPECT_EQ(Check(z, ip, c.record),
                want ? SpfResult::kPass : SpfResult::kFail)
          << c.record << " for " << ip;
    }
  }
}

TEST(Spf, QualifiersIncludeRedirectAndIp6) {
  Zone z;
  z.Txt("_spf.example.net",
        "v=spf1 ip4:198.51.100.0/24 ip6:2001:db8::/32 -all");
  z.Txt("soft.example.net", "v=spf1 ~all");
  z.Txt("none.example.net", "just text");
  EXPECT_EQ(Check(z, "198.51.100.7", "v=spf1 include:_spf.example.net -all"),
            SpfResult::kPass);
  EXPECT_EQ(Check(z, "2001:db8::25", "v=spf1 include:_spf.example.net -all"),
            SpfResult::kPass);
  // An include that fails does not match: the next term decides.
  EXPECT_EQ(Check(z, "203.0.113.1", "v=spf1 include:_spf.example.net ~all"),
            SpfResult::kSoftFail);
  EXPECT_EQ(Check(z, "203.0.113.1", "v=spf1 ?all"), SpfResult::kNeutral);
  EXPECT_EQ(Check(z, "203.0.113.1", "v=spf1 a"), SpfResult::kNeutral);
  EXPECT_EQ(Check(z, "198.51.100.7", "v=spf1 redirect=_spf.example.net"),
            SpfResult::kPass);
  EXPECT_EQ(Check(z, "203.0.113.1", "v=spf1 redirect=soft.example.net"),
            SpfResult::kSoftFail);
  // A redirect is not followed when a mechanism matched.
  EXPECT_EQ(Check(z, "203.0.113.1", "v=spf1 all redirect=soft.example.net"),
            SpfResult::kPass);
  EXPECT_EQ(Check(z, "203.0.113.1", "v=spf1 include:none.example.net -all"),
            SpfResult::kPermError);
  EXPECT_EQ(Check(z, "203.0.113.1", "v=spf1 redirect=none.example.net"),
            SpfResult::kPermError);
  EXPECT_EQ(Check(z, "2001:db8::1", "v=spf1 ip6:2001:db8::/33 -all"),
            SpfResult::kPass);
  EXPECT_EQ(Check(z, "2001:db8:8000::1", "v=spf1 ip6:2001:db8::/33 -all"),
            SpfResult::kFail);
}

TEST(Spf, MacrosAndExists) {
  Zone z;
  z.A("user.192.0.2.10.spf.example.com", "127.0.0.2");
  z.A("10.2.0.192.in-addr._spf.example.com", "127.0.0.2");
  EXPECT_EQ(Check(z, "192.0.2.10", "v=spf1 exists:%{l}.%{i}.spf.%{d} -all"),
            SpfResult::kPass);
  EXPECT_EQ(Check(z, "192.0.2.11", "v=spf1 exists:%{l}.%{i}.spf.%{d} -all"),
            SpfResult::kFail);
  EXPECT_EQ(Check(z, "192.0.2.10", "v=spf1 exists:%{ir}.%{v}._spf.%{d2} -all"),
            SpfResult::kPass);
  EXPECT_EQ(Check(z, "192.0.2.10", "v=spf1 exists:%{x}.example.com -all"),
            SpfResult::kPermError);
  EXPECT_EQ(Check(z, "192.0.2.10", "v=spf1 exists:%{l.example.com -all"),
            SpfResult::kPermError);
}

TEST(Spf, LimitsAndErrors) {
  Zone z;
  // Eleven includes, each of a record that matches nothing.
  std::string record = "v=spf1";
  for (int i = 0; i < 11; ++i) {
    z.Txt(absl::StrCat("i", i, ".example.com"), "v=spf1 ip4:203.0.113.1");
    absl::StrAppend(&record, " include:i", i, ".example.com");
  }
  Zone ten = z;
  z.Txt("example.com", record + " -all");
  auto v =
      CheckHost(z.Lookup(), *IpAddress::Parse("192.0.2.10"), "example.com", "");
  EXPECT_EQ(v.result, SpfResult::kPermError);
  EXPECT_NE(v.explanation.find("more than 10"), std::string::npos)
      << v.explanation;
  EXPECT_EQ(v.dns_terms, 11);
  // Ten are fine.
  std::string ten_record = "v=spf1";
  for (int i = 0; i < 10; ++i) {
    absl::StrAppend(&ten_record, " include:i", i, ".example.com");
  }
  EXPECT_EQ(Check(ten, "203.0.113.1", ten_record + " -all"), SpfResult::kPass);
  EXPECT_EQ(Check(ten, "192.0.2.10", ten_record + " -all"), SpfResult::kFail);
  // Three look-ups that find nothing.
  EXPECT_EQ(Check(ten, "192.0.2.10",
                  "v=spf1 a:n1.example.com a:n2.example.com "
                  "a:n3.example.com -all"),
            SpfResult::kPermError);
  EXPECT_EQ(
      Check(ten, "192.0.2.10", "v=spf1 a:n1.example.com a:n2.example.com -all"),
      SpfResult::kFail);
  // Two records, an unknown mechanism, bad prefixes, two redirects.
  Zone two;
  two.Txt("example.com", "v=spf1 -all");
  two.Txt("example.com", "v=spf1 +all");
  EXPECT_EQ(CheckHost(two.Lookup(), *IpAddress::Parse("192.0.2.10"),
                      "example.com", "")
                .result,
            SpfResult::kPermError);
  EXPECT_EQ(Check(ten, "192.0.2.10", "v=spf1 foo -all"), SpfResult::kPermError);
  EXPECT_EQ(Check(ten, "192.0.2.10", "v=spf1 ip4:192.0.2.0/33"),
            SpfResult::kPermError);
  EXPECT_EQ(Check(ten, "192.0.2.10", "v=spf1 ip4:2001:db8::1"),
            SpfResult::kPermError);
  EXPECT_EQ(
      Check(ten, "192.0.2.10", "v=spf1 redirect=a.example redirect=b.example"),
      SpfResult::kPermError);
  // Unknown modifiers are ignored; "v=spf10" is not SPF.
  EXPECT_EQ(Check(ten, "192.0.2.10", "v=spf1 foo=bar a -all"),
            SpfResult::kPass);
  Zone not_spf;
  not_spf.Txt("example.com", "v=spf10 +all");
  EXPECT_EQ(CheckHost(not_spf.Lookup(), *IpAddress::Parse("192.0.2.10"),
                      "example.com", "")
                .result,
            SpfResult::kNone);
  // DNS that fails is a temperror, never a pass.
  Zone broken;
  broken.Txt("example.com", "v=spf1 include:down.example -all");
  broken.Fail("down.example");
  EXPECT_EQ(CheckHost(broken.Lookup(), *IpAddress::Parse("192.0.2.10"),
                      "example.com", "")
                .result,
            SpfResult::kTempError);
}

TEST(Spf, AnIncludeLoopEndsAtTheLimit) {
  Zone z;
  z.Txt("example.com", "v=spf1 include:example.com -all");
  auto v =
      CheckHost(z.Lookup(), *IpAddress::Parse("192.0.2.10"), "example.com", "");
  EXPECT_EQ(v.result, SpfResult::kPermError);
  EXPECT_LT(z.queries, 30);
}

}  // namespace
}  // namespace peregrine::doctor
