// Bounces and complaints as they come back: DSNs from several MTAs and
// providers, plain-text bounces (qmail, Exim, Yahoo), an ARF complaint, our
// own DSNs read back (the round trip), and malformed or hostile input
// (truncated MIME, wrong boundaries, CR-only lines, deep nesting, 20 MB).
#include "mta/bounce/report.h"

#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "gtest/gtest.h"

namespace peregrine::bounce {
namespace {

std::string Read(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

const Classifier* Rules() {
  static const std::shared_ptr<const Classifier> rules = *Classifier::Create();
  return rules.get();
}

struct Case {
  const char* file;
  Report::Kind kind;
  const char* recipient;
  const char* action;
  const char* status;
  Category category;
};

class Shapes : public ::testing::TestWithParam<Case> {};

TEST_P(Shapes, NamesTheRecipientStatusAndCategory) {
  const Case& c = GetParam();
  std::string raw =
      Read(absl::StrCat("tests/mta/bounce/testdata/bounces/", c.file));
  ASSERT_FALSE(raw.empty()) << c.file;
  // As stored (LF), and with CRLF and CR line ends.
  for (const std::string& form :
       {raw, absl::StrReplaceAll(raw, {{"\n", "\r\n"}}),
        absl::StrReplaceAll(raw, {{"\n", "\r"}})}) {
    Report r = ParseReport(form, Rules());
    EXPECT_EQ(r.kind, c.kind) << c.file << ": " << r.error;
    ASSERT_EQ(r.recipients.size(), 1u) << c.file << ": " << r.error;
    const ReportedRecipient& p = r.recipients[0];
    EXPECT_EQ(p.recipient, c.recipient) << c.file;
    EXPECT_EQ(p.action, c.action) << c.file;
    EXPECT_EQ(p.status, c.status) << c.file;
    if (c.kind != Report::Kind::kFeedback) {
      EXPECT_EQ(p.category, c.category)
          << c.file << ": " << CategoryName(p.category) << " by " << p.rule
          << " for " << p.reply.ToString();
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    Bounces, Shapes,
    ::testing::Values(
        Case{"gmail.eml", Report::Kind::kDsn, "jane.doe@gmail.com", "failed",
             "5.1.1", Category::kInvalidRecipient},
        Case{"office365.eml", Report::Kind::kDsn, "bob@contoso.example",
             "failed", "5.1.10", Category::kInvalidRecipient},
        Case{"yahoo.eml", Report::Kind::kPlainBounce, "old.friend@yahoo.com",
             "failed", "5.0.0", Category::kInvalidRecipient},
        Case{"exim_plain.eml", Report::Kind::kPlainBounce, "carol@example.org",
             "failed", "5.1.1", Category::kInvalidRecipient},
        Case{"exim_report.eml", Report::Kind::kDsn, "dave@example.net",
             "failed", "5.2.2", Category::kMailboxFull},
        Case{"qmail.eml", Report::Kind::kPlainBounce, "erin@qmail.example",
             "failed", "5.1.1", Category::kInvalidRecipient},
        Case{"sendmail.eml", Report::Kind::kDsn, "frank@sendmail.example",
             "failed", "5.7.1", Category::kSpamBlock},
        Case{"mailru_delay.eml", Report::Kind::kDsn, "grisha@mail.ru",
             "delayed", "4.2.2", Category::kMailboxFull},
        Case{"arf.eml", Report::Kind::kFeedback, "hank@hotmail.example",
             "complained", "", Category::kUnknown},
        // No SMTP reply at all, or one away from the address.
        Case{"exchange2003.eml", Report::Kind::kPlainBounce,
             "ivan@corp.example", "failed", "5.0.0",
             Category::kInvalidRecipient},
        Case{"domino.eml", Report::Kind::kPlainBounce, "judy@lotus.example",
             "failed", "5.0.0", Category::kInvalidRecipient},
        Case{"oneandone.eml", Report::Kind::kPlainBounce, "kai@webhost.example",
             "failed", "5.0.0", Category::kMessageTooLarge},
        Case{"gmx.eml", Report::Kind::kPlainBounce, "lena@provider.example",
             "failed", "5.1.1", Category::kInvalidRecipient},
        Case{"imail.eml", Report::Kind::kPlainBounce, "mike@imail.example",
             "failed", "5.0.0", Category::kInvalidRecipient},
        // ISO-2022-JP words, the reason before the address.
        Case{"carrier_jp.eml", Report::Kind::kPlainBounce,
             "nobody-here@carrier.example", "failed", "5.0.0",
             Category::kInactiveMailbox},
        // A multipart whose inner boundary is on a line of its own.
        Case{"james.eml", Report::Kind::kPlainBounce,
             "5551234567@sms.carrier.example", "failed", "5.0.0",
             Category::kInvalidRecipient}));

TEST(Report, ReturnedMessageAndTokensAreFound) {
  Report r =
      ParseReport(Read("tests/mta/bounce/testdata/bounces/gmail.eml"), Rules());
  EXPECT_EQ(r.original_message_id, "invoice-42@shop.example");
  EXPECT_EQ(r.reporting_mta, "googlemail.com");
  EXPECT_EQ(r.recipients[0].reply.code, 550);
  EXPECT_EQ(r.recipients[0].reply.enhanced, "5.1.1");
  EXPECT_EQ(r.recipients[0].reply.text.find("550"), std::string::npos)
      << "continuation codes are folded away: " << r.recipients[0].reply.text;
  bool token = false;
  for (const std::string& c : r.candidates) {
    token = token || c.rfind("bounces+066141EB688B7500.0.", 0) == 0;
  }
  EXPECT_TRUE(token);

  Report arf =
      ParseReport(Read("tests/mta/bounce/testdata/bounces/arf.eml"), Rules());
  EXPECT_EQ(arf.feedback_type, "abuse");
  EXPECT_EQ(arf.original_message_id, "sale-9@shop.example");
  bool from = false;
  for (const std::string& c : arf.candidates) {
    from = from || c.find(".hank=hotmail.example@") != std::string::npos;
  }
  EXPECT_TRUE(from);
}

TEST(Report, OurOwnDsnsReadBack) {
  for (const char* name :
       {"failure_full.eml", "failure_hdrs.eml", "expiry.eml", "delay.eml"}) {
    Report r = ParseReport(
        Read(absl::StrCat("tests/mta/bounce/testdata/", name)), Rules());
    EXPECT_EQ(r.kind, Report::Kind::kDsn) << name;
    ASSERT_FALSE(r.recipients.empty()) << name;
    EXPECT_EQ(r.reporting_mta, "mx.peregrine.test");
    EXPECT_EQ(r.original_message_id, "invoice-42@shop.example") << name;
  }
  Report full =
      ParseReport(Read("tests/mta/bounce/testdata/failure_full.eml"), Rules());
  ASSERT_EQ(full.recipients.size(), 2u);
  EXPECT_EQ(full.recipients[0].recipient, "alice@dest.example");
  EXPECT_EQ(full.recipients[0].original_recipient, "Alice+Bills@dest.example");
  EXPECT_EQ(full.recipients[0].status, "5.1.1");
  EXPECT_EQ(full.recipients[0].category, Category::kInvalidRecipient);
  EXPECT_EQ(full.recipients[1].status, "5.2.2");
  EXPECT_EQ(full.recipients[1].category, Category::kMailboxFull);
}

TEST(Report, MalformedInputIsReadWithoutHarm) {
  std::string dsn = Read("tests/mta/bounce/testdata/failure_full.eml");
  std::vector<std::string> hostile = {
      "",
      "\n\n\n",
      std::string(1000, '\0'),
      "Content-Type: multipart/report; boundary=\"x\"\r\n\r\n--x\r\n",
      // Truncated in the middle of the report part.
      dsn.substr(0, dsn.find("Action: failed") + 5),
      // The boundary the parts use is not the one declared.
      absl::StrReplaceAll(dsn, {{"boundary=\"=_", "boundary=\"=_other"}}),
      "Subject: x\n\nno bounce here, 550 but no address\n",
  };
  // Nested multiparts, deeper than any real mail.
  std::string nested = "Content-Type: multipart/mixed; boundary=\"b0\"\n\n";
  for (int i = 0; i < 2000; ++i) {
    absl::StrAppend(&nested, "--b", i, "\nContent-Type: multipart/mixed; ",
                    "boundary=\"b", i + 1, "\"\n\n");
  }
  hostile.push_back(nested);
  for (const std::string& in : hostile) {
    Report r = ParseReport(in, Rules());
    EXPECT_TRUE(!r.recipients.empty() || !r.error.empty());
  }
  // Truncated: whatever was read names the right recipient.
  Report cut = ParseReport(hostile[4], Rules());
  for (const ReportedRecipient& p : cut.recipients) {
    EXPECT_EQ(p.recipient, "alice@dest.example");
  }
}

TEST(Report, TwentyMegabytesIsReadInBoundedTime) {
  std::string big = Read("tests/mta/bounce/testdata/failure_hdrs.eml");
  size_t at = big.rfind("--=_");
  std::string filler;
  for (int i = 0; filler.size() < (20u << 20); ++i) {
    absl::StrAppend(&filler, "X-Filler-", i, ": ", std::string(70, 'y'),
                    "\r\n");
  }
  big.insert(at, filler);
  Report r = ParseReport(big, Rules());
  ASSERT_EQ(r.recipients.size(), 1u) << r.error;
  EXPECT_EQ(r.recipients[0].recipient, "alice@dest.example");
}

}  // namespace
}  // namespace peregrine::bounce
