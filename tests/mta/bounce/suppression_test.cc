// The suppression list over an in-memory table: add, find by scope, expiry,
// remove; the CSV it exports and imports, hostile lines included; and the
// requests the CLI hands a running daemon.
#include "mta/bounce/suppression.h"

#include <map>

#include "absl/strings/match.h"
#include "gtest/gtest.h"
#include "mta/bounce/suppression_admin.h"
#include "tests/mta/bounce/memory_table.h"

namespace peregrine::bounce {
namespace {

const absl::Time kNow = absl::FromUnixSeconds(1795000000);

SuppressionEntry Entry(std::string address, std::string scope = "") {
  SuppressionEntry e;
  e.address = std::move(address);
  e.scope = std::move(scope);
  e.category = "invalid_recipient";
  e.reason = "550 5.1.1 no such user";
  e.source = "delivery";
  e.added = kNow - absl::Hours(1);
  return e;
}

TEST(Suppression, FindIsCaseInsensitiveAndScoped) {
  MemoryTable t;
  SuppressionList list(&t);
  ASSERT_TRUE(list.Add(Entry("Gone@Dest.Example")).ok());
  ASSERT_TRUE(list.Add(Entry("c@dest.example", "campaign:spring")).ok());
  auto f = list.Find("gone@dest.example", "", "", kNow);
  ASSERT_TRUE(f.ok());
  ASSERT_TRUE(f->has_value());
  EXPECT_EQ((*f)->address, "Gone@Dest.Example");
  EXPECT_EQ((*f)->category, "invalid_recipient");
  // A campaign's entry counts only for that campaign's mail.
  EXPECT_FALSE(list.Find("c@dest.example", "", "", kNow)->has_value());
  EXPECT_FALSE(list.Find("c@dest.example", "", "autumn", kNow)->has_value());
  EXPECT_TRUE(list.Find("c@dest.example", "", "spring", kNow)->has_value());
  EXPECT_EQ(list.hits(), 2u);
}

TEST(Suppression, ExpiredEntriesDoNotCount) {
  MemoryTable t;
  SuppressionList list(&t);
  SuppressionEntry e = Entry("full@dest.example");
  e.expires = kNow - absl::Seconds(1);
  ASSERT_TRUE(list.Add(e).ok());
  EXPECT_FALSE(list.Find("full@dest.example", "", "", kNow)->has_value());
  e.expires = kNow + absl::Hours(1);
  ASSERT_TRUE(list.Add(e).ok());
  EXPECT_TRUE(list.Find("full@dest.example", "", "", kNow)->has_value());
}

TEST(Suppression, RemoveSaysWhetherItWasThere) {
  MemoryTable t;
  SuppressionList list(&t);
  ASSERT_TRUE(list.Add(Entry("a@x.example")).ok());
  EXPECT_TRUE(*list.Remove("A@X.example", ""));
  EXPECT_FALSE(*list.Remove("a@x.example", ""));
  EXPECT_FALSE(list.Find("a@x.example", "", "", kNow)->has_value());
}

TEST(Suppression, RefusesWhatIsNotAnAddressOrAScope) {
  MemoryTable t;
  SuppressionList list(&t);
  for (const char* bad : {"", "nobody", "@x.example", "a@", "a b@x.example",
                          "a@x.example>\r\nRCPT TO:<b@y"}) {
    EXPECT_FALSE(list.Add(Entry(bad)).ok()) << bad;
  }
  for (const char* bad :
       {"global", "tenant:", "tenant:a b", "team:x", "campaign:\x01"}) {
    EXPECT_FALSE(CheckScope(bad).ok()) << bad;
    EXPECT_FALSE(list.Add(Entry("a@x.example", bad)).ok()) << bad;
  }
}

TEST(Suppression, CsvRoundTrip) {
  SuppressionEntry e = Entry("a@x.example", "tenant:acme");
  e.reason = "550 5.1.1 \"no\", said the server";
  e.expires = kNow + absl::Hours(24);
  std::string line = ToCsv(e);
  SuppressionEntry defaults;
  auto back = ParseCsvLine(line, defaults);
  ASSERT_TRUE(back.ok()) << back.status();
  ASSERT_TRUE(back->has_value());
  EXPECT_EQ((*back)->address, e.address);
  EXPECT_EQ((*back)->scope, e.scope);
  EXPECT_EQ((*back)->reason, e.reason);
  EXPECT_EQ((*back)->added, e.added);
  EXPECT_EQ((*back)->expires, e.expires);
}

TEST(Suppression, CsvImportLines) {
  SuppressionEntry defaults;
  defaults.category = "manual";
  auto header = ParseCsvLine(CsvHeader(), defaults);
  ASSERT_TRUE(header.ok());
  EXPECT_FALSE(header->has_value());
  auto bare = ParseCsvLine("<bob@x.example>\r", defaults);
  ASSERT_TRUE(bare.ok());
  EXPECT_EQ((*bare)->address, "bob@x.example");
  EXPECT_EQ((*bare)->category, "manual");
  EXPECT_FALSE(ParseCsvLine("a@x.example,,no_such_category", defaults).ok());
  EXPECT_FALSE(ParseCsvLine("a@x.example,,,,,yesterday", defaults).ok());
  EXPECT_FALSE(ParseCsvLine("\"a@x.example", defaults).ok());
  EXPECT_FALSE(ParseCsvLine("a@x.example,,,,,,,extra", defaults).ok());
}

TEST(Suppression, RequestsAddRemoveAndReportRefusals) {
  MemoryTable t;
  SuppressionList list(&t);
  std::string answer = ApplyRequest(
      list,
      "add,a@x.example\nadd,b@x.example,campaign:spring,complaint\n"
      "add,not-an-address\nremove,a@x.example\nremove,nobody@x.example\n"
      "drop,everything\n",
      kNow);
  EXPECT_NE(answer.find("added 2, removed 1, refused 3"), std::string::npos)
      << answer;
  EXPECT_NE(answer.find("line 3: "), std::string::npos) << answer;
  EXPECT_NE(answer.find("line 6: expected add"), std::string::npos) << answer;
  EXPECT_FALSE(list.Find("a@x.example", "", "", kNow)->has_value());
  EXPECT_TRUE(list.Find("b@x.example", "", "spring", kNow)->has_value());
}

TEST(Suppression, ReplySaysWhyAndStaysOneLine) {
  SuppressionEntry e = Entry("a@x.example");
  e.reason = "550 5.1.1 gone\r\n250 ok";
  std::string reply = SuppressedReply("a@x.example", e);
  EXPECT_EQ(
      reply.rfind("550 5.1.1 <a@x.example>: this address is suppressed", 0), 0u)
      << reply;
  EXPECT_EQ(reply.find('\n'), std::string::npos);
  EXPECT_NE(reply.find("invalid_recipient"), std::string::npos);
}

}  // namespace
}  // namespace peregrine::bounce
