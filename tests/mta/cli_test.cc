#include "mta/cli.h"

#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "mta/config.h"

namespace peregrine {
namespace {

using ::testing::HasSubstr;

struct Result {
  int code;
  std::string out;
  std::string err;
};

Result Cli(std::vector<const char*> args) {
  args.insert(args.begin(), "peregrine");
  std::ostringstream out, err;
  int code = RunCli(static_cast<int>(args.size()), args.data(), out, err);
  return {code, out.str(), err.str()};
}

std::string WriteTemp(const std::string& name, const std::string& text) {
  std::string path = std::string(getenv("TEST_TMPDIR")) + "/" + name;
  std::ofstream(path) << text;
  return path;
}

TEST(CliTest, Version) {
  Result r = Cli({"--version"});
  EXPECT_EQ(r.code, 0);
  EXPECT_THAT(r.out, HasSubstr("peregrine 0.1.0"));
}

TEST(CliTest, ConfigDefaultsIsValidTomlOfTheDefaults) {
  Result r = Cli({"config", "defaults"});
  EXPECT_EQ(r.code, 0);
  auto parsed = ParseConfig(r.out, "stdout");
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->values, DefaultConfig().values);
}

TEST(CliTest, ConfigCheckAcceptsAGoodFile) {
  std::string path = WriteTemp("good.toml", "[server]\nshards = 2\n");
  Result r = Cli({"config", "check", path.c_str()});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("OK"));
}

TEST(CliTest, ConfigCheckUnknownKeyExits2NamingKeyAndLine) {
  std::string path =
      WriteTemp("bad.toml", "[server]\nshards = 2\nlisten_port = 25\n");
  Result r = Cli({"config", "check", path.c_str()});
  EXPECT_EQ(r.code, 2);
  EXPECT_THAT(r.err,
              HasSubstr(path + ":3:1: unknown key 'server.listen_port'"));
}

TEST(CliTest, ConfigCheckMissingFileExits2) {
  Result r = Cli({"config", "check", "/nonexistent.toml"});
  EXPECT_EQ(r.code, 2);
  EXPECT_THAT(r.err, HasSubstr("/nonexistent.toml: cannot read"));
}

TEST(CliTest, ConfigCheckRefusesWhatIsNotAFile) {
  std::string dir = getenv("TEST_TMPDIR");
  Result r = Cli({"config", "check", dir.c_str()});
  EXPECT_EQ(r.code, 2);
  EXPECT_THAT(r.err, HasSubstr("is a directory"));
  r = Cli({"config", "check", "/dev/zero"});
  EXPECT_EQ(r.code, 2);
  EXPECT_THAT(r.err, HasSubstr("not a regular file"));
  r = Cli({"serve", "--config", dir.c_str()});
  EXPECT_EQ(r.code, 2);
  EXPECT_THAT(r.err, HasSubstr("is a directory"));
}

TEST(CliTest, ConfigCheckRefusesAnOpenRelay) {
  std::string path =
      WriteTemp("open.toml", "[relay]\ntrusted_networks = [\"0.0.0.0/0\"]\n");
  Result r = Cli({"config", "check", path.c_str()});
  EXPECT_EQ(r.code, 2);
  EXPECT_THAT(r.err, HasSubstr("open relay"));
}

TEST(CliTest, ConfigCheckLoadsTheFilesServeWould) {
  std::string dir = getenv("TEST_TMPDIR");
  std::string path = WriteTemp("files.toml",
                               "[tls]\ncert_file = \"/nonexistent/cert.pem\"\n"
                               "key_file = \"/nonexistent/key.pem\"\n");
  Result r = Cli({"config", "check", path.c_str()});
  EXPECT_EQ(r.code, 2);
  EXPECT_THAT(r.err, HasSubstr("tls.cert_file"));
  EXPECT_THAT(r.err, HasSubstr("/nonexistent/cert.pem"));
  // A certificate whose key is another one's.
  std::string cert = dir + "/c.pem", key = dir + "/k.pem",
              other = dir + "/o.pem";
  ASSERT_EQ(
      system(("openssl req -x509 -newkey rsa:2048 -nodes -subj /CN=a "
              "-days 1 -keyout " +
              key + " -out " + cert + " 2>/dev/null && openssl genrsa -out " +
              other + " 2048 2>/dev/null")
                 .c_str()),
      0);
  path = WriteTemp("mismatch.toml", "[tls]\ncert_file = \"" + cert +
                                        "\"\nkey_file = \"" + other + "\"\n");
  r = Cli({"config", "check", path.c_str()});
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_THAT(r.err, HasSubstr("tls.cert_file"));
  path = WriteTemp("match.toml", "[tls]\ncert_file = \"" + cert +
                                     "\"\nkey_file = \"" + key + "\"\n");
  r = Cli({"config", "check", path.c_str()});
  EXPECT_EQ(r.code, 0) << r.err;
  // A DKIM key that is not there.
  path = WriteTemp("dkim.toml",
                   "[dkim]\nkeys = [{ domain = \"example.com\", selector = "
                   "\"s1\", key_file = \"/nonexistent/dkim.key\" }]\n");
  r = Cli({"config", "check", path.c_str()});
  EXPECT_EQ(r.code, 2);
  EXPECT_THAT(r.err, HasSubstr("d=example.com s=s1"));
  EXPECT_THAT(r.err, HasSubstr("/nonexistent/dkim.key"));
}

TEST(CliTest, UsageErrorsExit2) {
  EXPECT_EQ(Cli({}).code, 2);
  EXPECT_EQ(Cli({"config"}).code, 2);
  EXPECT_EQ(Cli({"config", "check"}).code, 2);
  EXPECT_EQ(Cli({"serve", "--bogus"}).code, 2);
  EXPECT_EQ(Cli({"frobnicate"}).code, 2);
}

TEST(CliTest, HelpAndUnknownCommandsAreSaidPlainly) {
  Result r = Cli({"help"});
  EXPECT_EQ(r.code, 0);
  EXPECT_THAT(r.out, HasSubstr("serve"));
  r = Cli({"help", "user"});
  EXPECT_EQ(r.code, 0);
  EXPECT_THAT(r.out, HasSubstr("add"));
  r = Cli({"frobnicate"});
  EXPECT_EQ(r.code, 2);
  EXPECT_THAT(r.err, HasSubstr("unknown command 'frobnicate'"));
  EXPECT_THAT(r.err, HasSubstr("serve, config"));
  EXPECT_THAT(r.err, testing::Not(HasSubstr("A subcommand is required")));
  r = Cli({});
  EXPECT_EQ(r.code, 2);
  EXPECT_THAT(r.err, HasSubstr("say what to do"));
  r = Cli({"help", "nope"});
  EXPECT_EQ(r.code, 2);
  EXPECT_THAT(r.err, HasSubstr("no command 'nope'"));
}

TEST(CliTest, BounceClassifySaysTheCategoryAndTheRule) {
  Result r = Cli({"bounce", "classify",
                  "552 5.2.2 <a@example.com>: user is "
                  "over quota"});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("category: mailbox_full"));
  EXPECT_THAT(r.out, HasSubstr("rule:     (built-in rules):"));
  // Words split over arguments are one reply.
  r = Cli({"bounce", "classify", "550", "5.1.1", "no", "such", "user"});
  EXPECT_THAT(r.out, HasSubstr("reply:    550 5.1.1 no such user"));
  EXPECT_THAT(r.out, HasSubstr("category: invalid_recipient"));
  // An operator's rule wins, from --rules or the configuration's file.
  std::string rules = WriteTemp(
      "mine.toml", "[[rule]]\ncategory = \"policy\"\npatterns = ['quota']\n");
  r = Cli({"bounce", "classify", "--rules", rules.c_str(), "552 5.2.2 quota"});
  EXPECT_THAT(r.out, HasSubstr("category: policy"));
  EXPECT_THAT(r.out, HasSubstr("mine.toml:3 'quota'"));
  std::string config = WriteTemp("with_rules.toml",
                                 "[bounce]\nrules_file = \"" + rules + "\"\n");
  r = Cli({"bounce", "classify", "-c", config.c_str(), "552 5.2.2 quota"});
  EXPECT_THAT(r.out, HasSubstr("category: policy"));
  r = Cli({"bounce", "classify", "250 2.0.0 ok"});
  EXPECT_THAT(r.out, HasSubstr("rule:     none matched"));
}

TEST(CliTest, BounceRulesAreNamedWhenBroken) {
  std::string rules = WriteTemp(
      "broken.toml", "[[rule]]\ncategory = \"nope\"\npatterns = ['x']\n");
  Result r = Cli({"bounce", "classify", "--rules", rules.c_str(), "550 x"});
  EXPECT_EQ(r.code, 2);
  EXPECT_THAT(r.err, HasSubstr("broken.toml:1: unknown category 'nope'"));
  std::string config = WriteTemp("broken_rules.toml",
                                 "[bounce]\nrules_file = \"" + rules + "\"\n");
  r = Cli({"config", "check", config.c_str()});
  EXPECT_EQ(r.code, 2);
  EXPECT_THAT(r.err, HasSubstr("bounce.rules_file"));
  r = Cli({"bounce", "rules"});
  EXPECT_EQ(r.code, 0);
  EXPECT_THAT(r.out, HasSubstr("category = \"invalid_recipient\""));
}

TEST(CliTest, HelpExits0) {
  Result r = Cli({"--help"});
  EXPECT_EQ(r.code, 0);
  EXPECT_THAT(r.out, HasSubstr("serve"));
  EXPECT_THAT(r.out, HasSubstr("config"));
}

TEST(CliTest, ServeWithBadConfigExits2BeforeStarting) {
  std::string path = WriteTemp("serve_bad.toml", "[server]\nshards = -3\n");
  Result r = Cli({"serve", "--config", path.c_str()});
  EXPECT_EQ(r.code, 2);
  EXPECT_THAT(r.err, HasSubstr("server.shards"));
}

TEST(CliTest, ServeWithUnwritableDataDirExits2) {
  std::string file = WriteTemp("not_a_dir", "x");
  std::string cfg = WriteTemp("serve_dd.toml",
                              "[listen]\nrelay = []\nsubmission = []\n"
                              "submissions = []\nadmin = []\n");
  Result r =
      Cli({"serve", "--config", cfg.c_str(), "--data-dir", file.c_str()});
  EXPECT_EQ(r.code, 2);
  EXPECT_THAT(r.err, HasSubstr("--data-dir: cannot create data directory"));
}

}  // namespace
}  // namespace peregrine
