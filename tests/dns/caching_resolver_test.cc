#include "dns/caching_resolver.h"

#include <deque>
#include <map>
#include <set>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/dns/packet_builder.h"

namespace peregrine::dns {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using testing::PacketBuilder;

// Answers from a table; records every query; can hold answers back to test
// coalescing.
class FakeTransport : public Transport {
 public:
  std::map<std::string, absl::StatusOr<std::string>> answers;  // "name/type"
  std::vector<std::string> asked;
  bool hold = false;
  std::vector<std::pair<std::string, Done>> held;

  void Query(const std::string& name, uint16_t type, Done done) override {
    std::string key = absl::StrCat(name, "/", TypeName(type));
    asked.push_back(key);
    if (hold) {
      held.push_back({key, std::move(done)});
      return;
    }
    Reply(key, std::move(done));
  }
  void Reply(const std::string& key, Done done) {
    auto it = answers.find(key);
    if (it == answers.end()) {
      done(PacketBuilder(3).Soa("test", 300, 30).Build());  // NXDOMAIN.
    } else {
      done(it->second);
    }
  }
  void Release() {
    auto batch = std::move(held);
    held.clear();
    for (auto& [key, done] : batch) Reply(key, std::move(done));
  }
};

class ResolverTest : public ::testing::Test {
 protected:
  ResolverTest() { Make(false); }
  // A fresh resolver (and transport); `trust_ad`: believe the AD bit.
  void Make(bool trust_ad) {
    auto t = std::make_unique<FakeTransport>();
    transport_ = t.get();
    CachingResolverOptions options;
    options.cache_entries = 100;
    options.seed = 7;
    options.trust_ad = trust_ad;
    resolver_ = std::make_unique<CachingResolver>(
        std::move(t), [this] { return now_; },
        [this](absl::AnyInvocable<void()> fn) {
          deferred_.push_back(std::move(fn));
        },
        options);
  }
  // Runs deferred callbacks, as the reactor would on its next iterations.
  void Drain() {
    while (!deferred_.empty()) {
      auto fn = std::move(deferred_.front());
      deferred_.pop_front();
      fn();
    }
  }
  template <typename T>
  absl::StatusOr<T> Wait(std::function<void(Resolver::Callback<T>)> ask) {
    absl::StatusOr<T> result = absl::UnknownError("no answer");
    bool called = false;
    ask([&](absl::StatusOr<T> r) {
      result = std::move(r);
      called = true;
    });
    EXPECT_FALSE(called) << "called back from inside the call";
    Drain();
    EXPECT_TRUE(called);
    return result;
  }
  absl::StatusOr<std::vector<MxHost>> Mx(const std::string& d) {
    return Wait<std::vector<MxHost>>(
        [&](auto cb) { resolver_->Mx(d, std::move(cb)); });
  }
  absl::StatusOr<HostAddresses> Addresses(const std::string& h) {
    return Wait<HostAddresses>(
        [&](auto cb) { resolver_->Addresses(h, std::move(cb)); });
  }
  void Set(const std::string& key, std::string packet) {
    transport_->answers[key] = std::move(packet);
  }

  absl::Time now_ = absl::FromUnixSeconds(1700000000);
  std::deque<absl::AnyInvocable<void()>> deferred_;
  FakeTransport* transport_;
  std::unique_ptr<CachingResolver> resolver_;
};

TEST_F(ResolverTest, MxSortedByPreferenceWithEqualsShuffled) {
  PacketBuilder p;
  p.Answer("d.test", kMx, 300, PacketBuilder::Mx(20, "b.d.test"))
      .Answer("d.test", kMx, 300, PacketBuilder::Mx(10, "a.d.test"))
      .Answer("d.test", kMx, 300, PacketBuilder::Mx(20, "c.d.test"))
      .Answer("d.test", kMx, 300, PacketBuilder::Mx(30, "e.d.test"));
  Set("d.test/MX", p.Build());
  std::set<std::string> second_seen;
  const auto answers = transport_->answers;
  for (int i = 0; i < 30; ++i) {
    resolver_ = nullptr;  // Fresh cache, fresh shuffle.
    auto t = std::make_unique<FakeTransport>();
    t->answers = answers;
    transport_ = t.get();
    CachingResolverOptions o;
    o.seed = i;
    resolver_ = std::make_unique<CachingResolver>(
        std::move(t), [this] { return now_; },
        [this](absl::AnyInvocable<void()> fn) {
          deferred_.push_back(std::move(fn));
        },
        o);
    auto mx = Mx("D.TEST.");
    ASSERT_TRUE(mx.ok()) << mx.status();
    ASSERT_EQ(mx->size(), 4u);
    EXPECT_EQ((*mx)[0].host, "a.d.test");
    EXPECT_EQ((*mx)[0].preference, 10);
    EXPECT_EQ((*mx)[3].host, "e.d.test");
    second_seen.insert((*mx)[1].host);
  }
  EXPECT_EQ(second_seen, (std::set<std::string>{"b.d.test", "c.d.test"}));
}

TEST_F(ResolverTest, NullMxIsPermanentAndSaysSo) {
  Set("n.test/MX", PacketBuilder()
                       .Answer("n.test", kMx, 300, PacketBuilder::Mx(0, ""))
                       .Build());
  auto mx = Mx("n.test");
  EXPECT_TRUE(absl::IsFailedPrecondition(mx.status()));
  EXPECT_TRUE(IsPermanent(mx.status()));
  EXPECT_THAT(std::string(mx.status().message()), HasSubstr("null MX"));
}

TEST_F(ResolverTest, ImplicitMxWhenOnlyAnAddress) {
  Set("i.test/MX", PacketBuilder().Soa("test", 300, 60).Build());  // NODATA.
  Set("i.test/A", PacketBuilder()
                      .Answer("i.test", kA, 300, PacketBuilder::A("192.0.2.1"))
                      .Build());
  Set("i.test/AAAA", PacketBuilder().Soa("test", 300, 60).Build());
  auto mx = Mx("i.test");
  ASSERT_TRUE(mx.ok()) << mx.status();
  ASSERT_EQ(mx->size(), 1u);
  EXPECT_EQ((*mx)[0].host, "i.test");
  EXPECT_TRUE((*mx)[0].implicit);
}

TEST_F(ResolverTest, NoMxNoAddressAndNxdomainArePermanent) {
  Set("x.test/MX", PacketBuilder().Soa("test", 300, 60).Build());
  Set("x.test/A", PacketBuilder().Soa("test", 300, 60).Build());
  Set("x.test/AAAA", PacketBuilder().Soa("test", 300, 60).Build());
  auto none = Mx("x.test");
  EXPECT_TRUE(absl::IsNotFound(none.status()));
  EXPECT_THAT(std::string(none.status().message()),
              HasSubstr("no MX and no A/AAAA"));
  auto nx = Mx("missing.test");
  EXPECT_TRUE(absl::IsNotFound(nx.status()));
  EXPECT_THAT(std::string(nx.status().message()), HasSubstr("NXDOMAIN"));
}

TEST_F(ResolverTest, TransientFailuresAreTransientAndNotCached) {
  transport_->answers["t.test/MX"] = absl::UnavailableError("SERVFAIL");
  auto mx = Mx("t.test");
  EXPECT_TRUE(absl::IsUnavailable(mx.status()));
  EXPECT_FALSE(IsPermanent(mx.status()));
  transport_->answers["t.test/MX"] = absl::DeadlineExceededError("timeout");
  EXPECT_TRUE(absl::IsDeadlineExceeded(Mx("t.test").status()));
  EXPECT_EQ(transport_->asked.size(), 2u);     // Asked again: nothing cached.
  Set("t.test/MX", PacketBuilder(2).Build());  // SERVFAIL as an rcode.
  EXPECT_TRUE(absl::IsUnavailable(Mx("t.test").status()));
  Set("t.test/MX", "garbage");
  EXPECT_TRUE(absl::IsUnavailable(Mx("t.test").status()));
}

TEST_F(ResolverTest, PositiveAnswersLiveForTheirTtl) {
  Set("h.test/A", PacketBuilder()
                      .Answer("h.test", kA, 60, PacketBuilder::A("192.0.2.5"))
                      .Build());
  Set("h.test/AAAA", PacketBuilder().Soa("test", 600, 600).Build());
  ASSERT_TRUE(Addresses("h.test").ok());
  EXPECT_EQ(transport_->asked.size(), 2u);
  now_ += absl::Seconds(59);
  ASSERT_TRUE(Addresses("h.test").ok());
  EXPECT_EQ(transport_->asked.size(), 2u);  // Both from the cache.
  EXPECT_EQ(resolver_->cache_hits(), 2u);
  now_ += absl::Seconds(2);  // A expired (60 s), AAAA's NODATA has not.
  auto again = Addresses("h.test");
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->v4[0].ToString(), "192.0.2.5");
  EXPECT_THAT(transport_->asked,
              ElementsAre("h.test/A", "h.test/AAAA", "h.test/A"));
}

TEST_F(ResolverTest, NegativeAnswersUseTheSoaMinimum) {
  // NXDOMAIN with SOA TTL 300, minimum 30: kept min(300, 30) = 30 s.
  EXPECT_FALSE(Mx("gone.test").ok());
  now_ += absl::Seconds(29);
  EXPECT_FALSE(Mx("gone.test").ok());
  EXPECT_EQ(transport_->asked.size(), 1u);
  now_ += absl::Seconds(2);
  EXPECT_FALSE(Mx("gone.test").ok());
  EXPECT_EQ(transport_->asked.size(), 2u);
}

TEST_F(ResolverTest, IdenticalQueriesInFlightAreSentOnce) {
  Set("c.test/MX",
      PacketBuilder()
          .Answer("c.test", kMx, 300, PacketBuilder::Mx(1, "mx.c.test"))
          .Build());
  transport_->hold = true;
  int answered = 0;
  for (int i = 0; i < 5; ++i) {
    resolver_->Mx("c.test", [&](absl::StatusOr<std::vector<MxHost>> r) {
      EXPECT_TRUE(r.ok());
      ++answered;
    });
  }
  EXPECT_EQ(transport_->asked.size(), 1u);
  transport_->Release();
  Drain();
  EXPECT_EQ(answered, 5);
}

TEST_F(ResolverTest, CacheIsBoundedLeastRecentlyUsedFirst) {
  for (int i = 0; i < 150; ++i) {
    std::string name = absl::StrCat("h", i, ".test");
    Set(name + "/TXT", PacketBuilder()
                           .Answer(name, kTxt, 3600, PacketBuilder::Txt({"x"}))
                           .Build());
    ASSERT_TRUE((Wait<std::vector<std::string>>([&](auto cb) {
                  resolver_->Txt(name, std::move(cb));
                })).ok());
    if (i >= 1) {
      // Keep h0 recently used.
      ASSERT_TRUE((Wait<std::vector<std::string>>([&](auto cb) {
                    resolver_->Txt("h0.test", std::move(cb));
                  })).ok());
    }
  }
  EXPECT_EQ(resolver_->cache().size(), 100u);
  EXPECT_EQ(resolver_->cache().evictions(), 50u);
  size_t asked = transport_->asked.size();
  ASSERT_TRUE((Wait<std::vector<std::string>>([&](auto cb) {
                resolver_->Txt("h0.test", std::move(cb));
              })).ok());
  EXPECT_EQ(transport_->asked.size(), asked);  // h0 survived.
  ASSERT_TRUE((Wait<std::vector<std::string>>([&](auto cb) {
                resolver_->Txt("h1.test", std::move(cb));
              })).ok());
  EXPECT_EQ(transport_->asked.size(), asked + 1);  // h1 was evicted.
}

TEST_F(ResolverTest, CnamesInsideAnswerAndAcrossAnswers) {
  Set("a.test/A",
      PacketBuilder()
          .Answer("a.test", kCname, 100, PacketBuilder::Name("b.test"))
          .Answer("b.test", kCname, 50, PacketBuilder::Name("c.test"))
          .Answer("c.test", kA, 300, PacketBuilder::A("192.0.2.9"))
          .Build());
  Set("a.test/AAAA",
      PacketBuilder()
          .Answer("a.test", kCname, 100, PacketBuilder::Name("far.test"))
          .Build());
  Set("far.test/AAAA",
      PacketBuilder()
          .Answer("far.test", kAaaa, 200, PacketBuilder::Aaaa("2001:db8::9"))
          .Build());
  auto a = Addresses("a.test");
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->v4[0].ToString(), "192.0.2.9");
  EXPECT_EQ(a->v6[0].ToString(), "2001:db8::9");
  // The chain's smallest TTL (50 s) bounds the A answer.
  now_ += absl::Seconds(51);
  ASSERT_TRUE(Addresses("a.test").ok());
  EXPECT_EQ(std::count(transport_->asked.begin(), transport_->asked.end(),
                       "a.test/A"),
            2);
}

TEST_F(ResolverTest, CnameLoopEndsTransient) {
  Set("l1.test/TXT",
      PacketBuilder()
          .Answer("l1.test", kCname, 100, PacketBuilder::Name("l2.test"))
          .Build());
  Set("l2.test/TXT",
      PacketBuilder()
          .Answer("l2.test", kCname, 100, PacketBuilder::Name("l1.test"))
          .Build());
  auto txt = Wait<std::vector<std::string>>(
      [&](auto cb) { resolver_->Txt("l1.test", std::move(cb)); });
  EXPECT_TRUE(absl::IsUnavailable(txt.status())) << txt.status();
  EXPECT_THAT(std::string(txt.status().message()), HasSubstr("CNAME chain"));
}

TEST_F(ResolverTest, TxtJoinsStringsPtrAndForwardConfirmation) {
  Set("t.test/TXT",
      PacketBuilder()
          .Answer("t.test", kTxt, 300,
                  PacketBuilder::Txt({std::string(255, 'a'), "bc"}))
          .Build());
  auto txt = Wait<std::vector<std::string>>(
      [&](auto cb) { resolver_->Txt("t.test", std::move(cb)); });
  ASSERT_TRUE(txt.ok());
  EXPECT_EQ((*txt)[0], std::string(255, 'a') + "bc");

  Set("5.2.0.192.in-addr.arpa/PTR",
      PacketBuilder()
          .Answer("5.2.0.192.in-addr.arpa", kPtr, 300,
                  PacketBuilder::Name("liar.test"))
          .Answer("5.2.0.192.in-addr.arpa", kPtr, 300,
                  PacketBuilder::Name("mail.test"))
          .Build());
  Set("liar.test/A",
      PacketBuilder()
          .Answer("liar.test", kA, 300, PacketBuilder::A("192.0.2.99"))
          .Build());
  Set("mail.test/A",
      PacketBuilder()
          .Answer("mail.test", kA, 300, PacketBuilder::A("192.0.2.5"))
          .Build());
  auto ip = *IpAddress::Parse("192.0.2.5");
  auto fcrdns = Wait<std::string>(
      [&](auto cb) { resolver_->ForwardConfirmed(ip, std::move(cb)); });
  ASSERT_TRUE(fcrdns.ok()) << fcrdns.status();
  EXPECT_EQ(*fcrdns, "mail.test");
  auto other = *IpAddress::Parse("192.0.2.6");
  auto none = Wait<std::string>(
      [&](auto cb) { resolver_->ForwardConfirmed(other, std::move(cb)); });
  EXPECT_TRUE(absl::IsNotFound(none.status()));
}

TEST_F(ResolverTest, IpLiteralsNeedNoQuery) {
  auto a = Addresses("2001:db8::1");
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->v6[0].ToString(), "2001:db8::1");
  EXPECT_TRUE(transport_->asked.empty());
}

TEST(MessageTest, GarbageIsRejectedNeverTrusted) {
  std::string good =
      PacketBuilder()
          .Question("a.test", kMx)
          .Answer("a.test", kMx, 300, PacketBuilder::Mx(5, "mx.a.test"))
          .Build();
  ASSERT_TRUE(ParseResponse(good).ok());
  for (size_t cut = 0; cut < good.size(); ++cut) {
    EXPECT_FALSE(ParseResponse(good.substr(0, cut)).ok()) << cut;
  }
  // An A record cut short (found by the fuzzer: it once read past the end).
  std::string a = PacketBuilder()
                      .Answer("a.test", kA, 300, PacketBuilder::A("192.0.2.1"))
                      .Build();
  for (size_t cut = 12; cut < a.size(); ++cut) {
    EXPECT_FALSE(ParseResponse(a.substr(0, cut)).ok()) << cut;
  }
  // A compression pointer to itself must not loop.
  std::string loop = good.substr(0, 12) + std::string("\xC0\x0C", 2) +
                     std::string("\x00\x0F\x00\x01", 4);
  loop[5] = 1;  // QDCOUNT 1.
  EXPECT_FALSE(ParseResponse(loop).ok());
  std::string query = good;
  query[2] &= 0x7F;  // Not a response.
  EXPECT_FALSE(ParseResponse(query).ok());
  EXPECT_EQ(IpAddress::Parse("192.0.2.1")->ReverseName(),
            "1.2.0.192.in-addr.arpa");
  EXPECT_EQ(IpAddress::Parse("2001:db8::1")->ReverseName(),
            "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2."
            "ip6.arpa");
}

TEST_F(ResolverTest, AuthenticatedOnlyWithAdFromATrustedResolver) {
  auto mx = [](const std::string& d, bool ad) {
    PacketBuilder p;
    if (ad) p.Authenticated();
    return p.Answer(d, kMx, 300, PacketBuilder::Mx(10, "mx." + d)).Build();
  };
  Set("d.test/MX", mx("d.test", true));
  auto untrusted = Mx("d.test");
  ASSERT_TRUE(untrusted.ok());
  EXPECT_FALSE(untrusted->front().authenticated);  // AD, not believed.
  Make(/*trust_ad=*/true);
  Set("d.test/MX", mx("d.test", true));
  Set("u.test/MX", mx("u.test", false));
  auto trusted = Mx("d.test");
  ASSERT_TRUE(trusted.ok());
  EXPECT_TRUE(trusted->front().authenticated);
  auto again = Mx("d.test");  // From the cache: the same.
  ASSERT_TRUE(again.ok());
  EXPECT_TRUE(again->front().authenticated);
  auto plain = Mx("u.test");
  ASSERT_TRUE(plain.ok());
  EXPECT_FALSE(plain->front().authenticated);
}

TEST_F(ResolverTest, AddressesAuthenticatedWhenBothAnswersAre) {
  Make(/*trust_ad=*/true);
  Set("a.test/A", PacketBuilder()
                      .Authenticated()
                      .Answer("a.test", kA, 300, PacketBuilder::A("192.0.2.1"))
                      .Build());
  Set("a.test/AAAA", PacketBuilder()
                         .Authenticated()
                         .Soa("a.test", 300, 60)
                         .Build());  // NODATA, validated.
  Set("b.test/A", PacketBuilder()
                      .Authenticated()
                      .Answer("b.test", kA, 300, PacketBuilder::A("192.0.2.2"))
                      .Build());
  Set("b.test/AAAA", PacketBuilder().Soa("b.test", 300, 60).Build());
  auto a = Addresses("a.test");
  ASSERT_TRUE(a.ok());
  EXPECT_TRUE(a->authenticated);
  auto b = Addresses("b.test");
  ASSERT_TRUE(b.ok());
  EXPECT_FALSE(b->authenticated);
}

TEST_F(ResolverTest, TlsaRecordsAndTheirAbsence) {
  Make(/*trust_ad=*/true);
  std::string digest(32, '\xab');
  Set("_25._tcp.mx.d.test/TLSA",
      PacketBuilder()
          .Authenticated()
          .Answer("_25._tcp.mx.d.test", kTlsa, 300,
                  PacketBuilder::Tlsa(3, 1, 1, digest))
          .Build());
  auto t = Wait<TlsaAnswer>(
      [&](auto cb) { resolver_->Tlsa("_25._tcp.mx.d.test", std::move(cb)); });
  ASSERT_TRUE(t.ok());
  EXPECT_TRUE(t->authenticated);
  ASSERT_EQ(t->records.size(), 1u);
  EXPECT_EQ(t->records[0].tlsa_usage, 3);
  EXPECT_EQ(t->records[0].tlsa_selector, 1);
  EXPECT_EQ(t->records[0].tlsa_matching, 1);
  EXPECT_EQ(t->records[0].tlsa_data, digest);
  // None (NXDOMAIN from the fake): an answer, not an error.
  auto none = Wait<TlsaAnswer>(
      [&](auto cb) { resolver_->Tlsa("_25._tcp.mx.e.test", std::move(cb)); });
  ASSERT_TRUE(none.ok());
  EXPECT_TRUE(none->records.empty());
  EXPECT_FALSE(none->authenticated);
  // A TLSA record shorter than its three fixed bytes is refused.
  Set("_25._tcp.mx.f.test/TLSA",
      PacketBuilder()
          .Answer("_25._tcp.mx.f.test", kTlsa, 300, std::string("\x03\x01"))
          .Build());
  auto bad = Wait<TlsaAnswer>(
      [&](auto cb) { resolver_->Tlsa("_25._tcp.mx.f.test", std::move(cb)); });
  EXPECT_FALSE(bad.ok());
}

}  // namespace
}  // namespace peregrine::dns
