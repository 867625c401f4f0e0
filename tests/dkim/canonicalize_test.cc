#include "dkim/canonicalize.h"

#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "gtest/gtest.h"

namespace peregrine::dkim {
namespace {

struct BodyCase {
  const char* name;
  std::string body;
  std::string simple;
  std::string relaxed;
};

const BodyCase kBodies[] = {
    // RFC 6376 §3.4.6.
    {"Rfc6376Example", " C \r\nD \t E\r\n\r\n\r\n", " C \r\nD \t E\r\n",
     " C\r\nD E\r\n"},
    {"Empty", "", "\r\n", ""},
    {"OnlyEmptyLines", "\r\n\r\n\r\n", "\r\n", ""},
    {"NoFinalCrlf", "abc", "abc\r\n", "abc\r\n"},
    {"NoFinalCrlfTrailingSpace", "abc  ", "abc  \r\n", "abc\r\n"},
    {"TrailingWhiteSpaceLines", "a \r\n \r\n\t\r\n", "a \r\n \r\n\t\r\n",
     "a\r\n"},
    {"InnerEmptyLinesKept", "a\r\n\r\n\r\nb\r\n\r\n", "a\r\n\r\n\r\nb\r\n",
     "a\r\n\r\n\r\nb\r\n"},
    {"LeadingWhiteSpaceCollapses", "\t\t x\r\n", "\t\t x\r\n", " x\r\n"},
    {"EightBit", "caf\xc3\xa9 \t \xe2\x82\xac\r\n",
     "caf\xc3\xa9 \t \xe2\x82\xac\r\n", "caf\xc3\xa9 \xe2\x82\xac\r\n"},
    {"BareLfIsALineEnd", "a\nb \n\n", "a\r\nb \r\n", "a\r\nb\r\n"},
    {"BareCrIsData", "a\rb\r\n", "a\rb\r\n", "a\rb\r\n"},
    {"CrAtTheVeryEnd", "a\r", "a\r\r\n", "a\r\r\n"},
    {"WhiteSpaceOnlyLineBetweenText", "a\r\n   \r\nb\r\n", "a\r\n   \r\nb\r\n",
     "a\r\n\r\nb\r\n"},
    {"DotLines", ".\r\n..\r\n", ".\r\n..\r\n", ".\r\n..\r\n"},
};

class BodyTest : public ::testing::TestWithParam<BodyCase> {};

TEST_P(BodyTest, SimpleAndRelaxed) {
  EXPECT_EQ(CanonicalizeBody(Canon::kSimple, GetParam().body),
            GetParam().simple);
  EXPECT_EQ(CanonicalizeBody(Canon::kRelaxed, GetParam().body),
            GetParam().relaxed);
}

TEST_P(BodyTest, SameResultWhateverTheSplit) {
  for (Canon canon : {Canon::kSimple, Canon::kRelaxed}) {
    const std::string whole = CanonicalizeBody(canon, GetParam().body);
    for (size_t cut = 0; cut <= GetParam().body.size(); ++cut) {
      BodyCanonicalizer c(canon);
      std::string out;
      c.Update(absl::string_view(GetParam().body).substr(0, cut), &out);
      c.Update(absl::string_view(GetParam().body).substr(cut), &out);
      c.Finish(&out);
      EXPECT_EQ(out, whole) << "cut at " << cut;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Cases, BodyTest, ::testing::ValuesIn(kBodies),
                         [](const auto& info) { return info.param.name; });

TEST(BodyTest, VeryLongLinesAndHashMatchesCanonicalBytes) {
  std::string body(300000, 'x');
  body += "   \r\n";
  body += std::string(100000, ' ') + "y\r\n";
  EXPECT_EQ(CanonicalizeBody(Canon::kRelaxed, body),
            std::string(300000, 'x') + "\r\n y\r\n");
  for (Canon canon : {Canon::kSimple, Canon::kRelaxed}) {
    BodyHasher streamed(canon);
    for (size_t i = 0; i < body.size(); i += 7777) {
      streamed.Update(absl::string_view(body).substr(i, 7777));
    }
    std::string canonical = CanonicalizeBody(canon, body);
    unsigned char digest[32];
    EVP_Digest(canonical.data(), canonical.size(), digest, nullptr,
               EVP_sha256(), nullptr);
    EXPECT_EQ(streamed.Finish(),
              std::string(reinterpret_cast<char*>(digest), 32));
  }
}

// RFC 6376 §3.4.3 and §3.4.4 written the plain way, line by line, to check
// the streaming, vectorized implementation against.
std::string ReferenceBody(Canon canon, const std::string& body) {
  std::vector<std::string> lines;
  std::string line;
  bool ended = true;
  for (size_t i = 0; i < body.size(); ++i) {
    char c = body[i];
    if (c == '\r' && i + 1 < body.size() && body[i + 1] == '\n') continue;
    if (c == '\n') {
      lines.push_back(line);
      line.clear();
      ended = true;
      continue;
    }
    line += c;
    ended = false;
  }
  if (!ended) lines.push_back(line);
  if (canon == Canon::kRelaxed) {
    for (std::string& l : lines) {
      std::string out;
      bool wsp = false;
      for (char c : l) {
        if (c == ' ' || c == '\t') {
          wsp = true;
          continue;
        }
        if (wsp) out += ' ';
        wsp = false;
        out += c;
      }
      l = out;  // Trailing white space dropped.
    }
  }
  while (!lines.empty() && lines.back().empty()) lines.pop_back();
  std::string out;
  for (const std::string& l : lines) out += l + "\r\n";
  if (canon == Canon::kSimple && out.empty()) out = "\r\n";
  return out;
}

TEST(BodyTest, MatchesTheReferenceOnRandomBodies) {
  const char* pieces[] = {
      "a",       "bc",       "defghijklmnopqrstuvwxyz0123456789",
      " ",       "  ",       "\t",
      " \t ",    "\r\n",     "\n",
      "\r",      "\xc3\xa9", ".",
      "\r\n\r\n"};
  uint64_t x = 12345;
  auto next = [&x] {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return x;
  };
  for (int round = 0; round < 3000; ++round) {
    std::string body;
    int n = next() % 120;
    for (int i = 0; i < n; ++i) body += pieces[next() % 13];
    for (Canon canon : {Canon::kSimple, Canon::kRelaxed}) {
      std::string expected = ReferenceBody(canon, body);
      ASSERT_EQ(CanonicalizeBody(canon, body), expected)
          << "round " << round << " body [" << body << "]";
      size_t cut = body.empty() ? 0 : next() % body.size();
      BodyCanonicalizer c(canon);
      std::string out;
      c.Update(absl::string_view(body).substr(0, cut), &out);
      c.Update(absl::string_view(body).substr(cut), &out);
      c.Finish(&out);
      ASSERT_EQ(out, expected) << "round " << round << " cut " << cut;
    }
  }
}

TEST(HeaderTest, Rfc6376Example) {
  std::string message = "A: X\r\nB : Y\t\r\n\tZ  \r\n\r\nbody";
  SplitMessage split = Split(message);
  ASSERT_EQ(split.headers.size(), 2u);
  EXPECT_EQ(split.headers[1].name, "B");
  EXPECT_EQ(split.body, "body");
  EXPECT_EQ(CanonicalizeHeader(Canon::kRelaxed, split.headers[0]), "a:X\r\n");
  EXPECT_EQ(CanonicalizeHeader(Canon::kRelaxed, split.headers[1]), "b:Y Z\r\n");
  EXPECT_EQ(CanonicalizeHeader(Canon::kSimple, split.headers[1]),
            "B : Y\t\r\n\tZ  \r\n");
}

TEST(HeaderTest, FoldedDuplicatedAndOddFields) {
  std::string message =
      "Subject:  first\r\n  line\r\n\tsecond\r\nsubject: again\r\n"
      "X-Empty:\r\nX-Eight: caf\xc3\xa9\r\n\r\n";
  SplitMessage split = Split(message);
  ASSERT_EQ(split.headers.size(), 4u);
  EXPECT_EQ(CanonicalizeHeader(Canon::kRelaxed, split.headers[0]),
            "subject:first line second\r\n");
  EXPECT_EQ(CanonicalizeHeader(Canon::kRelaxed, split.headers[1]),
            "subject:again\r\n");
  EXPECT_EQ(CanonicalizeHeader(Canon::kRelaxed, split.headers[2]),
            "x-empty:\r\n");
  EXPECT_EQ(CanonicalizeHeader(Canon::kRelaxed, split.headers[3]),
            "x-eight:caf\xc3\xa9\r\n");
  EXPECT_TRUE(split.body.empty());
}

TEST(HeaderTest, MessageWithoutBodyOrWithBareLf) {
  SplitMessage none = Split("From: a@b\r\nTo: c@d\r\n");
  EXPECT_EQ(none.headers.size(), 2u);
  EXPECT_TRUE(none.body.empty());
  SplitMessage lf = Split("From: a@b\nTo: c@d\n\nhello\n");
  ASSERT_EQ(lf.headers.size(), 2u);
  EXPECT_EQ(lf.body, "hello\n");
  EXPECT_EQ(CanonicalizeHeader(Canon::kSimple, lf.headers[0]), "From: a@b\r\n");
}

}  // namespace
}  // namespace peregrine::dkim
