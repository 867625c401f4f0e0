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
