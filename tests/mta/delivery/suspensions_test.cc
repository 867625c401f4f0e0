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

TEST(Suspensions, KeptAcrossLoadsReplacedAndRemoved) {
  std::string path = Path("s.json");
  absl::Time now = absl::FromUnixSeconds(1795780800);
  {
    Suspensions s(path);
    ASSERT_TRUE(s.Load().ok());  // No file yet: none.
    EXPECT_TRUE(s.List().empty());
    ASSERT_TRUE(s.Add({"Dest.TEST", "", "throttled", now}).ok());
    ASSERT_TRUE(
        s.Add({"", ".outlook.com", "", now, now + absl::Hours(2)}).ok());
    ASSERT_TRUE(s.Add({"dest.test", "", "again", now}).ok());  // Replaces.
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
  EXPECT_FALSE(*s.Remove("", ".outlook.com"));
  EXPECT_TRUE(*s.Remove("DEST.test", ""));
  Suspensions empty(path);
  ASSERT_TRUE(empty.Load().ok());
  EXPECT_TRUE(empty.List().empty());
}

TEST(Suspensions, BadTargetsAndGarbledFiles) {
  Suspensions s(Path("bad.json"));
  EXPECT_FALSE(s.Add({"", "", "", absl::Now()}).ok());
  EXPECT_FALSE(s.Add({"a.test", ".b.test", "", absl::Now()}).ok());
  EXPECT_FALSE(s.Add({"a b.test", "", "", absl::Now()}).ok());
  EXPECT_FALSE(s.Add({"a..test", "", "", absl::Now()}).ok());
  EXPECT_TRUE(s.Add({"*.a.test", "", "", absl::Now()}).ok());
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

}  // namespace
}  // namespace peregrine::delivery
