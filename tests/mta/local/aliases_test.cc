// The aliases files' syntax and where an address goes (mta/local/aliases.h).
#include "mta/local/aliases.h"

#include "absl/strings/match.h"
#include "gtest/gtest.h"

namespace peregrine::local {
namespace {

AliasTable Table(absl::string_view own, absl::string_view other = "") {
  AliasTable t;
  t["own.test"] = *ParseAliases(own, "own.test", "aliases/own.test");
  t["two.test"] = *ParseAliases(other, "two.test", "aliases/two.test");
  return t;
}

std::vector<std::string> Targets(const AliasTable& t, absl::string_view a) {
  auto r = Resolve(t, a);
  EXPECT_TRUE(r.ok()) << a << ": " << r.status();
  return r.ok() ? r->targets : std::vector<std::string>{};
}

TEST(Aliases, ExactThenWithoutSuffixThenCatchAll) {
  AliasTable t = Table(
      "# the team\n"
      "Alice: alice@gmail.example\n"
      "alice+news: news@archive.example   # before the suffix rule\n"
      "team: alice, bob@out.example, alice@gmail.example\n"
      "*: me@personal.example\n");
  EXPECT_EQ(Targets(t, "ALICE@Own.Test"),
            std::vector<std::string>{"alice@gmail.example"});
  EXPECT_EQ(Targets(t, "alice+news@own.test"),
            std::vector<std::string>{"news@archive.example"});
  EXPECT_EQ(Targets(t, "alice+shop@own.test"),
            std::vector<std::string>{"alice@gmail.example"});
  // "alice" is alice@own.test, resolved again; a repeat is sent once.
  EXPECT_EQ(
      Targets(t, "team@own.test"),
      (std::vector<std::string>{"alice@gmail.example", "bob@out.example"}));
  EXPECT_EQ(Targets(t, "nobody@own.test"),
            std::vector<std::string>{"me@personal.example"});
  auto r = Resolve(t, "team@own.test");
  EXPECT_EQ(r->paths[0],
            "team@own.test → alice@own.test → alice@gmail.example");
}

TEST(Aliases, UnknownUsersAndDomains) {
  AliasTable t = Table("alice: a@out.example\n");
  EXPECT_TRUE(absl::IsNotFound(Resolve(t, "bob@own.test").status()));
  EXPECT_TRUE(absl::IsNotFound(Resolve(t, "x@two.test").status()));
  EXPECT_TRUE(absl::IsInvalidArgument(Resolve(t, "a@else.test").status()));
  EXPECT_TRUE(absl::IsInvalidArgument(Resolve(t, "no-at-sign").status()));
}

TEST(Aliases, LoopsAndDeadEndsAreErrorsNotHangs) {
  AliasTable t = Table("a: b\nb: x@two.test\nself: self\nlost: ghost\n",
                       "x: a@own.test\n");
  auto loop = Resolve(t, "a@own.test");
  EXPECT_TRUE(absl::IsFailedPrecondition(loop.status()));
  EXPECT_TRUE(absl::StrContains(loop.status().message(),
                                "a@own.test → b@own.test → x@two.test → "
                                "a@own.test"))
      << loop.status();
  EXPECT_TRUE(absl::IsFailedPrecondition(Resolve(t, "self@own.test").status()));
  auto lost = Resolve(t, "lost@own.test");
  EXPECT_TRUE(absl::IsFailedPrecondition(lost.status()));
  EXPECT_TRUE(absl::StrContains(lost.status().message(), "ghost@own.test"));
  // A chain longer than ten without a loop.
  std::string text;
  for (int i = 0; i < 12; ++i) text += absl::StrCat("u", i, ": u", i + 1, "\n");
  text += "u12: end@out.example\n";
  AliasTable deep = Table(text);
  EXPECT_TRUE(absl::StrContains(Resolve(deep, "u0@own.test").status().message(),
                                "deeper than 10"));
  EXPECT_TRUE(Resolve(deep, "u5@own.test").ok());
}

TEST(Aliases, ErrorsNameTheLineAndTheFix) {
  auto error = [](absl::string_view text) {
    auto f = ParseAliases(text, "own.test", "aliases/own.test");
    EXPECT_FALSE(f.ok()) << text;
    return std::string(f.status().message());
  };
  EXPECT_TRUE(absl::StrContains(error("\nbackup: | /usr/bin/store\n"),
                                "aliases/own.test:2: '| /usr/bin/store': "
                                "Peregrine forwards only"));
  EXPECT_TRUE(absl::StrContains(error("log: /var/mail/log\n"), "file targets"));
  EXPECT_TRUE(absl::StrContains(error("alice a@b.example\n"),
                                "expected \"user: address"));
  EXPECT_TRUE(absl::StrContains(error("alice@own.test: a@b.example\n"),
                                "no local part"));
  EXPECT_TRUE(absl::StrContains(error("alice:\n"), "forwards nowhere"));
  EXPECT_TRUE(absl::StrContains(error("a: x@y.example\nA: z@y.example\n"),
                                "already on line 1"));
  EXPECT_TRUE(absl::StrContains(error("a: <x@y.example>\n"), "not an address"));
  EXPECT_TRUE(absl::StrContains(error("a: x@@y.example\n"), "not an address"));
  EXPECT_TRUE(absl::StrContains(error("a: x y@z.example\n"), "not an address"));
}

TEST(Aliases, FormatReadsBackTheSame) {
  auto f = ParseAliases("*: all@x.example\nb: c, d@e.example\na: z@y.example\n",
                        "own.test", "f");
  ASSERT_TRUE(f.ok());
  std::string text = FormatAliases(*f);
  EXPECT_TRUE(absl::EndsWith(
      text, "a: z@y.example\nb: c, d@e.example\n*: all@x.example\n"))
      << text;
  auto again = ParseAliases(text, "own.test", "f");
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->aliases.size(), 3u);
  EXPECT_EQ(again->aliases.at("b").targets,
            (std::vector<std::string>{"c", "d@e.example"}));
}

}  // namespace
}  // namespace peregrine::local
