#include "mta/delivery/shaping.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace peregrine::delivery {
namespace {

using ::testing::HasSubstr;

const absl::Time kT0 = absl::FromUnixSeconds(1700000000);

TEST(TokenBucketTest, TwentyPerSecondGivesTwoHundredInAboutTenSeconds) {
  TokenBucket bucket = *TokenBucket::Parse("20/s", /*burst=*/1);
  absl::Time now = kT0;
  int sent = 0;
  while (sent < 200) {
    now = bucket.NextAvailable(now);
    ASSERT_TRUE(bucket.TryTake(now));
    ++sent;
  }
  EXPECT_NEAR(absl::ToDoubleSeconds(now - kT0), 9.95, 0.01);
}

TEST(TokenBucketTest, BurstRefillScaleAndUnits) {
  TokenBucket b(600, absl::Minutes(1), 5);  // 10/s, burst 5.
  for (int i = 0; i < 5; ++i) EXPECT_TRUE(b.TryTake(kT0));
  EXPECT_FALSE(b.TryTake(kT0));
  EXPECT_EQ(b.NextAvailable(kT0), kT0 + absl::Milliseconds(100));
  EXPECT_TRUE(b.TryTake(kT0 + absl::Milliseconds(100)));
  b.Scale(0.5);  // Back-off: 5/s.
  EXPECT_EQ(b.NextAvailable(kT0 + absl::Milliseconds(100)),
            kT0 + absl::Milliseconds(300));
  EXPECT_TRUE(TokenBucket::Parse("unlimited")->TryTake(kT0));
  EXPECT_TRUE(TokenBucket::Parse("10000/h").ok());
  for (const char* bad : {"20", "20/d", "x/s", "-1/s"}) {
    auto parsed = TokenBucket::Parse(bad);
    EXPECT_FALSE(parsed.ok()) << bad;
  }
  EXPECT_THAT(std::string(TokenBucket::Parse("5/w").status().message()),
              HasSubstr("/s, /m or /h"));
}

TEST(ConcurrencyWindowTest, SlowStartAndBackOff) {
  ConcurrencyWindow w(2, 10);
  EXPECT_TRUE(w.TryAcquire());
  EXPECT_TRUE(w.TryAcquire());
  EXPECT_FALSE(w.TryAcquire());
  w.Release();
  EXPECT_EQ(w.in_flight(), 1);
  for (int i = 0; i < 2; ++i) w.OnSuccess();  // One window of successes.
  EXPECT_EQ(w.limit(), 2);
  w.OnSuccess();
  EXPECT_EQ(w.limit(), 3);
  for (int i = 0; i < 200; ++i) w.OnSuccess();
  EXPECT_EQ(w.limit(), 10);  // Capped.
  w.OnFailure();
  EXPECT_EQ(w.limit(), 5);
  for (int i = 0; i < 10; ++i) w.OnFailure();
  EXPECT_EQ(w.limit(), 1);  // Never below one.
}

TEST(RetryScheduleTest, ExponentialWithJitterThenExpiry) {
  RetrySchedule schedule(RetryOptions{});
  std::mt19937_64 rng(7);
  absl::Time received = kT0;
  auto delay = [&](uint32_t attempts, absl::Time now) {
    return *schedule.Next(attempts, received, now, rng) - now;
  };
  for (int i = 0; i < 50; ++i) {
    absl::Duration d = delay(1, kT0);
    EXPECT_GE(d, absl::Minutes(4.5));
    EXPECT_LE(d, absl::Minutes(5.5));
  }
  EXPECT_NEAR(absl::ToDoubleMinutes(delay(2, kT0)), 10, 1.0);
  EXPECT_NEAR(absl::ToDoubleMinutes(delay(3, kT0)), 20, 2.0);
  EXPECT_NEAR(absl::ToDoubleHours(delay(20, kT0)), 4, 0.4);  // Capped.
  // Near the end of its life, the last try lands at the maximum age.
  absl::Time late = received + absl::Hours(24 * 5) - absl::Minutes(1);
  EXPECT_EQ(*schedule.Next(20, received, late, rng),
            received + absl::Hours(24 * 5));
  EXPECT_FALSE(schedule.Next(20, received, received + absl::Hours(24 * 5), rng)
                   .has_value());
}

TEST(BackoffRulesTest, RepliesThatMeanSlowDown) {
  auto rules = BackoffRules::Create(
      {{"too many (connections|messages)", absl::Minutes(10), 0.25},
       {"try again later", absl::Minutes(2), 0.5}});
  ASSERT_TRUE(rules.ok()) << rules.status();
  auto b = rules->Match(450, "4.7.0 Too many connections from your IP");
  ASSERT_TRUE(b.has_value());
  EXPECT_EQ(b->pause, absl::Minutes(10));
  EXPECT_EQ(b->rate_factor, 0.25);
  EXPECT_TRUE(rules->Match(421, "closing").has_value());
  EXPECT_FALSE(rules->Match(550, "5.1.1 no such user").has_value());
  auto bad = BackoffRules::Create({{"unclosed (group", absl::Minutes(1), 1}});
  EXPECT_FALSE(bad.ok());
  EXPECT_THAT(std::string(bad.status().message()),
              HasSubstr("unclosed (group"));
}

}  // namespace
}  // namespace peregrine::delivery
