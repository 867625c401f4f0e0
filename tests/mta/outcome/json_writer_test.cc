#include "mta/outcome/json_writer.h"

#include <random>
#include <string>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace peregrine::outcome {
namespace {

std::string Ours(const std::string& s) {
  std::string out;
  AppendJsonString(s, &out);
  return out;
}

std::string Nlohmann(const std::string& s) {
  return nlohmann::json(s).dump(-1, ' ', false,
                                nlohmann::json::error_handler_t::replace);
}

TEST(JsonString, EscapesAsNlohmannDoes) {
  for (std::string s : {std::string(""), std::string("plain"),
                        std::string("\"quoted\" \\ back/slash"),
                        std::string("\b\f\n\r\t\x01\x1f\x7f", 8),
                        std::string("nul \0 inside", 12)}) {
    EXPECT_EQ(Ours(s), Nlohmann(s)) << s;
  }
  EXPECT_EQ(Ours("a\x01"), "\"a\\u0001\"");
}

TEST(JsonString, KeepsUtf8AndReplacesWhatIsNot) {
  // Valid: 2, 3 and 4 bytes, the edges of each range.
  for (const char* s :
       {"caf\xC3\xA9", "\xE2\x82\xAC", "\xF0\x9F\x93\xA7", "\xC2\x80",
        "\xDF\xBF", "\xE0\xA0\x80", "\xED\x9F\xBF", "\xEE\x80\x80",
        "\xF0\x90\x80\x80", "\xF4\x8F\xBF\xBF"}) {
    EXPECT_EQ(Ours(s), absl::StrCat("\"", s, "\"")) << s;
  }
  // Invalid: overlong, surrogate, past U+10FFFF, stray continuation,
  // truncated (in the middle and at the end), never-lead bytes.
  for (const char* s :
       {"\xC0\xAF", "\xE0\x80\xAF", "\xED\xA0\x80", "\xF4\x90\x80\x80", "\x80",
        "a\xBF"
        "b",
        "\xE2\x82"
        "x",
        "\xE2\x82", "\xF0\x9F\x93", "\xFE\xFF", "\xC3"}) {
    std::string out = Ours(s);
    EXPECT_EQ(out, Nlohmann(s)) << s;
    EXPECT_NE(out.find("\xEF\xBF\xBD"), std::string::npos) << s;
  }
}

TEST(JsonString, RandomBytesMatchNlohmannAndParse) {
  // Bytes drawn mostly from the interesting ones: quotes, controls, UTF-8
  // leads of every length and continuations.
  const unsigned char pool[] = {'a',  '"',  '\\', '\n', 0x00, 0x1F, 0x7F, 0x80,
                                0x8F, 0x90, 0x9F, 0xA0, 0xBF, 0xC0, 0xC2, 0xDF,
                                0xE0, 0xED, 0xEF, 0xF0, 0xF4, 0xF5, 0xFF};
  std::mt19937 rng(7);
  for (int round = 0; round < 200000; ++round) {
    std::string s(rng() % 12, ' ');
    for (char& c : s) {
      c = rng() % 4 == 0 ? static_cast<char>(rng() % 256)
                         : static_cast<char>(pool[rng() % sizeof(pool)]);
    }
    std::string out = Ours(s);
    ASSERT_EQ(out, Nlohmann(s)) << testing::PrintToString(s);
    ASSERT_NO_THROW(nlohmann::json::parse(out)) << out;
  }
}

TEST(JsonWriter, PlacesCommas) {
  std::string out;
  JsonWriter j(&out);
  j.BeginObject()
      .Key("a")
      .Int(-3)
      .Key("b")
      .BeginArray()
      .String("x")
      .Null()
      .Bool(true)
      .BeginObject()
      .EndObject()
      .EndArray()
      .Key("c")
      .StringOrNull("")
      .Key("d")
      .StringOrNull("y")
      .Key("e")
      .BeginObject()
      .Key("f")
      .Bool(false)
      .EndObject()
      .Key("g")
      .IntOrNull(0)
      .Key("h")
      .IntOrNull(5)
      .EndObject();
  EXPECT_EQ(
      out,
      R"({"a":-3,"b":["x",null,true,{}],"c":null,"d":"y","e":{"f":false},"g":null,"h":5})");
  EXPECT_NO_THROW(nlohmann::json::parse(out));
}

}  // namespace
}  // namespace peregrine::outcome
