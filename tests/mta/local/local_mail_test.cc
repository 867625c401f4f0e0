// Own domains at reception (mta/local/local_mail.h): which recipients are
// taken, what a message for them becomes, and the aliases read again.
#include "mta/local/local_mail.h"

#include <unistd.h>

#include <cstdlib>
#include <fstream>

#include "absl/strings/match.h"
#include "gtest/gtest.h"

namespace peregrine::local {
namespace {

const absl::Time kNow = absl::FromUnixSeconds(1795780800);

class LocalMailTest : public testing::Test {
 protected:
  void SetUp() override {
    dir_ = testing::TempDir() + "/aliases-" + std::to_string(getpid());
    std::system(("rm -rf " + dir_ + " && mkdir -p " + dir_).c_str());
    Write("own.test", "alice: alice@gmail.example\n*: me@personal.example\n");
    LocalOptions o;
    o.domains = {"own.test", "two.test"};
    o.aliases_dir = dir_;
    o.srs_options.domain = "own.test";
    o.srs_options.secret = "0123456789abcdef0123456789abcdef";
    srs_ = o.srs_options;
    local_ = std::make_unique<LocalMail>(o);
    ASSERT_TRUE(local_->Load().ok());
  }
  void Write(const std::string& name, const std::string& text) {
    std::ofstream(dir_ + "/" + name) << text;
  }
  std::string dir_;
  SrsOptions srs_;
  std::unique_ptr<LocalMail> local_;
};

TEST_F(LocalMailTest, RecipientsOfLocalDomainsNeedAnAlias) {
  EXPECT_TRUE(local_->Accepts("OWN.test"));
  EXPECT_FALSE(local_->Accepts("else.test"));
  EXPECT_EQ(local_->CheckRecipient("anyone@own.test"), "");  // Catch-all.
  // two.test has no file yet: every user is unknown.
  EXPECT_EQ(local_->CheckRecipient("bob@two.test"),
            "550 5.1.1 <bob@two.test>: Recipient address rejected: User "
            "unknown");
  EXPECT_EQ(local_->CheckRecipient("x@else.test"), "");  // Not ours to say.
}

TEST_F(LocalMailTest, ForwardedMailGetsTargetsOrcptAndAnSrsSender) {
  Rewritten r = local_->Rewrite(
      "carol@sender.example",
      {{"alice+x@own.test", "", 4}, {"other@else.test", "", 0}}, kNow);
  ASSERT_EQ(r.recipients.size(), 2u);
  EXPECT_EQ(r.recipients[0].address, "alice@gmail.example");
  EXPECT_EQ(r.recipients[0].orcpt, "rfc822;alice+2Bx@own.test");
  EXPECT_EQ(r.recipients[0].notify, 4);
  EXPECT_EQ(r.recipients[1].address, "other@else.test");
  EXPECT_EQ(r.forwarded_for, "own.test");
  EXPECT_TRUE(absl::StartsWith(r.sender, "SRS0=")) << r.sender;
  EXPECT_TRUE(absl::EndsWith(r.sender, "=sender.example=carol@own.test"));
  // A bounce of it comes back to the SRS address and goes to carol.
  EXPECT_EQ(local_->CheckRecipient(r.sender), "");
  Rewritten back = local_->Rewrite("", {{r.sender, "", 0}}, kNow);
  ASSERT_EQ(back.recipients.size(), 1u);
  EXPECT_EQ(back.recipients[0].address, "carol@sender.example");
  EXPECT_EQ(back.sender, "");
  EXPECT_TRUE(back.forwarded_for.empty());
  // A forged one is refused at RCPT.
  std::string forged = "SRS0=zzzz=JQ=sender.example=carol@own.test";
  EXPECT_TRUE(absl::StartsWith(local_->CheckRecipient(forged), "550 5.1.1"));
}

TEST_F(LocalMailTest, NoSrsForOwnSendersBouncesOrMailNotForwarded) {
  EXPECT_EQ(
      local_->Rewrite("app@own.test", {{"a@own.test", "", 0}}, kNow).sender,
      "app@own.test");
  EXPECT_EQ(local_->Rewrite("", {{"a@own.test", "", 0}}, kNow).sender, "");
  Rewritten plain =
      local_->Rewrite("c@sender.example", {{"x@else.test", "", 0}}, kNow);
  EXPECT_EQ(plain.sender, "c@sender.example");
  EXPECT_TRUE(plain.forwarded_for.empty());
}

TEST_F(LocalMailTest, ChangedFilesAreReadAgainAndBrokenOnesKeepTheLast) {
  Write("two.test", "bob: bob@out.example\n");
  sleep(1);  // Past the once-a-second look.
  sleep(1);
  EXPECT_EQ(local_->CheckRecipient("bob@two.test"), "");
  Write("two.test", "bob: | /bin/sh\n");
  sleep(2);
  EXPECT_EQ(local_->CheckRecipient("bob@two.test"), "");  // The last good.
  Write("two.test", "bob: carl\n");  // carl@two.test has no alias.
  sleep(2);
  EXPECT_TRUE(
      absl::StartsWith(local_->CheckRecipient("bob@two.test"), "451 4.3.0"));
  // Accepted at RCPT, gone by the end of DATA: dropped, not sent anywhere.
  EXPECT_TRUE(local_->Rewrite("c@x.example", {{"bob@two.test", "", 0}}, kNow)
                  .recipients.empty());
}

TEST(LoadAliases, ABadFileStopsTheStartWithItsLine) {
  std::string dir = testing::TempDir() + "/bad-aliases";
  std::system(("rm -rf " + dir + " && mkdir -p " + dir).c_str());
  std::ofstream(dir + "/own.test") << "ok: a@b.example\nbad line\n";
  auto t = LoadAliases({"own.test"}, dir);
  ASSERT_FALSE(t.ok());
  EXPECT_TRUE(absl::StrContains(t.status().message(), "/own.test:2:"))
      << t.status();
}

}  // namespace
}  // namespace peregrine::local
