#include "mta/delivery/policy.h"

#include <map>

#include "gtest/gtest.h"

namespace peregrine::delivery {
namespace {

std::vector<dns::MxHost> Mx(std::vector<std::string> hosts) {
  std::vector<dns::MxHost> out;
  for (auto& h : hosts) out.push_back({h, 10, false});
  return out;
}

TEST(PolicyTest, RulesMatchDomainsAndMxSuffixesLaterOnesWin) {
  DeliveryOptions o;
  SiteRule google;
  google.mx_suffixes = {".google.com"};
  google.max_connections = 7;
  google.message_rate = "50/s";
  SiteRule corp;
  corp.domains = {"*.corp.test", "corp.test"};
  corp.max_connections = 2;
  corp.tls = TlsMode::kVerify;
  o.rules = {google, corp};

  SiteOptions g = ResolveSite(o, "customer.test", Mx({"aspmx.l.google.com."}));
  EXPECT_EQ(g.max_connections, 7);
  EXPECT_EQ(g.message_rate, "50/s");
  EXPECT_EQ(g.tls, TlsMode::kOpportunistic);  // The default.

  // Both match: the later rule wins where it says something.
  SiteOptions both = ResolveSite(o, "mail.corp.test", Mx({"alt1.google.com"}));
  EXPECT_EQ(both.max_connections, 2);
  EXPECT_EQ(both.message_rate, "50/s");
  EXPECT_EQ(both.tls, TlsMode::kVerify);
  EXPECT_EQ(both.initial_connections, 2);  // Never above the maximum.

  SiteOptions none = ResolveSite(o, "other.test", Mx({"mx.notgoogle.com"}));
  EXPECT_EQ(none.max_connections, 20);
  EXPECT_EQ(ResolveSite(o, "google.com", Mx({"google.com"})).max_connections,
            7);
  // An implicit MX (the domain itself) is no provider's MX.
  std::vector<dns::MxHost> implicit = {{"x.google.com", 0, true}};
  EXPECT_EQ(ResolveSite(o, "x.google.com", implicit).max_connections, 20);
}

TEST(PolicyTest, SourcesArePickedByWeightWithinTheirPool) {
  DeliveryOptions o;
  o.sources = {{"a", "192.0.2.1", "", "default", 1},
               {"b", "192.0.2.2", "", "default", 3},
               {"c", "192.0.2.3", "", "warm", 1}};
  std::mt19937_64 rng(42);
  std::map<std::string, int> picks;
  for (int i = 0; i < 4000; ++i) picks[PickSource(o, "", rng)->name]++;
  EXPECT_EQ(picks.count("c"), 0u);
  EXPECT_NEAR(picks["b"] / 4000.0, 0.75, 0.05);
  EXPECT_EQ(PickSource(o, "warm", rng)->name, "c");
  EXPECT_EQ(PickSource(o, "cold", rng), nullptr);
}

TEST(PolicyTest, SmarthostCoversAllOrChosenDomains) {
  Smarthost s;
  EXPECT_FALSE(s.Covers("a.test"));  // No host: no smarthost.
  s.host = "relay.test";
  EXPECT_TRUE(s.Covers("a.test"));
  s.domains = {"corp.test", "*.corp.test"};
  EXPECT_TRUE(s.Covers("CORP.test"));
  EXPECT_TRUE(s.Covers("eu.corp.test"));
  EXPECT_FALSE(s.Covers("a.test"));
  EXPECT_FALSE(s.Covers("evilcorp.test"));
}

TEST(PolicyTest, ValidateNamesWhatIsWrong) {
  DeliveryOptions o;
  EXPECT_TRUE(Validate(o).ok());
  o.defaults.pool = "warm";
  EXPECT_FALSE(Validate(o).ok());
  o.sources = {{"x", "2001:db8::1", "", "warm", 1}};
  EXPECT_TRUE(Validate(o).ok());
  o.backoff = {{"([", absl::Minutes(1), 0.5}};
  EXPECT_NE(Validate(o).message().find("(["), std::string::npos);
}

TEST(PolicyTest, TlsModeNamesRoundTrip) {
  for (TlsMode m : {TlsMode::kNone, TlsMode::kOpportunistic, TlsMode::kRequired,
                    TlsMode::kVerify}) {
    TlsMode parsed;
    ASSERT_TRUE(ParseTlsMode(TlsModeName(m), &parsed));
    EXPECT_EQ(parsed, m);
  }
  TlsMode unused;
  EXPECT_FALSE(ParseTlsMode("dane", &unused));
}

}  // namespace
}  // namespace peregrine::delivery
