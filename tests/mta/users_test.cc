#include "mta/users.h"

#include <sys/stat.h>

#include <fstream>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace peregrine {
namespace {

TEST(UsersTest, SetCheckSaveLoadRemove) {
  std::string path = std::string(getenv("TEST_TMPDIR")) + "/users";
  UsersFile users;
  ASSERT_TRUE(users.Set("app@example.test", "long enough").ok());
  EXPECT_TRUE(users.Check("app@example.test", "long enough"));
  EXPECT_FALSE(users.Check("app@example.test", "long enougH"));
  EXPECT_FALSE(users.Check("nobody", "long enough"));
  ASSERT_TRUE(users.Save(path).ok());
  struct stat st;
  ASSERT_EQ(stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  auto loaded = UsersFile::Load(path);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_TRUE(loaded->Check("app@example.test", "long enough"));
  EXPECT_THAT(loaded->Names(), ::testing::ElementsAre("app@example.test"));
  EXPECT_TRUE(loaded->Remove("app@example.test"));
  EXPECT_FALSE(loaded->Remove("app@example.test"));
}

TEST(UsersTest, RefusesBadNamesShortPasswordsAndBadFiles) {
  UsersFile users;
  EXPECT_FALSE(users.Set("a b", "long enough").ok());
  EXPECT_FALSE(users.Set("a:b", "long enough").ok());
  EXPECT_FALSE(users.Set("ok", "short").ok());
  std::string path = std::string(getenv("TEST_TMPDIR")) + "/bad-users";
  std::ofstream(path) << "# comment\nalice:plaintext-password\n";
  auto loaded = UsersFile::Load(path);
  EXPECT_FALSE(loaded.ok());
  EXPECT_THAT(std::string(loaded.status().message()),
              ::testing::HasSubstr(":2:"));
  EXPECT_TRUE(UsersFile::Load("/nonexistent/users").ok());  // Empty.
}

TEST(UsersTest, SendersLimitWhoAUserMaySendAs) {
  std::string path = std::string(getenv("TEST_TMPDIR")) + "/senders";
  UsersFile users;
  ASSERT_TRUE(users.Set("metabase", "long enough").ok());
  ASSERT_TRUE(users.Set("free", "long enough").ok());
  EXPECT_EQ(users.SenderRefusal("metabase", "anyone@any.test"), "");
  ASSERT_TRUE(
      users.SetSenders("metabase", {"Reports@Example.test", "@news.test"})
          .ok());
  EXPECT_EQ(users.SenderRefusal("metabase", "reports@example.test"), "");
  EXPECT_EQ(users.SenderRefusal("metabase", "REPORTS@example.TEST"), "");
  EXPECT_EQ(users.SenderRefusal("metabase", "x@news.test"), "");
  EXPECT_EQ(users.SenderRefusal("metabase", ""), "");  // Null sender.
  EXPECT_THAT(users.SenderRefusal("metabase", "ceo@example.test"),
              ::testing::HasSubstr("may send as reports@example.test, "
                                   "@news.test only"));
  EXPECT_NE(users.SenderRefusal("metabase", "x@sub.news.test"), "");
  EXPECT_EQ(users.SenderRefusal("free", "ceo@example.test"), "");
  for (const char* bad :
       {"nodomain", "a@", "a@b", "a b@c.test", "a,b@c.test"}) {
    EXPECT_FALSE(users.SetSenders("free", {bad}).ok()) << bad;
  }
  // Kept in the file, after the hash; a new password keeps them.
  ASSERT_TRUE(users.Save(path).ok());
  auto loaded = UsersFile::Load(path);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_THAT(loaded->Senders("metabase"),
              ::testing::ElementsAre("reports@example.test", "@news.test"));
  ASSERT_TRUE(loaded->Set("metabase", "another one").ok());
  EXPECT_EQ(loaded->Senders("metabase").size(), 2u);
  ASSERT_TRUE(loaded->SetSenders("metabase", {}).ok());  // Any again.
  EXPECT_EQ(loaded->SenderRefusal("metabase", "ceo@example.test"), "");
  // A message rate, kept the same way.
  EXPECT_FALSE(loaded->SetRate("metabase", "lots").ok());
  EXPECT_FALSE(loaded->SetRate("metabase", "100").ok());
  ASSERT_TRUE(loaded->SetRate("metabase", "100/h").ok());
  ASSERT_TRUE(loaded->Save(path).ok());
  EXPECT_EQ(UsersFile::Load(path)->Rate("metabase"), "100/h");
  ASSERT_TRUE(loaded->SetRate("metabase", "unlimited").ok());
  EXPECT_EQ(loaded->Rate("metabase"), "");
  std::ofstream(path) << "app:scrypt$x:colour=blue\n";
  auto bad = UsersFile::Load(path);
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(std::string(bad.status().message()),
              ::testing::HasSubstr("unknown field"));
}

TEST(UsersTest, HashesAreSaltedAndVerify) {
  std::string a = HashPassword("same password");
  std::string b = HashPassword("same password");
  EXPECT_NE(a, b);
  EXPECT_TRUE(VerifyPassword(a, "same password"));
  EXPECT_FALSE(VerifyPassword(a, "other password"));
  EXPECT_FALSE(VerifyPassword("scrypt$garbage", "x"));
  EXPECT_FALSE(VerifyPassword("scrypt$99999999$8$1$AAAA$AAAA", "x"));
}

}  // namespace
}  // namespace peregrine
