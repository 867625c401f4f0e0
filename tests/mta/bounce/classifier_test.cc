// The shipped rules against replies shaped like the ones the large
// providers, filters and MTAs send, and Peregrine's own; and rule files
// from operators.
#include "mta/bounce/classifier.h"

#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace peregrine::bounce {
namespace {

struct Case {
  const char* line;
  Category expected;
};

using C = Category;

const Case kCases[] = {
    // Gmail
    {"550 5.1.1 The email account that you tried to reach does not exist. "
     "Please try double-checking the recipient's email address",
     C::kInvalidRecipient},
    {"552 5.2.2 The email account that you tried to reach is over quota and "
     "inactive",
     C::kMailboxFull},
    {"550 5.2.1 The email account that you tried to reach is disabled",
     C::kInactiveMailbox},
    {"552 5.3.4 Your message exceeded Google's message size limits",
     C::kMessageTooLarge},
    {"550 5.7.26 This message does not pass authentication checks (SPF and "
     "DKIM both do not pass)",
     C::kAuthFailure},
    {"550 5.7.1 Our system has detected that this message is likely "
     "unsolicited mail",
     C::kSpamBlock},
    {"421 4.7.0 [203.0.113.9] Our system has detected an unusual rate of "
     "unsolicited mail originating from your IP address",
     C::kIpReputation},
    {"450 4.2.1 The user you are trying to contact is receiving mail at a "
     "rate that prevents additional messages from being delivered",
     C::kRateLimited},
    {"550 5.7.25 The IP address sending this message does not have a PTR "
     "record setup",
     C::kAuthFailure},
    {"421 4.7.28 Gmail has detected an unusual rate of mail originating "
     "from your DKIM domain",
     C::kRateLimited},
    {"550 5.7.1 Messages missing a valid Message-ID header are not accepted",
     C::kPolicy},
    {"552 5.7.0 This message was blocked because its content presents a "
     "potential security issue",
     C::kContentRejected},
    // Outlook / Office 365
    {"550 5.5.0 Requested action not taken: mailbox unavailable",
     C::kInvalidRecipient},
    {"550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP "
     "address lookup",
     C::kInvalidRecipient},
    {"550 5.7.1 Unfortunately, messages from [203.0.113.9] weren't sent. "
     "Please contact your Internet service provider since part of their "
     "network is on our block list (S3150)",
     C::kIpReputation},
    {"451 4.7.500 Server busy. Please try again later from [203.0.113.9]. "
     "(S77719)",
     C::kRateLimited},
    {"550 5.7.606 Access denied, banned sending IP [203.0.113.9]",
     C::kIpReputation},
    {"550 5.4.1 Recipient address rejected: Access denied. AS(201806281)",
     C::kInvalidRecipient},
    {"550 5.7.509 Access denied, sending domain example.com does not pass "
     "DMARC verification and has a DMARC policy of reject",
     C::kAuthFailure},
    {"552 5.2.2 STOREDRV.Deliver; mailbox full", C::kMailboxFull},
    {"550 5.7.708 Service unavailable. Access denied, traffic not accepted "
     "from this IP",
     C::kIpReputation},
    // Yahoo / AOL
    {"554 delivery error: dd This user doesn't have a yahoo.com account "
     "(someone@yahoo.com) [0] - mta1234.mail.bf1.yahoo.com",
     C::kInvalidRecipient},
    {"421 4.7.0 [TSS04] Messages from 203.0.113.9 temporarily deferred due "
     "to unexpected volume or user complaints",
     C::kRateLimited},
    {"553 5.7.1 [BL21] Connections will not be accepted from 203.0.113.9, "
     "because the ip is in Spamhaus's list",
     C::kIpReputation},
    {"554 5.7.9 Message not accepted for policy reasons", C::kPolicy},
    {"550 5.7.9 This mail has been blocked because the sender is "
     "unauthenticated. Yahoo requires all senders to authenticate with "
     "either SPF or DKIM",
     C::kAuthFailure},
    {"552 1 Requested mail action aborted, mailbox not found",
     C::kInvalidRecipient},
    {"554 30 Sorry, your message size exceeds 41943040 bytes",
     C::kMessageTooLarge},
    {"451 Message temporarily deferred - [160]", C::kRateLimited},
    {"554 5.7.9 Message not accepted for spam content", C::kSpamBlock},
    // Apple iCloud
    {"550 5.1.1 <someone@icloud.com>: user does not exist",
     C::kInvalidRecipient},
    {"552 5.2.2 <someone@icloud.com>: user is over quota", C::kMailboxFull},
    {"554 5.7.1 [CS01] Message rejected due to local policy", C::kPolicy},
    {"550 5.7.0 Blocked - see https://support.apple.com/en-us/HT204137",
     C::kIpReputation},
    // GMX / web.de
    {"550 Requested action not taken: mailbox unavailable",
     C::kInvalidRecipient},
    {"554-Transaction failed Reject due to policy restrictions", C::kPolicy},
    {"452 4.2.2 Mailbox full", C::kMailboxFull},
    {"550 5.7.1 IP address blacklisted", C::kIpReputation},
    // Mail.ru
    {"550 Message was not accepted -- invalid mailbox. Local mailbox "
     "someone@mail.ru is unavailable: account is disabled",
     C::kInactiveMailbox},
    {"550 spam message rejected. Please visit http://help.mail.ru/notspam",
     C::kSpamBlock},
    {"421 Try again later", C::kRateLimited},
    {"550 Message was not accepted -- invalid mailbox. Local mailbox "
     "someone@mail.ru is unavailable: user not found",
     C::kInvalidRecipient},
    // Yandex
    {"550 5.7.1 No such user!", C::kInvalidRecipient},
    {"554 5.7.1 [2] Message rejected under suspicion of SPAM", C::kSpamBlock},
    {"452 4.2.2 Mailbox size limit exceeded", C::kMailboxFull},
    {"451 4.7.1 Sorry, the service is currently unavailable. Please come "
     "back later.",
     C::kRateLimited},
    // QQ
    {"550 Mailbox not found or access denied", C::kInvalidRecipient},
    {"550 Ip frequency limited", C::kRateLimited},
    {"550 Connection frequency limited", C::kRateLimited},
    {"554 DT:SPM 203.0.113.9", C::kSpamBlock},
    {"550 Mail content denied", C::kContentRejected},
    // Proofpoint, Mimecast, Barracuda, Cloudmark
    {"554 5.7.1 Service unavailable; Client host [203.0.113.9] blocked using "
     "Proofpoint Dynamic Reputation",
     C::kIpReputation},
    {"550 5.7.1 Message blocked due to spam content in the message",
     C::kSpamBlock},
    {"550 Invalid Recipient - https://community.mimecast.com/docs/DOC-1369",
     C::kInvalidRecipient},
    {"554 Email rejected due to security policies", C::kPolicy},
    {"550 Administrative prohibition - envelope blocked", C::kPolicy},
    {"554 Service unavailable; Client host [203.0.113.9] blocked using "
     "Barracuda Reputation",
     C::kIpReputation},
    {"550 No such user (someone@example.com)", C::kInvalidRecipient},
    {"550 5.7.0 Local Policy Violation", C::kSpamBlock},
    {"554 5.7.1 Message rejected by Cloudmark Sender Intelligence",
     C::kIpReputation},
    // Blocklists named by the receiver
    {"554 5.7.1 Service unavailable; Client host [203.0.113.9] blocked using "
     "zen.spamhaus.org",
     C::kIpReputation},
    {"550 5.7.1 Blocked - see https://www.spamcop.net/bl.shtml?203.0.113.9",
     C::kIpReputation},
    // Postfix, Exim, Sendmail, Exchange on premises
    {"550 5.1.1 <a@example.com>: Recipient address rejected: User unknown in "
     "virtual mailbox table",
     C::kInvalidRecipient},
    {"550 5.1.1 <a@example.com>: Recipient address rejected: User unknown in "
     "local recipient table",
     C::kInvalidRecipient},
    {"554 5.7.1 <a@other.example>: Relay access denied", C::kPolicy},
    {"450 4.1.8 <x@nodomain.example>: Sender address rejected: Domain not "
     "found",
     C::kBadDomain},
    {"550 Unrouteable address", C::kBadDomain},
    {"550 5.1.2 Host unknown (Name server: nosuch.example: host not found)",
     C::kBadDomain},
    {"552 5.2.2 Over quota", C::kMailboxFull},
    {"550 5.2.1 Mailbox disabled for this recipient", C::kInactiveMailbox},
    {"550 5.7.1 Message rejected: virus found in attachment",
     C::kContentRejected},
    {"552 5.3.4 Message size exceeds fixed maximum message size",
     C::kMessageTooLarge},
    {"530 5.7.0 Must issue a STARTTLS command first", C::kTlsRequired},
    {"451 4.7.1 Greylisting in action, please come back later",
     C::kRateLimited},
    {"550 5.7.1 Client host rejected: cannot find your reverse hostname",
     C::kPolicy},
    {"550 5.1.6 Recipient no longer with the company", C::kInvalidRecipient},
    {"554 5.6.0 Message contains invalid header", C::kContentRejected},
    {"452 4.5.3 Too many recipients", C::kRateLimited},
    {"550 5.7.1 Sender address rejected: not owned by user", C::kPolicy},
    {"550 This account has been suspended", C::kInactiveMailbox},
    {"421 4.3.2 Service not available, closing transmission channel",
     C::kRateLimited},
    {"554 5.7.1 Rejected: SPF fail", C::kAuthFailure},
    {"550 5.7.1 Email rejected per DMARC policy for example.com",
     C::kAuthFailure},
    {"451 4.7.5 TLS required but not offered", C::kTlsRequired},
    // Peregrine's own replies
    {"556 5.1.10 example.com accepts no mail (null MX)", C::kBadDomain},
    {"550 5.1.2 nosuch.example: no such domain (NXDOMAIN)", C::kBadDomain},
    {"451 4.4.3 MX look-up for example.com failed: SERVFAIL", C::kDnsFailure},
    {"451 4.4.1 mx.example.com[192.0.2.1]:25: connect: Connection refused",
     C::kConnection},
    {"451 4.4.2 timed out waiting for mx.example.com[192.0.2.1]:25",
     C::kConnection},
    {"451 4.4.2 mx.example.com[192.0.2.1]:25 closed the connection",
     C::kConnection},
    {"553 5.1.3 the address has no domain", C::kInvalidRecipient},
    {"451 4.7.5 mx.example.com[192.0.2.1]:25: TLS handshake failed",
     C::kTlsRequired},
    {"554 5.3.0 queued message damaged: checksum mismatch", C::kUnknown},
};

TEST(Classifier, ShippedRulesKnowTheCommonReplies) {
  auto c = Classifier::Create();
  ASSERT_TRUE(c.ok()) << c.status();
  int wrong = 0;
  for (const Case& k : kCases) {
    Reply reply = Reply::Parse(k.line);
    Verdict v = (*c)->Classify(reply);
    EXPECT_EQ(std::string(CategoryName(v.category)),
              std::string(CategoryName(k.expected)))
        << k.line << "\n  matched " << v.rule << " '" << v.pattern << "'";
    wrong += v.category != k.expected;
  }
  EXPECT_GE(sizeof(kCases) / sizeof(kCases[0]), 80u);
  EXPECT_EQ(wrong, 0);
}

TEST(Classifier, AnOperatorsRulesComeFirst) {
  auto c = Classifier::FromText(
      "[[rule]]\ncategory = \"rate_limited\"\n"
      "patterns = ['mailbox unavailable']\n",
      "mine.toml", true);
  ASSERT_TRUE(c.ok()) << c.status();
  Verdict v = (*c)->Classify(
      Reply::Parse("550 Requested action not taken: mailbox unavailable"));
  EXPECT_EQ(v.category, Category::kRateLimited);
  EXPECT_EQ(v.rule, "mine.toml:3");
  EXPECT_EQ(v.pattern, "mailbox unavailable");
  // The defaults still follow.
  EXPECT_EQ((*c)->Classify(Reply::Parse("552 5.2.2 Over quota")).category,
            Category::kMailboxFull);
}

TEST(Classifier, NothingMatchesIsUnknown) {
  auto c = Classifier::FromText("", "none", false);
  ASSERT_TRUE(c.ok());
  Verdict v = (*c)->Classify(Reply{550, "5.1.1", "no such user"});
  EXPECT_EQ(v.category, Category::kUnknown);
  EXPECT_EQ(v.rule, "");
}

TEST(Classifier, BadRuleFilesAreNamedAtTheLine) {
  struct Bad {
    const char* text;
    const char* says;
  } bad[] = {
      {"[[rule]]\ncategory = \"nonsense\"\npatterns = ['x']\n",
       "bad.toml:1: unknown category 'nonsense'"},
      {"[[rule]]\ncategory = \"policy\"\npatterns = ['(']\n",
       "is not a valid RE2 expression"},
      {"[[rule]]\ncategory = \"policy\"\n", "needs patterns"},
      {"[[rule]]\npatterns = ['x']\n", "needs category"},
      {"[[rule]]\ncategory = \"policy\"\npatterns = ['x']\nweight = 2\n",
       "unknown key 'weight'"},
      {"[rules]\n", "unknown key 'rules'"},
      {"[[rule]\n", "TOML syntax error"},
  };
  for (const Bad& b : bad) {
    auto c = Classifier::FromText(b.text, "bad.toml", false);
    ASSERT_FALSE(c.ok()) << b.text;
    EXPECT_NE(c.status().message().find(b.says), std::string::npos)
        << c.status().message();
  }
  auto missing = Classifier::Create("/nonexistent/rules.toml");
  EXPECT_FALSE(missing.ok());
}

TEST(Classifier, CategoryNamesRoundTrip) {
  for (Category c : AllCategories()) {
    EXPECT_EQ(ParseCategory(CategoryName(c)), c);
  }
  EXPECT_EQ(AllCategories().size(), 16u);
  EXPECT_FALSE(ParseCategory("spam").has_value());
}

}  // namespace
}  // namespace peregrine::bounce
