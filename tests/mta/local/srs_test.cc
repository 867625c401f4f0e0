// SRS return paths (mta/local/srs.h): their shape, the way back, and what
// is refused on the way back.
#include "mta/local/srs.h"

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "gtest/gtest.h"

namespace peregrine::local {
namespace {

const absl::Time kNow = absl::FromUnixSeconds(1795780800);  // Day 20784.

SrsOptions Options() {
  SrsOptions o;
  o.domain = "fwd.test";
  o.secret = "0123456789abcdef0123456789abcdef";
  return o;
}

TEST(Srs, Srs0HasTheSchemesShape) {
  std::string a = SrsForward(Options(), "alice@sender.example", kNow);
  // 20784 % 1024 = 304 = 9*32 + 16: "JQ".
  ASSERT_TRUE(absl::StartsWith(a, "SRS0=")) << a;
  EXPECT_TRUE(absl::EndsWith(a, "=JQ=sender.example=alice@fwd.test")) << a;
  EXPECT_EQ(a.size(),
            std::string("SRS0=HHHH=JQ=sender.example=alice@fwd.test").size());
  EXPECT_TRUE(IsSrsAddress(Options(), a));
  EXPECT_EQ(*SrsReverse(Options(), a, kNow), "alice@sender.example");
  // Mail systems may change the case of an address; the hash still holds.
  std::string upper = a;
  for (char& c : upper) c = absl::ascii_toupper(c);
  EXPECT_EQ(*SrsReverse(Options(), upper, kNow), "ALICE@SENDER.EXAMPLE");
  // Our own domain is not rewritten.
  EXPECT_EQ(SrsForward(Options(), "me@fwd.test", kNow), "me@fwd.test");
}

TEST(Srs, LocalPartsWithSeparatorsSurvive) {
  std::string a = SrsForward(Options(), "a=b+c-d@sender.example", kNow);
  EXPECT_EQ(*SrsReverse(Options(), a, kNow), "a=b+c-d@sender.example");
  // Found by local_fuzz: a malformed SRS1 is a plain user, and a "domain"
  // with '=' could not be taken apart again, so it is left alone.
  a = SrsForward(Options(), "SRS1=abcd=x@sender.example", kNow);
  EXPECT_TRUE(absl::StartsWith(a, "SRS0=")) << a;
  EXPECT_EQ(*SrsReverse(Options(), a, kNow), "SRS1=abcd=x@sender.example");
  EXPECT_EQ(SrsForward(Options(), "u@p=q.example", kNow), "u@p=q.example");
  a = SrsForward(Options(), "SRS1=li==r=g@p.example", kNow);  // No host.
  EXPECT_EQ(*SrsReverse(Options(), a, kNow), "SRS1=li==r=g@p.example") << a;
}

TEST(Srs, ForgedOldAndMalformedAreRefused) {
  std::string a = SrsForward(Options(), "alice@sender.example", kNow);
  std::string forged = a;
  forged[5] = forged[5] == '0' ? '1' : '0';
  EXPECT_TRUE(
      absl::IsPermissionDenied(SrsReverse(Options(), forged, kNow).status()));
  SrsOptions other = Options();
  other.secret = "another key, just as long as the first";
  EXPECT_TRUE(absl::IsPermissionDenied(SrsReverse(other, a, kNow).status()));
  // Another sender in the same hash.
  std::string moved = a;
  moved.replace(moved.find("alice"), 5, "mallo");
  EXPECT_TRUE(
      absl::IsPermissionDenied(SrsReverse(Options(), moved, kNow).status()));
  EXPECT_TRUE(SrsReverse(Options(), a, kNow + absl::Hours(24 * 21)).ok());
  EXPECT_TRUE(absl::IsDeadlineExceeded(
      SrsReverse(Options(), a, kNow + absl::Hours(24 * 22)).status()));
  for (const char* bad :
       {"SRS0=abcd@fwd.test", "SRS0=abcd=J!=x.example=u@fwd.test",
        "SRS0==JQ=x.example=u@fwd.test", "SRS1=abcd@fwd.test",
        "SRS0=abcd=JQ=x=u@other.test", "alice@fwd.test", "SRS0@fwd.test"}) {
    EXPECT_FALSE(SrsReverse(Options(), bad, kNow).ok()) << bad;
  }
}

TEST(Srs, AForwardedSrs0BecomesSrs1AndGoesBackOneHop) {
  SrsOptions first = Options();
  first.domain = "first.test";
  std::string srs0 = SrsForward(first, "alice@sender.example", kNow);
  std::string srs1 = SrsForward(Options(), srs0, kNow);
  ASSERT_TRUE(absl::StartsWith(srs1, "SRS1=")) << srs1;
  EXPECT_TRUE(absl::StrContains(srs1, "=first.test==")) << srs1;
  EXPECT_TRUE(absl::EndsWith(srs1, "@fwd.test"));
  // Back one hop: the first forwarder's SRS0, which it takes back itself.
  EXPECT_EQ(*SrsReverse(Options(), srs1, kNow), srs0);
  EXPECT_EQ(*SrsReverse(first, srs0, kNow), "alice@sender.example");
  // A third forwarder keeps naming the first one.
  SrsOptions third = Options();
  third.domain = "third.test";
  std::string again = SrsForward(third, srs1, kNow);
  EXPECT_TRUE(absl::StartsWith(again, "SRS1=")) << again;
  EXPECT_TRUE(absl::StrContains(again, "=first.test==")) << again;
  EXPECT_EQ(*SrsReverse(third, again, kNow), srs0);
}

}  // namespace
}  // namespace peregrine::local
