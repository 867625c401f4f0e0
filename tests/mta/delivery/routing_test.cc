#include "mta/delivery/routing.h"

#include <set>

#include "gtest/gtest.h"

namespace peregrine::delivery {
namespace {

TEST(RoutingTest, DomainsOfOneProviderShareASite) {
  std::vector<dns::MxHost> a = {{"ASPMX.L.GOOGLE.COM.", 1, false},
                                {"alt1.aspmx.l.google.com", 5, false}};
  std::vector<dns::MxHost> b = {{"alt1.aspmx.l.google.com", 10, false},
                                {"aspmx.l.google.com", 20, false}};
  EXPECT_EQ(SiteKey(a), SiteKey(b));
  EXPECT_EQ(SiteKey(a), "alt1.aspmx.l.google.com,aspmx.l.google.com");
  std::vector<dns::MxHost> own = {{"mx.example.test", 10, false}};
  EXPECT_NE(SiteKey(own), SiteKey(a));
  std::vector<dns::MxHost> implicit = {{"example.test", 0, true}};
  EXPECT_EQ(SiteKey(implicit), "example.test");
}

TEST(RoutingTest, ShardsAreStableAndSpread) {
  EXPECT_EQ(ShardForSite("aspmx.l.google.com", 1), 0);
  int first = ShardForSite("aspmx.l.google.com", 8);
  EXPECT_EQ(ShardForSite("aspmx.l.google.com", 8), first);  // Deterministic.
  std::set<int> used;
  for (int i = 0; i < 200; ++i) {
    int s = ShardForSite("mx" + std::to_string(i) + ".test", 8);
    ASSERT_GE(s, 0);
    ASSERT_LT(s, 8);
    used.insert(s);
  }
  EXPECT_EQ(used.size(), 8u);
}

}  // namespace
}  // namespace peregrine::delivery
