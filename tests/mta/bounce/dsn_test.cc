// DSNs as Peregrine writes them: golden files for a failure (RET=FULL and
// RET=HDRS), an expiry and a delay, and the rules of what goes in them.
// PEREGRINE_UPDATE_GOLDEN=1 rewrites the golden files (review the diff).
#include "mta/bounce/dsn.h"

#include <cstdlib>
#include <fstream>
#include <sstream>

#include "gtest/gtest.h"

namespace peregrine::bounce {
namespace {

const char kOriginal[] =
    "Received: from app.example.com by mx.peregrine.test\r\n"
    "From: Billing <billing@shop.example>\r\n"
    "To: <alice@dest.example>\r\n"
    "Subject: Your invoice 42\r\n"
    "Message-ID: <invoice-42@shop.example>\r\n"
    "\r\n"
    "Hello Alice,\r\n"
    "--=_3.abc/mx.peregrine.test\r\n"
    "your invoice is attached.\r\n";

absl::Time At(int64_t seconds) { return absl::FromUnixSeconds(seconds); }

DsnInput Base() {
  DsnInput in;
  in.reporting_mta = "mx.peregrine.test";
  in.sender = "billing@shop.example";
  in.envid = "QQ314159+2Bx";
  in.arrival = At(1795000000);
  in.now = At(1795000600);
  in.message_id = "<dsn.0000000000000001.abc@mx.peregrine.test>";
  in.boundary = "=_0000000000000001.abc/mx.peregrine.test";
  in.original = kOriginal;
  return in;
}

DsnRecipient Unknown() {
  DsnRecipient r;
  r.address = "alice@dest.example";
  r.orcpt = "rfc822;Alice+2BBills@dest.example";
  r.reply = Reply{550, "5.1.1",
                  "<alice@dest.example>: Recipient address rejected: User "
                  "unknown in virtual mailbox table"};
  r.remote = true;
  r.remote_mta = "mx1.dest.example";
  r.category = Category::kInvalidRecipient;
  r.last_attempt = At(1795000590);
  return r;
}

void Golden(const std::string& name, const std::string& text) {
  std::string path = "tests/mta/bounce/testdata/" + name;
  if (std::getenv("PEREGRINE_UPDATE_GOLDEN") != nullptr) {
    const char* ws = std::getenv("BUILD_WORKSPACE_DIRECTORY");
    std::ofstream((ws ? std::string(ws) + "/" : std::string()) + path,
                  std::ios::binary)
        << text;
    return;
  }
  std::ifstream f(path, std::ios::binary);
  ASSERT_TRUE(f) << path;
  std::stringstream want;
  want << f.rdbuf();
  EXPECT_EQ(text, want.str()) << "differs from " << path;
}

TEST(Dsn, FailureReturnsTheWholeMessage) {
  DsnInput in = Base();
  in.ret = queue::DsnRet::kFull;
  DsnRecipient second = Unknown();
  second.address = "bob@dest.example";
  second.orcpt = "";
  second.reply = Reply{552, "5.2.2", "mailbox full"};
  second.category = Category::kMailboxFull;
  in.recipients = {Unknown(), second};
  Golden("failure_full.eml", BuildDsn(in));
}

TEST(Dsn, FailureWithRetHdrsReturnsHeaders) {
  DsnInput in = Base();
  in.ret = queue::DsnRet::kHeaders;
  in.recipients = {Unknown()};
  std::string dsn = BuildDsn(in);
  Golden("failure_hdrs.eml", dsn);
  EXPECT_EQ(dsn.find("your invoice is attached"), std::string::npos);
  EXPECT_NE(dsn.find("Content-Type: text/rfc822-headers"), std::string::npos);
}

TEST(Dsn, ExpiryWithPeregrinesOwnReason) {
  DsnInput in = Base();
  DsnRecipient r;
  r.address = "carol@slow.example";
  r.reply = Reply{451, "4.4.1", "connection to mx.slow.example timed out"};
  r.category = Category::kExpired;
  r.reason = "expired after 12 attempts over 5d";
  r.last_attempt = At(1795000590);
  in.recipients = {r};
  std::string dsn = BuildDsn(in);
  Golden("expiry.eml", dsn);
  // An expiry is a failure, reported with the transient code it died of.
  EXPECT_NE(dsn.find("Action: failed\r\nStatus: 4.4.1\r\n"), std::string::npos);
  EXPECT_EQ(dsn.find("Remote-MTA"), std::string::npos);
}

TEST(Dsn, DelayReturnsHeadersAndSaysWhenItGivesUp) {
  DsnInput in = Base();
  in.ret = queue::DsnRet::kFull;  // Still headers: the message is not lost.
  DsnRecipient r = Unknown();
  r.action = DsnAction::kDelayed;
  r.reply = Reply{451, "4.7.1", "greylisted, try again later"};
  r.category = Category::kPolicy;
  r.retry_until = At(1795432000);
  in.recipients = {r};
  std::string dsn = BuildDsn(in);
  Golden("delay.eml", dsn);
  EXPECT_NE(dsn.find("Subject: Delayed Mail"), std::string::npos);
  EXPECT_NE(dsn.find("Will-Retry-Until: "), std::string::npos);
  EXPECT_EQ(dsn.find("your invoice is attached"), std::string::npos);
}

TEST(Dsn, LargeMessagesReturnOnlyHeaders) {
  DsnInput in = Base();
  in.ret = queue::DsnRet::kFull;
  in.original += std::string(100000, 'x') + "\r\n";
  in.recipients = {Unknown()};
  std::string dsn = BuildDsn(in);
  EXPECT_LT(dsn.size(), 5000u);
  EXPECT_NE(dsn.find("text/rfc822-headers"), std::string::npos);
}

TEST(Dsn, HostileFieldsStayOnTheirLine) {
  DsnInput in = Base();
  in.sender = "a@b.example>\r\nBcc: victim@x.example";
  DsnRecipient r = Unknown();
  r.reply.text = "no\r\nX-Injected: yes";
  r.remote_mta = "mx\r\nX-Evil: 1";
  in.recipients = {r};
  std::string dsn = BuildDsn(in);
  EXPECT_EQ(dsn.find("\r\nBcc:"), std::string::npos);
  EXPECT_EQ(dsn.find("\r\nX-Injected"), std::string::npos);
  EXPECT_EQ(dsn.find("\r\nX-Evil"), std::string::npos);
}

TEST(Dsn, StatusComesFromTheReplyOrTheCategory) {
  EXPECT_EQ(DsnStatus(Reply{550, "5.1.1", "x"}, Category::kUnknown,
                      DsnAction::kFailed),
            "5.1.1");
  EXPECT_EQ(DsnStatus(Reply{550, "", "no such user"},
                      Category::kInvalidRecipient, DsnAction::kFailed),
            "5.1.1");
  EXPECT_EQ(DsnStatus(Reply{552, "", "too big"}, Category::kMessageTooLarge,
                      DsnAction::kFailed),
            "5.3.4");
  EXPECT_EQ(DsnStatus(Reply{451, "", "later"}, Category::kExpired,
                      DsnAction::kFailed),
            "4.4.7");
  EXPECT_EQ(DsnStatus(Reply{421, "", "busy"}, Category::kRateLimited,
                      DsnAction::kDelayed),
            "4.0.0");
}

TEST(Dsn, Xtext) {
  EXPECT_EQ(DecodeXtext("a+2Bb+3Dc"), "a+b=c");
  EXPECT_EQ(DecodeXtext("plain"), "plain");
  EXPECT_EQ(DecodeXtext("bad+zz+"), "bad+zz+");
  EXPECT_EQ(DecodeXtext("+4"), "+4");
}

TEST(Dsn, HeaderSection) {
  EXPECT_EQ(HeaderSection("A: 1\r\nB: 2\r\n\r\nbody"), "A: 1\r\nB: 2\r\n");
  EXPECT_EQ(HeaderSection("A: 1\n\nbody"), "A: 1\n");
  EXPECT_EQ(HeaderSection("A: 1\r\n"), "A: 1\r\n");
}

}  // namespace
}  // namespace peregrine::bounce
