#include "mta/auth.h"

#include <atomic>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace peregrine {
namespace {

using smtp::AuthVerdict;
using ::testing::HasSubstr;

class FakeClock {
 public:
  absl::Time Now() {
    absl::MutexLock lock(&mu_);
    return now_;
  }
  void Advance(absl::Duration d) {
    absl::MutexLock lock(&mu_);
    now_ += d;
  }

 private:
  absl::Mutex mu_;
  absl::Time now_ = absl::FromUnixSeconds(1700000000);
};

std::shared_ptr<const UsersFile> OneUser() {
  static const auto users = [] {
    auto u = std::make_shared<UsersFile>();
    EXPECT_TRUE(u->Set("app", "right-password").ok());
    return u;
  }();
  return users;
}

// Waits for the answer of one check.
AuthAnswer CheckNow(Authenticator& a, const std::string& client,
                    const std::string& password) {
  absl::Notification done;
  AuthAnswer out;
  a.Check(client, "app", password, [&](AuthAnswer answer) {
    out = std::move(answer);
    done.Notify();
  });
  EXPECT_TRUE(done.WaitForNotificationWithTimeout(absl::Seconds(30)));
  return out;
}

TEST(AuthenticatorTest, RightAndWrongPasswordsAndAGrowingDelay) {
  FakeClock clock;
  Authenticator a(Authenticator::Limits{}, [&] { return clock.Now(); });
  a.SetUsers(OneUser());
  EXPECT_EQ(CheckNow(a, "10.0.0.1", "right-password").verdict,
            AuthVerdict::kAccepted);
  std::vector<absl::Duration> delays;
  for (int i = 0; i < 6; ++i) {
    AuthAnswer r = CheckNow(a, "10.0.0.1", "wrong-password");
    EXPECT_EQ(r.verdict, AuthVerdict::kRejected);
    delays.push_back(r.delay);
  }
  EXPECT_THAT(delays, ::testing::ElementsAre(absl::Seconds(1), absl::Seconds(2),
                                             absl::Seconds(4), absl::Seconds(8),
                                             absl::Seconds(16),
                                             absl::Seconds(30)));  // Capped.
  // Another address is not slowed by the first one's failures.
  AuthAnswer other = CheckNow(a, "10.0.0.2", "wrong-password");
  EXPECT_EQ(other.delay, absl::Seconds(1));
  EXPECT_EQ(a.stats().accepted, 1u);
  EXPECT_EQ(a.stats().rejected, 7u);
}

TEST(AuthenticatorTest, AnAddressOutOfBudgetIsRefusedWithoutACheckUntilRefill) {
  FakeClock clock;
  Authenticator::Limits limits;
  limits.failure_budget = 3;
  limits.refill = absl::Seconds(30);
  Authenticator a(limits, [&] { return clock.Now(); });
  a.SetUsers(OneUser());
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(CheckNow(a, "10.0.0.1", "wrong-password").verdict,
              AuthVerdict::kRejected);
  }
  // Even the right password is not checked now: the address is locked.
  AuthAnswer r = CheckNow(a, "10.0.0.1", "right-password");
  EXPECT_EQ(r.verdict, AuthVerdict::kTryLater);
  EXPECT_THAT(r.why, HasSubstr("too many failed logins from 10.0.0.1"));
  EXPECT_THAT(r.why, HasSubstr("try again in 30 seconds"));
  EXPECT_EQ(a.stats().refused, 1u);
  // Other addresses are served meanwhile.
  EXPECT_EQ(CheckNow(a, "10.0.0.9", "right-password").verdict,
            AuthVerdict::kAccepted);
  clock.Advance(absl::Seconds(29));
  EXPECT_EQ(CheckNow(a, "10.0.0.1", "right-password").verdict,
            AuthVerdict::kTryLater);
  clock.Advance(absl::Seconds(1));
  r = CheckNow(a, "10.0.0.1", "right-password");
  EXPECT_EQ(r.verdict, AuthVerdict::kAccepted) << r.why;
}

TEST(AuthenticatorTest, Ipv6ClientsCountByTheirSlash64) {
  EXPECT_EQ(Authenticator::ClientKey("2001:db8:1:2::5"), "2001:db8:1:2::/64");
  EXPECT_EQ(Authenticator::ClientKey("2001:db8:1:2:ffff::9"),
            "2001:db8:1:2::/64");
  EXPECT_EQ(Authenticator::ClientKey("::ffff:192.0.2.1"), "192.0.2.1");
  EXPECT_EQ(Authenticator::ClientKey("192.0.2.1"), "192.0.2.1");
  FakeClock clock;
  Authenticator::Limits limits;
  limits.failure_budget = 2;
  Authenticator a(limits, [&] { return clock.Now(); });
  a.SetUsers(OneUser());
  CheckNow(a, "2001:db8:1:2::1", "wrong-password");
  CheckNow(a, "2001:db8:1:2::2", "wrong-password");
  EXPECT_EQ(CheckNow(a, "2001:db8:1:2::3", "right-password").verdict,
            AuthVerdict::kTryLater);
}

TEST(AuthenticatorTest, TooManyAtOnceFromOneAddressOrOverallAreRefused) {
  FakeClock clock;
  Authenticator::Limits limits;
  limits.workers = 1;
  limits.max_in_flight_per_client = 2;
  limits.max_queued = 4;
  Authenticator a(limits, [&] { return clock.Now(); });
  a.SetUsers(OneUser());
  std::atomic<int> try_later{0}, answered{0};
  auto count = [&](AuthAnswer r) {
    if (r.verdict == AuthVerdict::kTryLater) ++try_later;
    ++answered;
  };
  for (int i = 0; i < 6; ++i)
    a.Check("10.0.0.1", "app", "right-password", count);
  // At most 2 of one address wait or run: 4 are refused at once.
  EXPECT_GE(try_later.load(), 4);
  for (int i = 0; i < 10; ++i) {
    a.Check("10.0.1." + std::to_string(i), "app", "right-password", count);
  }
  absl::Time deadline = absl::Now() + absl::Seconds(30);
  while (answered.load() < 16 && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(5));
  }
  EXPECT_EQ(answered.load(), 16);
  // The queue holds 4: of the 10 other addresses, several were refused.
  EXPECT_GE(try_later.load(), 4 + 10 - 4 - 1);
}

// A user logging in while guesses from other addresses are queued waits
// only for the checks already running, not for the whole queue.
TEST(AuthenticatorTest, CleanAddressesGoBeforeSuspectOnes) {
  FakeClock clock;
  Authenticator::Limits limits;
  limits.workers = 1;
  limits.max_in_flight_per_client = 100;
  limits.failure_budget = 1000;
  Authenticator a(limits, [&] { return clock.Now(); });
  a.SetUsers(OneUser());
  CheckNow(a, "10.6.6.6", "wrong-password");  // Now suspect.
  absl::Mutex mu;
  std::vector<std::string> order;
  std::atomic<int> answered{0};
  for (int i = 0; i < 20; ++i) {
    a.Check("10.6.6.6", "app", "wrong-password", [&](AuthAnswer) {
      absl::MutexLock lock(&mu);
      order.push_back("attacker");
      ++answered;
    });
  }
  a.Check("10.0.0.1", "app", "right-password", [&](AuthAnswer r) {
    EXPECT_EQ(r.verdict, AuthVerdict::kAccepted);
    absl::MutexLock lock(&mu);
    order.push_back("user");
    ++answered;
  });
  absl::Time deadline = absl::Now() + absl::Seconds(60);
  while (answered.load() < 21 && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(5));
  }
  absl::MutexLock lock(&mu);
  ASSERT_EQ(order.size(), 21u);
  size_t user_at =
      std::find(order.begin(), order.end(), "user") - order.begin();
  EXPECT_LE(user_at, 2u) << "the user waited behind " << user_at << " guesses";
}

TEST(AuthenticatorTest, FailuresAreSummedUpOncePerPeriodNotPerAttempt) {
  FakeClock clock;
  Authenticator::Limits limits;
  limits.failure_budget = 2;
  limits.summary_every = absl::Minutes(1);
  Authenticator a(limits, [&] { return clock.Now(); });
  a.SetUsers(OneUser());
  ::testing::internal::CaptureStderr();
  for (int i = 0; i < 3; ++i) CheckNow(a, "10.0.0.1", "wrong-password");
  CheckNow(a, "10.0.0.2", "wrong-password");
  std::string quiet = ::testing::internal::GetCapturedStderr();
  EXPECT_EQ(quiet, "");  // Nothing per attempt.
  clock.Advance(absl::Minutes(1));
  ::testing::internal::CaptureStderr();
  CheckNow(a, "10.0.0.3", "right-password");  // Any call reports.
  std::string summary = ::testing::internal::GetCapturedStderr();
  EXPECT_THAT(summary, HasSubstr("3 failed logins from 2 addresses"));
  EXPECT_THAT(summary, HasSubstr("most from 10.0.0.1: 2"));
  EXPECT_THAT(summary, HasSubstr("1 attempts refused without a check"));
}

TEST(AuthenticatorTest, AChangedUsersFileIsPickedUpWithoutSighup) {
  FakeClock clock;
  Authenticator a(Authenticator::Limits{}, [&] { return clock.Now(); });
  std::string path = std::string(getenv("TEST_TMPDIR")) + "/users";
  UsersFile users;
  ASSERT_TRUE(users.Set("app", "right-password").ok());
  ASSERT_TRUE(users.Save(path).ok());
  a.SetUsers(std::make_shared<const UsersFile>(*UsersFile::Load(path)));
  a.WatchFile(path);
  auto check = [&](const std::string& user) {
    absl::Notification done;
    AuthAnswer out;
    a.Check("10.0.0.1", user, "right-password", [&](AuthAnswer r) {
      out = r;
      done.Notify();
    });
    done.WaitForNotification();
    return out.verdict;
  };
  EXPECT_EQ(check("app"), AuthVerdict::kAccepted);
  EXPECT_EQ(check("new"), AuthVerdict::kRejected);
  ASSERT_TRUE(users.Set("new", "right-password").ok());
  ASSERT_TRUE(users.Save(path).ok());  // As `peregrine user add` does.
  clock.Advance(absl::Seconds(1));
  EXPECT_EQ(check("new"), AuthVerdict::kAccepted);
  // A broken file keeps the users loaded before.
  { std::ofstream(path) << "garbage\n"; }
  clock.Advance(absl::Seconds(1));
  EXPECT_TRUE(a.HasUsers());
  EXPECT_EQ(check("new"), AuthVerdict::kAccepted);
}

}  // namespace
}  // namespace peregrine
