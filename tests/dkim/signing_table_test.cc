#include "dkim/signing_table.h"

#include <fstream>

#include "absl/strings/match.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace peregrine::dkim {
namespace {

using ::testing::HasSubstr;

std::string KeyFile(const std::string& name, KeyType type) {
  std::string path = std::string(getenv("TEST_TMPDIR")) + "/" + name;
  std::ofstream(path) << (*PrivateKey::Generate(type, 1024))->ToPem();
  return path;
}

int Signatures(const std::string& fields) {
  int n = 0;
  for (size_t pos = 0;
       (pos = fields.find("DKIM-Signature:", pos)) != std::string::npos;
       ++pos) {
    ++n;
  }
  return n;
}

std::string From(const std::string& from) {
  return "From: " + from + "\r\nSubject: x\r\n\r\nbody\r\n";
}

TEST(SigningTableTest, FromDomain) {
  struct Case {
    const char* message;
    const char* domain;
  };
  const Case cases[] = {
      {"From: Joe <joe@Example.COM>\r\n\r\n", "example.com"},
      {"From: joe@x.org\r\n\r\n", "x.org"},
      {"From: \"a@b.test\" <c@d.e>\r\n\r\n", "d.e"},
      {"From:\r\n  Joe\r\n  <joe@folded.test>\r\n\r\n", "folded.test"},
      {"To: a@b.test\r\n\r\n", ""},
      {"From: nobody\r\n\r\n", ""},
      {"From: a@first.test\r\nFrom: b@second.test\r\n\r\n", "first.test"},
  };
  for (const Case& c : cases) {
    EXPECT_EQ(SigningTable::FromDomain(Split(c.message)), c.domain)
        << c.message;
  }
}

TEST(SigningTableTest, MatchesByFromDomainAndSignsOncePerKey) {
  Policy policy;
  policy.keys.push_back(
      {"example.com", "s1", KeyFile("a.pem", KeyType::kEd25519)});
  policy.keys.push_back({"example.com", "s2", KeyFile("b.pem", KeyType::kRsa)});
  policy.keys.push_back(
      {"platform.test", "p1", KeyFile("p.pem", KeyType::kEd25519), {"*"}});
  policy.keys.push_back({"corp.test",
                         "c1",
                         KeyFile("c.pem", KeyType::kEd25519),
                         {"*.corp.test"}});
  auto table = SigningTable::Load(policy);
  absl::Time now = absl::FromUnixSeconds(1700000000);

  auto own = table->Sign(From("a@example.com"), now);
  ASSERT_TRUE(own.ok()) << own.status();
  EXPECT_EQ(Signatures(*own), 3);  // Ed25519, RSA, and the platform's.
  EXPECT_THAT(*own, HasSubstr("d=platform.test"));

  auto other = table->Sign(From("a@other.test"), now);
  EXPECT_EQ(Signatures(*other), 1);  // Only the platform's.

  EXPECT_EQ(Signatures(*table->Sign(From("a@mail.corp.test"), now)), 2);
  EXPECT_EQ(Signatures(*table->Sign(From("a@corp.test"), now)), 1);
  EXPECT_EQ(Signatures(*table->Sign("Subject: no from\r\n\r\n", now)), 1);
  // Forwarded for a local domain: its key signs too, whatever the From.
  auto forwarded = table->Sign(From("a@other.test"), now, "CORP.test");
  EXPECT_EQ(Signatures(*forwarded), 2);
  EXPECT_THAT(*forwarded, HasSubstr("d=corp.test"));
  // Once per key, not twice: corp.test's and the platform's.
  EXPECT_EQ(
      Signatures(*table->Sign(From("a@mail.corp.test"), now, "corp.test")), 2);
}

TEST(SigningTableTest, UnusableKeyHoldsItsMailOnly) {
  Policy policy;
  policy.keys.push_back({"broken.test", "s1", "/nonexistent/key.pem"});
  policy.keys.push_back(
      {"good.test", "s1", KeyFile("g.pem", KeyType::kEd25519)});
  policy.keys.push_back({"mismatch.test",
                         "s1",
                         KeyFile("m.pem", KeyType::kEd25519),
                         {},
                         "rsa-sha256"});
  auto table = SigningTable::Load(policy);
  ASSERT_EQ(table->entries().size(), 3u);
  EXPECT_FALSE(table->entries()[0].signer.ok());
  EXPECT_TRUE(table->entries()[1].signer.ok());
  EXPECT_THAT(std::string(table->entries()[2].signer.status().message()),
              HasSubstr("is ed25519-sha256 but the configuration says "
                        "rsa-sha256"));

  auto held = table->Sign(From("x@broken.test"), absl::Now());
  EXPECT_TRUE(absl::IsUnavailable(held.status()));
  EXPECT_THAT(std::string(held.status().message()),
              HasSubstr("mail from broken.test is held"));
  EXPECT_TRUE(absl::IsUnavailable(
      table->Sign(From("x@mismatch.test"), absl::Now()).status()));
  EXPECT_EQ(Signatures(*table->Sign(From("x@good.test"), absl::Now())), 1);
  // No key for this domain: nothing to add, nothing held.
  auto unsigned_ok = table->Sign(From("x@else.test"), absl::Now());
  ASSERT_TRUE(unsigned_ok.ok());
  EXPECT_TRUE(unsigned_ok->empty());
}

}  // namespace
}  // namespace peregrine::dkim
