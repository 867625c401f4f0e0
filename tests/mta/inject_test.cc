// HTTP injection's request parsing and message building, without a daemon.
#include "mta/inject.h"

#include <string>

#include "absl/strings/match.h"
#include "gtest/gtest.h"

namespace peregrine {
namespace {

absl::Time Now() { return absl::FromUnixSeconds(1795780800); }

TEST(Inject, PartsBecomeAMultipartMessagePerRecipient) {
  auto r = ParseInjectRequest(R"({
    "envelope_sender": "news@src.test",
    "content": {
      "from": {"email": "news@src.test", "name": "Shöp \"News\""},
      "subject": "Grüße, {{ name }}",
      "text_body": "Hi {{ name }}\n{{#items}}- {{.}}\n{{/items}}",
      "html_body": "<b>{{ name }}</b>",
      "headers": {"X-Campaign": "fall", "List-Unsubscribe": "<{{ unsub }}>"},
      "attachments": [{"data": "aGVsbG8=", "base64": true,
                       "content_type": "text/plain", "file_name": "a.txt"}]
    },
    "substitutions": {"unsub": "https://x.test/u"},
    "recipients": [{"email": "ann@dest.test", "name": "Ann & Bob",
                    "substitutions": {"items": ["one", "two"]}}]
  })",
                              100);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->campaign, "fall");
  auto m = RenderMessage(*r, r->recipients[0], Now(), "mx.src.test");
  ASSERT_TRUE(m.ok()) << m.status();
  const std::string& s = *m;
  EXPECT_TRUE(absl::StrContains(s, "From: \"Shöp \\\"News\\\"\"") ||
              absl::StrContains(s, "From: =?UTF-8?B?"));
  EXPECT_TRUE(absl::StrContains(s, "To: \"Ann & Bob\" <ann@dest.test>\r\n"));
  EXPECT_TRUE(absl::StrContains(s, "Subject: =?UTF-8?B?"));
  EXPECT_TRUE(absl::StrContains(s, "List-Unsubscribe: <https://x.test/u>\r\n"));
  EXPECT_TRUE(absl::StrContains(s, "Message-ID: <"));
  EXPECT_TRUE(absl::StrContains(s, "Date: "));
  EXPECT_TRUE(absl::StrContains(s, "multipart/mixed"));
  EXPECT_TRUE(absl::StrContains(s, "multipart/alternative"));
  EXPECT_TRUE(absl::StrContains(s, "Hi Ann & Bob\r\n- one\r\n- two\r\n"));
  EXPECT_TRUE(absl::StrContains(s, "<b>Ann &amp; Bob</b>"));
  EXPECT_TRUE(absl::StrContains(s, "filename=\"a.txt\""));
  EXPECT_TRUE(absl::StrContains(s, "aGVsbG8=\r\n"));
  // Every line ends in CRLF.
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\n') {
      ASSERT_TRUE(i > 0 && s[i - 1] == '\r') << i;
    }
  }
}

TEST(Inject, ErrorsNameTheField) {
  struct Case {
    const char* body;
    const char* field;
  } cases[] = {
      {"[]", "JSON object"},
      {"nope", "not JSON"},
      {R"({"content": "x", "recipients": ["a@b.test"]})", "envelope_sender"},
      {R"({"envelope_sender": "bad", "content": "x",
           "recipients": ["a@b.test"]})",
       "envelope_sender"},
      {R"({"envelope_sender": "", "content": 5, "recipients": ["a@b.test"]})",
       "content"},
      {R"({"envelope_sender": "", "content": {"text_body": "x"},
           "recipients": ["a@b.test"]})",
       "content.from.email"},
      {R"({"envelope_sender": "a@b.test", "content": "x",
           "recipients": [5]})",
       "recipients[0]"},
      {R"({"envelope_sender": "a@b.test", "content": "x",
           "recipients": [{"email": 5}]})",
       "recipients[0].email"},
      {R"({"envelope_sender": "a@b.test",
           "content": {"text_body": "x", "attachments": [{"data": "!!",
                       "base64": true}]}, "recipients": ["a@b.test"]})",
       "attachments[0].data"},
      {R"({"envelope_sender": "a@b.test", "content": "x",
           "recipients": ["a@b.test", "b@b.test", "c@b.test"]})",
       "at most 2"},
  };
  for (const Case& c : cases) {
    auto r = ParseInjectRequest(c.body, 2);
    ASSERT_FALSE(r.ok()) << c.body;
    EXPECT_TRUE(absl::StrContains(r.status().message(), c.field))
        << r.status() << " for " << c.body;
  }
}

TEST(Inject, PlausibleAddresses) {
  EXPECT_TRUE(PlausibleAddress("a@b.test"));
  EXPECT_TRUE(PlausibleAddress("ünïcode@bücher.test"));
  EXPECT_FALSE(PlausibleAddress("a b@c.test"));
  EXPECT_FALSE(PlausibleAddress("@c.test"));
  EXPECT_FALSE(PlausibleAddress("a@"));
  EXPECT_FALSE(PlausibleAddress("a@b@c"));
  EXPECT_FALSE(PlausibleAddress("a@.c"));
  EXPECT_FALSE(PlausibleAddress("a@c..d"));
  EXPECT_FALSE(PlausibleAddress("<a@c.d>"));
  EXPECT_FALSE(PlausibleAddress(std::string(250, 'a') + "@c.d"));
}

TEST(Inject, ARawMessageIsRenderedAndCompleted) {
  auto r = ParseInjectRequest(
      R"({"envelope_sender": "a@src.test",
          "content": "Subject: {{ x }}\n\nbody {{ x }}\n",
          "recipients": [{"email": "b@dest.test",
                          "substitutions": {"x": 3.5}}]})",
      10);
  ASSERT_TRUE(r.ok()) << r.status();
  auto m = RenderMessage(*r, r->recipients[0], Now(), "h.test");
  ASSERT_TRUE(m.ok());
  EXPECT_TRUE(absl::StrContains(*m, "Subject: 3.5\r\n\r\nbody 3.5\r\n"));
  EXPECT_TRUE(absl::StrContains(*m, "@h.test>\r\n"));
}

// Plain variables are filled without libmstch; a comment tag sends the same
// template to libmstch: both give the same text.
TEST(Inject, TheVariableFastPathRendersAsMustacheDoes) {
  auto body = [](const char* extra) {
    return absl::StrCat(
        R"({"envelope_sender": "a@src.test", "content": {)"
        R"("subject": "S {{ name }}", "text_body": "T {{name}} {{{ code }}} )"
        R"({{& code }} {{ n }} {{ missing }} {{ nil }} <{{ email }}>)",
        extra, R"(", "html_body": "<i>{{ name }} {{{ code }}}</i>)", extra,
        R"("}, "substitutions": {"code": "<&>", "n": 7},)"
        R"("recipients": [{"email": "b@dest.test", "name": "B & \"C\"",)"
        R"("substitutions": {"nil": null, "n": 2.5}}]})");
  };
  auto fast = ParseInjectRequest(body(""), 10);
  auto slow = ParseInjectRequest(body("{{! a comment }}"), 10);
  ASSERT_TRUE(fast.ok()) << fast.status() << body("");
  ASSERT_TRUE(slow.ok()) << slow.status();
  auto a = RenderMessage(*fast, fast->recipients[0], Now(), "h.test");
  auto b = RenderMessage(*slow, slow->recipients[0], Now(), "h.test");
  ASSERT_TRUE(a.ok() && b.ok());
  auto part = [](const std::string& m, absl::string_view from) {
    size_t at = m.find(std::string(from));
    return at == std::string::npos ? std::string()
                                   : m.substr(at, m.find("\r\n", at) - at);
  };
  for (absl::string_view from : {"Subject: ", "T ", "<i>"}) {
    EXPECT_EQ(part(*a, from), part(*b, from)) << from;
    EXPECT_FALSE(part(*a, from).empty()) << from;
  }
  EXPECT_EQ(part(*a, "T "), "T B & \"C\" <&> <&> 2.5   <b@dest.test>");
  EXPECT_EQ(part(*a, "<i>"), "<i>B &amp; &quot;C&quot; &lt;&amp;&gt;</i>");
}

}  // namespace
}  // namespace peregrine
