// The c-ares resolver on a real shard, against a real DNS server (NSD) on
// loopback serving zones of the test's own; both I/O backends.
#include <sys/socket.h>

#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "dns/cares_transport.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "mta/shard/shard_group.h"
#include "tests/dns/nsd_fixture.h"

namespace peregrine::dns {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::UnorderedElementsAre;

class CaresTest : public ::testing::TestWithParam<shard::BackendKind> {
 protected:
  static void SetUpTestSuite() {
    auto nsd = testing::NsdServer::Start(testing::TestZones());
    ASSERT_TRUE(nsd.ok()) << nsd.status();
    nsd_ = nsd->release();
  }
  static void TearDownTestSuite() {
    delete nsd_;
    nsd_ = nullptr;
  }

  void SetUp() override {
    shard::ShardGroup::Options options;
    options.shards = 1;
    options.backend = GetParam();
    group_ = std::make_unique<shard::ShardGroup>(options);
    ASSERT_TRUE(group_->Start().ok());
    Use({nsd_->address()}, absl::Seconds(2), 2);
  }
  void TearDown() override {
    OnShard([this] { resolver_.reset(); });
    group_->Stop();
    group_->Join();
  }

  void OnShard(std::function<void()> fn) {
    absl::Notification done;
    group_->SubmitTo(0, [&] {
      fn();
      done.Notify();
    });
    done.WaitForNotification();
  }
  void Use(std::vector<std::string> servers, absl::Duration timeout,
           int tries) {
    OnShard([&] {
      resolver_.reset();
      CaresOptions cares;
      cares.servers = servers;
      cares.timeout = timeout;
      cares.tries = tries;
      auto r = MakeCaresResolver(group_->reactor(0), cares);
      ASSERT_TRUE(r.ok()) << r.status();
      resolver_ = *std::move(r);
    });
  }
  template <typename T>
  absl::StatusOr<T> Ask(
      std::function<void(Resolver&, Resolver::Callback<T>)> ask) {
    absl::Notification done;
    absl::StatusOr<T> result = absl::UnknownError("none");
    group_->SubmitTo(0, [&] {
      ask(*resolver_, [&](absl::StatusOr<T> r) {
        result = std::move(r);
        done.Notify();
      });
    });
    EXPECT_TRUE(done.WaitForNotificationWithTimeout(absl::Seconds(30)));
    return result;
  }
  absl::StatusOr<std::vector<MxHost>> Mx(std::string d) {
    return Ask<std::vector<MxHost>>(
        [d](Resolver& r, auto cb) { r.Mx(d, std::move(cb)); });
  }
  absl::StatusOr<HostAddresses> Addresses(std::string h) {
    return Ask<HostAddresses>(
        [h](Resolver& r, auto cb) { r.Addresses(h, std::move(cb)); });
  }

  static testing::NsdServer* nsd_;
  std::unique_ptr<shard::ShardGroup> group_;
  std::unique_ptr<CachingResolver> resolver_;
};
testing::NsdServer* CaresTest::nsd_ = nullptr;

std::vector<std::string> Hosts(const std::vector<MxHost>& mx) {
  std::vector<std::string> out;
  for (const auto& m : mx) out.push_back(m.host);
  return out;
}

TEST_P(CaresTest, MxInPreferenceOrder) {
  auto mx = Mx("multi.test");
  ASSERT_TRUE(mx.ok()) << mx.status();
  ASSERT_EQ(mx->size(), 3u);
  EXPECT_EQ((*mx)[0].host, "mx1.multi.test");
  EXPECT_EQ((*mx)[1].preference, 20);
  EXPECT_THAT(Hosts(*mx),
              UnorderedElementsAre("mx1.multi.test", "mx2.multi.test",
                                   "mx3.multi.test"));
}

TEST_P(CaresTest, NullMxImplicitMxNxdomainNodata) {
  auto null_mx = Mx("nullmx.test");
  EXPECT_TRUE(absl::IsFailedPrecondition(null_mx.status())) << null_mx.status();
  auto implicit = Mx("implicit.test");
  ASSERT_TRUE(implicit.ok()) << implicit.status();
  EXPECT_TRUE((*implicit)[0].implicit);
  EXPECT_EQ((*implicit)[0].host, "implicit.test");
  auto nx = Mx("does-not-exist.test");
  EXPECT_TRUE(absl::IsNotFound(nx.status()));
  EXPECT_THAT(std::string(nx.status().message()), HasSubstr("NXDOMAIN"));
  auto nodata = Mx("nodata.test");  // Only a TXT: no MX, no address.
  EXPECT_TRUE(absl::IsNotFound(nodata.status()));
  EXPECT_THAT(std::string(nodata.status().message()),
              HasSubstr("no MX and no A/AAAA"));
}

TEST_P(CaresTest, AddressesAndCnameChains) {
  auto a = Addresses("mx2.multi.test");
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->v4[0].ToString(), "192.0.2.2");
  EXPECT_EQ(a->v6[0].ToString(), "2001:db8::2");
  auto chained = Addresses("alias.test");  // alias -> alias2 -> real.
  ASSERT_TRUE(chained.ok()) << chained.status();
  EXPECT_EQ(chained->v4[0].ToString(), "192.0.2.20");
  auto mx = Mx("alias.test");
  ASSERT_TRUE(mx.ok()) << mx.status();
  EXPECT_EQ((*mx)[0].host, "mx1.multi.test");
}

TEST_P(CaresTest, TxtLongerThan255AndPtrAndFcrdns) {
  auto txt = Ask<std::vector<std::string>>(
      [](Resolver& r, auto cb) { r.Txt("long.test", std::move(cb)); });
  ASSERT_TRUE(txt.ok()) << txt.status();
  EXPECT_EQ((*txt)[0], std::string(255, 'a') + "bbbb");
  auto ptr = Ask<std::vector<std::string>>([](Resolver& r, auto cb) {
    r.Ptr(*IpAddress::Parse("192.0.2.30"), std::move(cb));
  });
  ASSERT_TRUE(ptr.ok()) << ptr.status();
  EXPECT_THAT(*ptr, ElementsAre("mail.test"));
  auto good = Ask<std::string>([](Resolver& r, auto cb) {
    r.ForwardConfirmed(*IpAddress::Parse("192.0.2.30"), std::move(cb));
  });
  ASSERT_TRUE(good.ok()) << good.status();
  EXPECT_EQ(*good, "mail.test");
  auto liar = Ask<std::string>([](Resolver& r, auto cb) {
    r.ForwardConfirmed(*IpAddress::Parse("192.0.2.31"), std::move(cb));
  });
  EXPECT_TRUE(absl::IsNotFound(liar.status())) << liar.status();
  auto none = Ask<std::vector<std::string>>([](Resolver& r, auto cb) {
    r.Ptr(*IpAddress::Parse("192.0.2.77"), std::move(cb));
  });
  EXPECT_TRUE(absl::IsNotFound(none.status()));
}

TEST_P(CaresTest, SecondLookupComesFromTheCache) {
  ASSERT_TRUE(Mx("multi.test").ok());
  uint64_t sent = resolver_->queries_sent();
  ASSERT_TRUE(Mx("multi.test").ok());
  EXPECT_EQ(resolver_->queries_sent(), sent);
  EXPECT_GE(resolver_->cache_hits(), 1u);
}

TEST_P(CaresTest, ServerThatNeverAnswersIsATransientTimeout) {
  testing::SilentServer silent;
  Use({silent.address()}, absl::Milliseconds(200), 2);
  absl::Time start = absl::Now();
  auto mx = Mx("multi.test");
  EXPECT_TRUE(absl::IsDeadlineExceeded(mx.status())) << mx.status();
  EXPECT_FALSE(IsPermanent(mx.status()));
  EXPECT_LT(absl::Now() - start, absl::Seconds(5));
}

TEST_P(CaresTest, ServfailIsTransient) {
  testing::ServFailServer servfail;
  Use({servfail.address()}, absl::Milliseconds(500), 1);
  auto mx = Mx("multi.test");
  EXPECT_TRUE(absl::IsUnavailable(mx.status())) << mx.status();
  EXPECT_FALSE(IsPermanent(mx.status()));
}

TEST_P(CaresTest, ManyConcurrentLookups) {
  absl::Notification done;
  std::atomic<int> ok{0};
  group_->SubmitTo(0, [&] {
    auto left = std::make_shared<int>(200);
    for (int i = 0; i < 200; ++i) {
      std::string name = i % 2 ? "multi.test" : "implicit.test";
      resolver_->Mx(name, [&, left](absl::StatusOr<std::vector<MxHost>> r) {
        if (r.ok()) ++ok;
        if (--*left == 0) done.Notify();
      });
    }
  });
  ASSERT_TRUE(done.WaitForNotificationWithTimeout(absl::Seconds(30)));
  EXPECT_EQ(ok.load(), 200);
}

TEST_P(CaresTest, BadServerAddressIsAClearError) {
  OnShard([this] {
    CaresOptions cares;
    cares.servers = {"not-an-address"};
    auto r = MakeCaresResolver(group_->reactor(0), cares);
    EXPECT_FALSE(r.ok());
  });
}

INSTANTIATE_TEST_SUITE_P(Backends, CaresTest,
                         ::testing::Values(shard::BackendKind::kIoUring,
                                           shard::BackendKind::kEpoll),
                         [](const auto& info) {
                           return info.param == shard::BackendKind::kEpoll
                                      ? "epoll"
                                      : "io_uring";
                         });

}  // namespace
}  // namespace peregrine::dns
