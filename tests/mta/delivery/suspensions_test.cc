#include "mta/delivery/suspensions.h"

#include <cstdlib>
#include <fstream>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace peregrine::delivery {
namespace {

std::string Path(const std::string& name) {
  std::string p = absl::StrCat(getenv("TEST_TMPDIR"), "/", name);
  std::remove(p.c_str());
  return p;
}

Suspension Of(std::string domain, std::string mx_suffix, std::string reason,
              absl::Time since, absl::Time until = absl::InfiniteFuture()) {
  Suspension s;
  s.domain = std::move(domain);
  s.mx_suffix = std::move(mx_suffix);
  s.reason = std::move(reason);
  s.since = since;
  s.until = until;
  return s;
}

Suspension Tag(std::string campaign, std::string tenant) {
  Suspension s;
  s.campaign = std::move(campaign);
  s.tenant = std::move(tenant);
  s.since = absl::FromUnixSeconds(1795780800);
  return s;
}

TEST(Suspensions, KeptAcrossLoadsReplacedAndRemoved) {
  std::string path = Path("s.json");
  absl::Time now = absl::FromUnixSeconds(1795780800);
  {
    Suspensions s(path);
    ASSERT_TRUE(s.Load().ok());  // No file yet: none.
    EXPECT_TRUE(s.List().empty());
    ASSERT_TRUE(s.Add(Of("Dest.TEST", "", "throttled", now)).ok());
    ASSERT_TRUE(
        s.Add(Of("", ".outlook.com", "", now, now + absl::Hours(2))).ok());
    ASSERT_TRUE(s.Add(Of("dest.test", "", "again", now)).ok());  // Replaces.
    EXPECT_EQ(s.List().size(), 2u);
  }
  Suspensions s(path);
  ASSERT_TRUE(s.Load().ok());
  auto list = s.List();
  ASSERT_EQ(list.size(), 2u);
  EXPECT_EQ(list[0].domain, "dest.test");
  EXPECT_EQ(list[0].reason, "again");
  EXPECT_EQ(list[1].mx_suffix, ".outlook.com");
  EXPECT_EQ(list[1].until, now + absl::Hours(2));
  auto rules = s.Rules();
  ASSERT_EQ(rules.size(), 2u);
  EXPECT_TRUE(*rules[0].suspended);
  EXPECT_TRUE(rules[0].Matches("dest.test", {}));
  EXPECT_FALSE(s.Expire(now + absl::Hours(1)));
  EXPECT_TRUE(s.Expire(now + absl::Hours(2)));
  EXPECT_EQ(s.List().size(), 1u);
  EXPECT_FALSE(*s.Remove(Of("", ".outlook.com", "", now)));
  EXPECT_TRUE(*s.Remove(Of("DEST.test", "", "", now)));
  Suspensions empty(path);
  ASSERT_TRUE(empty.Load().ok());
  EXPECT_TRUE(empty.List().empty());
}

TEST(Suspensions, BadTargetsAndGarbledFiles) {
  Suspensions s(Path("bad.json"));
  EXPECT_FALSE(s.Add(Of("", "", "", absl::Now())).ok());
  EXPECT_FALSE(s.Add(Of("a.test", ".b.test", "", absl::Now())).ok());
  EXPECT_FALSE(s.Add(Of("a b.test", "", "", absl::Now())).ok());
  EXPECT_FALSE(s.Add(Of("a..test", "", "", absl::Now())).ok());
  EXPECT_TRUE(s.Add(Of("*.a.test", "", "", absl::Now())).ok());
  EXPECT_FALSE(s.Add(Tag("spring", "acme")).ok());  // Two targets.
  EXPECT_FALSE(s.Add(Tag("bad\ncampaign", "")).ok());
  EXPECT_FALSE(s.Add(Tag(std::string(201, 'c'), "")).ok());
  for (const char* text :
       {"{", "{}", "[1]", "[{\"domain\": \"a.test\"}]",
        "[{\"since\": \"2026-11-27T12:00:00Z\"}]",
        "[{\"domain\": \"a.test\", \"since\": \"2026-11-27T12:00:00Z\", "
        "\"until\": \"tomorrow\"}]"}) {
    std::string path = Path("garbled.json");
    std::ofstream(path) << text;
    Suspensions g(path);
    absl::Status st = g.Load();
    EXPECT_FALSE(st.ok()) << text;
    EXPECT_TRUE(absl::StrContains(st.message(), "garbled.json")) << st;
  }
}

TEST(Suspensions, CampaignsAndTenantsAreHeldApartFromSites) {
  std::string path = Path("tags.json");
  {
    Suspensions s(path);
    ASSERT_TRUE(s.Add(Tag("spring", "")).ok());
    ASSERT_TRUE(s.Add(Tag("", "acme")).ok());
    ASSERT_TRUE(s.Add(Of("dest.test", "", "", absl::Now())).ok());
  }
  Suspensions s(path);
  ASSERT_TRUE(s.Load().ok());
  EXPECT_EQ(s.Campaigns(), std::vector<std::string>{"spring"});
  EXPECT_EQ(s.Tenants(), std::vector<std::string>{"acme"});
  EXPECT_EQ(s.Rules().size(), 1u);  // The domain alone is a site rule.
  EXPECT_EQ(Suspensions::Target(s.List()[0]), "campaign spring");
  EXPECT_EQ(Suspensions::ToJson(s.List()[1])["tenant"], "acme");
  EXPECT_TRUE(*s.Remove(Tag("spring", "")));
  EXPECT_FALSE(*s.Remove(Tag("spring", "")));
  EXPECT_TRUE(s.Campaigns().empty());
  // One message, by its queue id; kept across a load.
  Suspension one = Tag("", "");
  one.id = 0x0661492E13314600;
  ASSERT_TRUE(s.Add(one).ok());
  Suspensions again(path);
  ASSERT_TRUE(again.Load().ok());
  EXPECT_EQ(again.Messages(), std::vector<queue::MessageId>{one.id});
  EXPECT_EQ(Suspensions::Target(one), "message 0661492E13314600");
  one.campaign = "spring";
  EXPECT_FALSE(s.Add(one).ok());  // Two targets.
}

}  // namespace
}  // namespace peregrine::delivery
