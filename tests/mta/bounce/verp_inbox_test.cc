// VERP tokens (made, read back, forged, damaged) and the bounce inbox
// acting on what comes back: a matched failure suppresses, a forged or
// missing token does not, a complaint does.
#include <fstream>
#include <map>
#include <mutex>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_replace.h"
#include "gtest/gtest.h"
#include "mta/bounce/inbox.h"
#include "mta/bounce/verp.h"
#include "tests/mta/bounce/memory_table.h"

namespace peregrine::bounce {
namespace {

VerpOptions Options() {
  VerpOptions o;
  o.domain = "bounces.shop.example";
  o.secret = "a-secret-of-at-least-16-bytes";
  return o;
}

TEST(Verp, RoundTrip) {
  VerpOptions o = Options();
  std::string a = VerpAddress(o, 0x066141EB688B7500, 3, "Jane.Doe+x@Gmail.com");
  EXPECT_TRUE(absl::StartsWith(a, "bounces+066141EB688B7500.3."));
  EXPECT_TRUE(absl::EndsWith(a, ".Jane.Doe+x=Gmail.com@bounces.shop.example"));
  auto m = ParseVerp(o, a);
  ASSERT_TRUE(m.ok()) << m.status();
  ASSERT_TRUE(m->has_value());
  EXPECT_EQ((*m)->id, 0x066141EB688B7500u);
  EXPECT_EQ((*m)->index, 3u);
  EXPECT_EQ((*m)->recipient, "Jane.Doe+x@Gmail.com");
  // Some MTAs lower-case the whole address; the token still holds.
  auto lower = ParseVerp(o, absl::AsciiStrToLower(a));
  ASSERT_TRUE(lower.ok()) << lower.status();
  EXPECT_TRUE(lower->has_value());
}

TEST(Verp, ForgedAndForeign) {
  VerpOptions o = Options();
  std::string a = VerpAddress(o, 42, 0, "victim@example.com");
  // Another address with the same MAC: refused.
  std::string other = absl::StrReplaceAll(a, {{"victim=", "other="}});
  EXPECT_TRUE(absl::IsPermissionDenied(ParseVerp(o, other).status()));
  // Another key: refused.
  VerpOptions k = o;
  k.secret = "another-secret-of-16-bytes";
  EXPECT_TRUE(absl::IsPermissionDenied(ParseVerp(k, a).status()));
  // Not ours: nullopt.
  EXPECT_FALSE(ParseVerp(o, "postmaster@bounces.shop.example")->has_value());
  EXPECT_FALSE(ParseVerp(o, "bounces+x@elsewhere.example")->has_value());
  VerpOptions off = o;
  off.domain = "";
  EXPECT_FALSE(ParseVerp(off, a)->has_value());
  // Ours but malformed.
  for (const char* bad :
       {"bounces+@bounces.shop.example", "bounces+1.2@bounces.shop.example",
        "bounces+zz.0.00.a=b@bounces.shop.example",
        "bounces+1.0.00.nodomain@bounces.shop.example",
        "bounces+1.0.00.=b@bounces.shop.example"}) {
    EXPECT_TRUE(absl::IsInvalidArgument(ParseVerp(o, bad).status())) << bad;
  }
}

class Events : public outcome::Consumer {
 public:
  void OnOutcome(const outcome::Outcome& o) override {
    std::lock_guard<std::mutex> l(mu_);
    seen.push_back(o);
  }
  std::vector<outcome::Outcome> seen;

 private:
  std::mutex mu_;
};

std::string Read(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

class InboxTest : public ::testing::Test {
 protected:
  InboxTest() : list_(&table_) {
    bus_.Attach(&events_);
    InboxOptions o;
    o.verp = Options();
    o.domains = {"fbl.shop.example"};
    o.suppress = {Category::kInvalidRecipient};
    static const std::shared_ptr<const Classifier> rules =
        *Classifier::Create();
    o.classifier = [] { return rules; };
    inbox_ = std::make_unique<BounceInbox>(o, &bus_, &list_);
  }
  bool Suppressed(const std::string& a) {
    return list_.Find(a, "", "", absl::Now())->has_value();
  }

  MemoryTable table_;
  SuppressionList list_;
  outcome::Bus bus_;
  Events events_;
  std::unique_ptr<BounceInbox> inbox_;
};

TEST_F(InboxTest, MatchedFailureSuppressesTheTokensRecipient) {
  std::string to = VerpAddress(Options(), 7, 0, "jane.doe@gmail.com");
  InboxResult r = inbox_->Process(
      Read("tests/mta/bounce/testdata/bounces/gmail.eml"), {to}, "192.0.2.9");
  EXPECT_TRUE(r.matched);
  EXPECT_EQ(r.match.id, 7u);
  EXPECT_EQ(r.suppressed, 1);
  EXPECT_TRUE(Suppressed("jane.doe@gmail.com"));
  ASSERT_FALSE(events_.seen.empty());
  EXPECT_EQ(events_.seen[0].kind, outcome::Kind::kAsyncBounce);
  EXPECT_EQ(events_.seen[0].id, 7u);
  EXPECT_EQ(events_.seen[0].category, Category::kInvalidRecipient);
  EXPECT_TRUE(inbox_->IsBounceDomain("BOUNCES.shop.example"));
  EXPECT_TRUE(inbox_->IsBounceDomain("fbl.shop.example"));
  EXPECT_FALSE(inbox_->IsBounceDomain("shop.example"));
}

TEST_F(InboxTest, ForgedOrMissingTokenChangesNothing) {
  std::string bounce = Read("tests/mta/bounce/testdata/bounces/gmail.eml");
  // The file's own token was made with another key: forged here.
  InboxResult forged = inbox_->Process(bounce, {}, "192.0.2.9");
  EXPECT_FALSE(forged.matched);
  EXPECT_FALSE(forged.verp_error.empty());
  InboxResult none =
      inbox_->Process(Read("tests/mta/bounce/testdata/bounces/qmail.eml"),
                      {"postmaster@fbl.shop.example"}, "192.0.2.9");
  EXPECT_FALSE(none.matched);
  EXPECT_TRUE(table_.size() == 0);
  for (const outcome::Outcome& o : events_.seen) {
    EXPECT_NE(o.kind, outcome::Kind::kSuppressed);
  }
}

TEST_F(InboxTest, ComplaintThroughTheReturnPathSuppresses) {
  std::string arf = Read("tests/mta/bounce/testdata/bounces/arf.eml");
  std::string token = VerpAddress(Options(), 9, 3, "hank@hotmail.example");
  arf = absl::StrReplaceAll(
      arf, {{"bounces+066141EB688B7500.3.0011223344556677.hank=hotmail.example@"
             "bounces.shop.example",
             token}});
  InboxResult r = inbox_->Process(arf, {"fbl@fbl.shop.example"}, "192.0.2.9");
  EXPECT_EQ(r.report.kind, Report::Kind::kFeedback);
  EXPECT_TRUE(r.matched);
  EXPECT_TRUE(Suppressed("hank@hotmail.example"));
  ASSERT_FALSE(events_.seen.empty());
  EXPECT_EQ(events_.seen[0].kind, outcome::Kind::kComplaint);
}

TEST_F(InboxTest, SubmitAnswersAndRefusesPastItsBound) {
  std::atomic<int> answered{0};
  for (int i = 0; i < 10; ++i) {
    inbox_->Submit("Subject: x\n\nnothing\n", {"a@fbl.shop.example"}, "c",
                   [&](absl::Status s, std::string) {
                     EXPECT_TRUE(s.ok());
                     ++answered;
                   });
  }
  inbox_->Stop();
  EXPECT_EQ(answered.load(), 10);
  absl::Status late;
  inbox_->Submit("x", {}, "c", [&](absl::Status s, std::string) { late = s; });
  EXPECT_TRUE(absl::IsUnavailable(late));
}

}  // namespace
}  // namespace peregrine::bounce
