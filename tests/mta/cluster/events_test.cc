// The events stream as XREAD hands it back: pauses and suppressions read,
// what is malformed skipped (its id still counted), a pause bounded.
#include "mta/cluster/events.h"

#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace peregrine::cluster {
namespace {

const absl::Time kNow = absl::FromUnixSeconds(1795848233);

RedisValue Str(std::string s) {
  RedisValue v;
  v.type = RedisValue::Type::kString;
  v.str = std::move(s);
  return v;
}

RedisValue Array(std::vector<RedisValue> e) {
  RedisValue v;
  v.type = RedisValue::Type::kArray;
  v.elements = std::move(e);
  return v;
}

RedisValue Entry(const std::string& id, std::vector<std::string> fields) {
  std::vector<RedisValue> kv;
  for (std::string& f : fields) kv.push_back(Str(std::move(f)));
  return Array({Str(id), Array(std::move(kv))});
}

RedisValue Xread(std::vector<RedisValue> entries) {
  return Array({Array({Str("peregrine:events"), Array(std::move(entries))})});
}

TEST(Events, ReadsPausesAndSuppressions) {
  delivery::Backoff b{absl::Minutes(5), 0.5, "421 slow down"};
  std::vector<std::string> pause =
      PauseFields("a", "smarthost", b, kNow + absl::Minutes(5));
  EventBatch batch =
      ParseEvents(Xread({Entry("1-0", pause),
                         Entry("2-0", {"t", "suppress", "n", "b", "v",
                                       "gone@example.test,,manual,,cli,,\n"}),
                         Entry("3-0", {"t", "unsuppress", "n", "b", "v",
                                       "back@example.test,tenant:acme"})}),
                  kNow);
  EXPECT_EQ(batch.last_id, "3-0");
  ASSERT_EQ(batch.events.size(), 3u);
  const ClusterEvent& p = batch.events[0];
  EXPECT_EQ(p.type, ClusterEvent::Type::kPause);
  EXPECT_EQ(p.node, "a");
  EXPECT_EQ(p.site, "smarthost");
  EXPECT_EQ(p.until, kNow + absl::Minutes(5));
  EXPECT_DOUBLE_EQ(p.backoff.rate_factor, 0.5);
  EXPECT_EQ(batch.events[1].entry.address, "gone@example.test");
  EXPECT_EQ(batch.events[2].type, ClusterEvent::Type::kUnsuppress);
  EXPECT_EQ(batch.events[2].entry.scope, "tenant:acme");
}

TEST(Events, SkipsWhatIsMalformedAndBoundsAPause) {
  EventBatch batch = ParseEvents(
      Xread({Entry("1-0", {"t", "pause", "n", "a", "site", "s", "until", "x",
                           "factor", "0.5"}),
             Entry("2-0", {"t", "suppress", "n", "a", "v", "not an address"}),
             Entry("3-0", {"t", "reboot", "n", "a"}),
             Entry("4-0", {"t", "pause", "n", "a", "site", "s", "until",
                           "99999999999999", "factor", "0"}),
             Entry("5-0", {"t", "pause", "n", "a", "site", "s", "until",
                           "99999999999999", "factor", "7", "odd"}),
             Array({Str("6-0")}), Str("junk")}),
      kNow);
  EXPECT_EQ(batch.last_id, "5-0");
  ASSERT_EQ(batch.events.size(), 1u);
  EXPECT_EQ(batch.events[0].until, kNow + kMaxPause);
  EXPECT_DOUBLE_EQ(batch.events[0].backoff.rate_factor, 1.0);
  // Nothing new (nil), or not an answer of XREAD's shape.
  EXPECT_TRUE(ParseEvents(RedisValue{}, kNow).events.empty());
  EXPECT_TRUE(ParseEvents(Str("OK"), kNow).events.empty());
  EXPECT_TRUE(ParseEvents(Array({Str("x")}), kNow).events.empty());
}

TEST(Resp, ReadsRepliesSplitAnywhereAndRefusesGarbage) {
  const std::string bytes = "*2\r\n$3\r\nfoo\r\n:42\r\n-ERR no\r\n$-1\r\n";
  for (size_t cut = 0; cut <= bytes.size(); ++cut) {
    RespReader r;
    ASSERT_TRUE(r.Feed(bytes.substr(0, cut)));
    std::vector<absl::StatusOr<std::optional<RedisValue>>> got;
    auto drain = [&] {
      while (true) {
        auto v = r.Next();
        if (v.ok() && !v->has_value()) return;
        got.push_back(std::move(v));
      }
    };
    drain();
    ASSERT_TRUE(r.Feed(bytes.substr(cut)));
    drain();
    ASSERT_EQ(got.size(), 3u) << cut;
    ASSERT_TRUE(got[0].ok());
    EXPECT_EQ((*got[0])->elements[1].integer, 42);
    EXPECT_FALSE(got[1].ok());
    EXPECT_EQ(got[1].status().message(), "redis: ERR no");
    EXPECT_EQ((*got[2])->type, RedisValue::Type::kNil);
  }
  // An array's header is not believed beyond kMaxElements (hiredis's own
  // functions would allocate its slots on the header alone).
  RespReader huge;
  ASSERT_TRUE(huge.Feed("*2000000000\r\n"));
  EXPECT_FALSE(huge.Next().ok());
  EXPECT_NE(huge.error().find("more than 65536 elements"), std::string::npos)
      << huge.error();
  // Nested values, an error inside an array (a value, not a failure).
  RespReader nested;
  ASSERT_TRUE(nested.Feed("*2\r\n*2\r\n:1\r\n$-1\r\n-ERR inner\r\n"));
  auto v = nested.Next();
  ASSERT_TRUE(v.ok() && v->has_value()) << v.status();
  ASSERT_EQ((*v)->elements.size(), 2u);
  EXPECT_EQ((*v)->elements[0].elements[0].integer, 1);
  EXPECT_EQ((*v)->elements[0].elements[1].type, RedisValue::Type::kNil);
  EXPECT_EQ((*v)->elements[1].str, "ERR inner");
  RespReader bad;
  bad.Feed("?what\r\n");
  EXPECT_FALSE(bad.Next().ok());
  EXPECT_FALSE(bad.error().empty());
  EXPECT_EQ(FormatCommand({"SET", std::string("a\0b", 3)}),
            std::string("*2\r\n$3\r\nSET\r\n$3\r\na\0b\r\n", 22));
}

}  // namespace
}  // namespace peregrine::cluster
