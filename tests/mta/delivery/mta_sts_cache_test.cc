#include "mta/delivery/mta_sts_cache.h"

#include <string>

#include "gtest/gtest.h"
#include "tests/mta/bounce/memory_table.h"

namespace peregrine::delivery {
namespace {

const absl::Time kT0 = absl::FromUnixSeconds(1795000000);

StsCacheEntry Entry(StsMode mode, int64_t max_age, absl::Time fetched) {
  StsCacheEntry e;
  e.policy.mode = mode;
  e.policy.mx = {"mx.example.com", "*.example.net"};
  e.policy.max_age = max_age;
  e.id = "20261128T01";
  e.fetched = fetched;
  e.checked = fetched;
  return e;
}

TEST(StsCache, EncodeDecodeRoundTrip) {
  for (StsMode mode : {StsMode::kEnforce, StsMode::kTesting, StsMode::kNone}) {
    StsCacheEntry e = Entry(mode, 86400, kT0);
    std::optional<StsCacheEntry> back = StsCache::Decode(StsCache::Encode(e));
    ASSERT_TRUE(back.has_value());
    EXPECT_EQ(back->policy.mode, mode);
    EXPECT_EQ(back->policy.mx, e.policy.mx);
    EXPECT_EQ(back->policy.max_age, 86400);
    EXPECT_EQ(back->id, e.id);
    EXPECT_EQ(back->fetched, kT0);
  }
}

TEST(StsCache, DecodeRefusesWhatItDidNotWrite) {
  for (
      const char* bad : {
          "",
          "not json",
          "[]",
          "{}",
          R"({"mode":"enforce","mx":["a"],"max_age":1,"id":"x"})",
          R"({"mode":"strict","mx":["a"],"max_age":1,"id":"x","fetched":1})",
          R"({"mode":"enforce","mx":"a","max_age":1,"id":"x","fetched":1})",
          R"({"mode":"enforce","mx":[1],"max_age":1,"id":"x","fetched":1})",
          R"({"mode":"enforce","mx":["a"],"max_age":-1,"id":"x","fetched":1})",
          R"({"mode":"enforce","mx":["a"],"max_age":99999999999,"id":"x","fetched":1})",
          R"({"mode":"enforce","mx":["a"],"max_age":"1","id":"x","fetched":1})",
          R"({"mode":"enforce","mx":["a"],"max_age":1,"id":7,"fetched":1})",
      }) {
    EXPECT_FALSE(StsCache::Decode(bad).has_value()) << bad;
  }
}

TEST(StsCache, ValidUntilMaxAge) {
  StsCache cache(nullptr);
  ASSERT_TRUE(
      cache.Put("example.com", Entry(StsMode::kEnforce, 3600, kT0)).ok());
  EXPECT_TRUE(cache.Get("example.com", kT0 + absl::Minutes(59)).has_value());
  EXPECT_FALSE(cache.Get("example.com", kT0 + absl::Hours(1)).has_value());
  EXPECT_FALSE(cache.Get("other.example", kT0).has_value());
}

TEST(StsCache, KeptInTheTableAcrossARestart) {
  bounce::MemoryTable table;
  {
    StsCache cache(&table);
    ASSERT_TRUE(
        cache.Put("keep.example", Entry(StsMode::kEnforce, 86400, kT0)).ok());
    ASSERT_TRUE(
        cache.Put("old.example", Entry(StsMode::kTesting, 60, kT0)).ok());
  }
  ASSERT_TRUE(table.Put("mta-sts/garbled.example", "{not json").ok());
  ASSERT_TRUE(table.Put("suppression/x", "not ours").ok());
  StsCache cache(&table);
  absl::StatusOr<size_t> kept = cache.Load(kT0 + absl::Minutes(5));
  ASSERT_TRUE(kept.ok());
  EXPECT_EQ(*kept, 1u);
  std::optional<StsCacheEntry> e =
      cache.Get("keep.example", kT0 + absl::Minutes(5));
  ASSERT_TRUE(e.has_value());
  EXPECT_EQ(e->policy.mode, StsMode::kEnforce);
  // The expired and the unreadable are gone from the table; others' rows
  // stay.
  EXPECT_FALSE(table.Get("mta-sts/old.example")->has_value());
  EXPECT_FALSE(table.Get("mta-sts/garbled.example")->has_value());
  EXPECT_TRUE(table.Get("suppression/x")->has_value());
}

TEST(StsCache, NoPolicyIsRememberedForAnHour) {
  StsCache cache(nullptr);
  cache.NoPolicy("plain.example", kT0);
  EXPECT_TRUE(cache.KnownNone("plain.example", kT0 + absl::Minutes(59)));
  EXPECT_FALSE(cache.KnownNone("plain.example", kT0 + absl::Hours(1)));
  EXPECT_FALSE(cache.KnownNone("other.example", kT0));
}

TEST(StsCache, FailuresKeepTheirStartUntilAFetchWorks) {
  StsCache cache(nullptr);
  EXPECT_FALSE(cache.FailureOf("x.example").has_value());
  StsCache::Failure f = cache.Failed("x.example", kT0, "timeout");
  EXPECT_EQ(f.since, kT0);
  f = cache.Failed("x.example", kT0 + absl::Minutes(10), "refused");
  EXPECT_EQ(f.since, kT0);
  EXPECT_EQ(f.last, kT0 + absl::Minutes(10));
  EXPECT_EQ(f.why, "refused");
  // A failure a long while after the last starts a new run.
  f = cache.Failed("x.example", kT0 + absl::Hours(40), "timeout");
  EXPECT_EQ(f.since, kT0 + absl::Hours(40));
  // A policy fetched clears it.
  ASSERT_TRUE(cache.Put("x.example", Entry(StsMode::kEnforce, 600, kT0)).ok());
  EXPECT_FALSE(cache.FailureOf("x.example").has_value());
}

TEST(StsCache, MemoryStaysBoundedForEndlessDomains) {
  StsCache cache(nullptr);
  for (int i = 0; i < 250000; ++i) {
    cache.NoPolicy("d" + std::to_string(i) + ".example",
                   kT0 + absl::Seconds(i));
  }
  // The newest are remembered, the oldest forgotten.
  EXPECT_TRUE(cache.KnownNone("d249999.example", kT0 + absl::Seconds(250000)));
  EXPECT_FALSE(cache.KnownNone("d0.example", kT0 + absl::Seconds(250000)));
}

}  // namespace
}  // namespace peregrine::delivery
