#include "mta/outcome/event_log.h"

#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace peregrine::outcome {
namespace {

absl::Time At() {
  return absl::FromUnixMillis(1795780800123);  // 2026-11-27T12:00:00.123Z
}

Outcome Delivered() {
  Outcome o;
  o.kind = Kind::kDelivered;
  o.time = At();
  o.id = 0x1a2b;
  o.sender = "news@shop.example";
  o.recipient = "ann@example.com";
  o.size = 2048;
  o.tenant = "shop";
  o.campaign = "black-friday";
  o.site = "mx.example.net";
  o.mx = "mx1.example.net";
  o.ip = "192.0.2.7";
  o.source = "ip1";
  o.tls = Tls{"TLSv1.3", "TLS_AES_256_GCM_SHA384", true};
  o.reply = Reply{250, "2.0.0", "Ok: queued as 4XYZ"};
  o.attempt = 1;
  o.queue_time = absl::Milliseconds(1534);
  return o;
}

std::string Read(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

std::vector<std::string> Lines(const std::string& text) {
  return absl::StrSplit(text, '\n', absl::SkipEmpty());
}

TEST(EventLogJson, Delivered) {
  EXPECT_EQ(
      EventLog::ToJson(Delivered()),
      R"({"time":"2026-11-27T12:00:00.123Z","type":"delivered","id":"0000000000001A2B",)"
      R"("sender":"news@shop.example","recipient":"ann@example.com","recipients":null,)"
      R"("site":"mx.example.net","mx":"mx1.example.net","ip":"192.0.2.7","source":"ip1",)"
      R"("tls":{"version":"TLSv1.3","cipher":"TLS_AES_256_GCM_SHA384","verified":true},"tls_policy":null,"tls_failure":null,)"
      R"("code":250,"enhanced":"2.0.0","reply":"Ok: queued as 4XYZ","reason":null,)"
      R"("category":null,"attempt":1,"next_attempt":null,"queue_time_ms":1534,"size":2048,)"
      R"("tags":{"tenant":"shop","campaign":"black-friday"},"client":null,)"
      R"("helo":null,"auth_user":null,"listener":null})");
}

TEST(EventLogJson, Deferred) {
  Outcome o = Delivered();
  o.kind = Kind::kDeferred;
  o.tls.reset();
  o.source.clear();
  o.tenant.clear();
  o.campaign.clear();
  o.reply = Reply{451, "4.7.1", "greylisted"};
  o.attempt = 2;
  o.next_attempt = At() + absl::Minutes(10);
  o.category = bounce::Category::kRateLimited;
  EXPECT_EQ(
      EventLog::ToJson(o),
      R"({"time":"2026-11-27T12:00:00.123Z","type":"deferred","id":"0000000000001A2B",)"
      R"("sender":"news@shop.example","recipient":"ann@example.com","recipients":null,)"
      R"("site":"mx.example.net","mx":"mx1.example.net","ip":"192.0.2.7","source":null,)"
      R"("tls":null,"tls_policy":null,"tls_failure":null,"code":451,"enhanced":"4.7.1","reply":"greylisted","reason":null,)"
      R"("category":"rate_limited","attempt":2,"next_attempt":"2026-11-27T12:10:00.123Z","queue_time_ms":1534,)"
      R"("size":2048,"tags":{},"client":null,"helo":null,"auth_user":null,"listener":null})");
}

TEST(EventLogJson, FailedAndExpired) {
  Outcome o = Delivered();
  o.kind = Kind::kFailed;
  o.reply = Reply{550, "5.1.1", "no such user"};
  o.category = bounce::Category::kInvalidRecipient;
  nlohmann::json j = nlohmann::json::parse(EventLog::ToJson(o));
  EXPECT_EQ(j["category"], "invalid_recipient");
  EXPECT_EQ(j["type"], "failed");
  EXPECT_EQ(j["code"], 550);
  EXPECT_EQ(j["enhanced"], "5.1.1");
  EXPECT_EQ(j["reply"], "no such user");
  o.kind = Kind::kExpired;
  o.reason = "expired after 9 attempts over 5d";
  j = nlohmann::json::parse(EventLog::ToJson(o));
  EXPECT_EQ(j["type"], "expired");
  EXPECT_EQ(j["reason"], "expired after 9 attempts over 5d");
}

TEST(EventLogJson, Received) {
  Outcome o;
  o.kind = Kind::kReceived;
  o.time = At();
  o.id = 7;
  o.sender = "";  // The null sender.
  o.recipients = {"a@x.example", "b@y.example"};
  o.size = 900;
  o.client = "203.0.113.9";
  o.helo = "app.example";
  o.auth_user = "app";
  o.listener = "submission";
  o.tls = Tls{"TLSv1.3", "TLS_AES_128_GCM_SHA256", false};
  o.reply = Reply{250, "2.0.0", "queued as 0000000000000007"};
  EXPECT_EQ(
      EventLog::ToJson(o),
      R"({"time":"2026-11-27T12:00:00.123Z","type":"received","id":"0000000000000007",)"
      R"("sender":"","recipient":null,"recipients":["a@x.example","b@y.example"],)"
      R"("site":null,"mx":null,"ip":null,"source":null,)"
      R"("tls":{"version":"TLSv1.3","cipher":"TLS_AES_128_GCM_SHA256","verified":false},"tls_policy":null,"tls_failure":null,)"
      R"("code":250,"enhanced":"2.0.0","reply":"queued as 0000000000000007","reason":null,)"
      R"("category":null,"attempt":null,"next_attempt":null,"queue_time_ms":null,"size":900,"tags":{},)"
      R"("client":"203.0.113.9","helo":"app.example","auth_user":"app","listener":"submission"})");
}

TEST(EventLogJson, Rejected) {
  Outcome o;
  o.kind = Kind::kRejected;
  o.time = At();
  o.client = "198.51.100.4";
  o.helo = "spammer";
  o.recipient = "victim@elsewhere.example";
  o.listener = "relay";
  o.reply =
      Reply{554, "5.7.1", "<victim@elsewhere.example>: Relay access denied"};
  o.reason = "not in relay.trusted_networks";
  EXPECT_EQ(
      EventLog::ToJson(o),
      R"({"time":"2026-11-27T12:00:00.123Z","type":"rejected","id":null,"sender":null,)"
      R"("recipient":"victim@elsewhere.example","recipients":null,"site":null,"mx":null,)"
      R"("ip":null,"source":null,"tls":null,"tls_policy":null,"tls_failure":null,"code":554,"enhanced":"5.7.1",)"
      R"("reply":"<victim@elsewhere.example>: Relay access denied",)"
      R"("reason":"not in relay.trusted_networks","category":null,"attempt":null,)"
      R"("next_attempt":null,)"
      R"("queue_time_ms":null,"size":null,"tags":{},"client":"198.51.100.4",)"
      R"("helo":"spammer","auth_user":null,"listener":"relay"})");
}

TEST(EventLogJson, BytesThatAreNotUtf8StillParse) {
  Outcome o = Delivered();
  o.reply.text = std::string("bad \xff\xfe bytes \"quoted\"\r\n");
  std::string line = EventLog::ToJson(o);
  EXPECT_EQ(line.find('\n'), std::string::npos);
  nlohmann::json j = nlohmann::json::parse(line);
  EXPECT_EQ(j["reply"], "bad \xEF\xBF\xBD\xEF\xBF\xBD bytes \"quoted\"\r\n");
}

class EventLogFile : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = absl::StrCat(::testing::TempDir(), "/events-", getpid(), "-",
                        ::testing::UnitTest::GetInstance()->random_seed(), "-",
                        counter_++);
    ASSERT_EQ(::mkdir(dir_.c_str(), 0700), 0);
    path_ = dir_ + "/events.json";
  }
  std::string dir_;
  std::string path_;
  static inline int counter_ = 0;
};

TEST_F(EventLogFile, WritesEveryShardsEventsAsLines) {
  EventLogOptions options;
  options.path = path_;
  options.shards = 4;
  auto log = EventLog::Open(options);
  ASSERT_TRUE(log.ok()) << log.status();
  for (int i = 0; i < 1000; ++i) {
    Outcome o = Delivered();
    o.shard = i % 5 - 1;  // -1 (not a shard) .. 3.
    o.id = static_cast<queue::MessageId>(i + 1);
    (*log)->OnOutcome(o);
  }
  (*log)->Flush();
  std::vector<std::string> lines = Lines(Read(path_));
  ASSERT_EQ(lines.size(), 1000u);
  for (const std::string& line : lines) {
    EXPECT_EQ(nlohmann::json::parse(line)["type"], "delivered");
  }
  EXPECT_EQ((*log)->written(), 1000u);
  EXPECT_EQ((*log)->dropped(), 0u);
}

// A suspended site parks its recipients again every minute: a line for
// each would be a million lines a minute for a million held, rotating
// every useful line away. Attempted deferrals are written as ever.
TEST_F(EventLogFile, RecipientsHeldUnattemptedGetNoLine) {
  EventLogOptions options;
  options.path = path_;
  auto log = EventLog::Open(options);
  ASSERT_TRUE(log.ok()) << log.status();
  Outcome held = Delivered();
  held.kind = Kind::kDeferred;
  held.reply = Reply{451, "4.4.5", "delivery to this site is suspended (held)"};
  held.attempted = false;
  (*log)->OnOutcome(held);
  Outcome deferred = held;
  deferred.attempted = true;
  deferred.reply = Reply{451, "4.7.1", "greylisted"};
  (*log)->OnOutcome(deferred);
  (*log)->Flush();
  std::vector<std::string> lines = Lines(Read(path_));
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_EQ(nlohmann::json::parse(lines[0])["reply"], "greylisted");
  EXPECT_EQ((*log)->written(), 1u);
}

TEST_F(EventLogFile, ATornLastLineFromACrashIsCutAtOpen) {
  // What a kill -9 in the middle of a write leaves: two whole lines and
  // the start of a third.
  std::string whole = EventLog::ToJson(Delivered()) + "\n";
  {
    std::ofstream f(path_, std::ios::binary);
    f << whole << whole << whole.substr(0, 40);
  }
  EventLogOptions options;
  options.path = path_;
  auto log = EventLog::Open(options);
  ASSERT_TRUE(log.ok()) << log.status();
  (*log)->OnOutcome(Delivered());
  (*log)->Flush();
  std::vector<std::string> lines = Lines(Read(path_));
  ASSERT_EQ(lines.size(), 3u);
  for (const std::string& line : lines) {
    EXPECT_EQ(nlohmann::json::parse(line)["type"], "delivered");
  }
}

TEST_F(EventLogFile, RotatesBySizeAndKeepsSoMany) {
  EventLogOptions options;
  options.path = path_;
  options.max_size = 4096;
  options.keep = 2;
  auto log = EventLog::Open(options);
  ASSERT_TRUE(log.ok());
  size_t line = EventLog::ToJson(Delivered()).size() + 1;
  int total = 0;
  for (int round = 0; round < 6; ++round) {
    for (size_t i = 0; i < 4096 / line; ++i, ++total) {
      (*log)->OnOutcome(Delivered());
    }
    (*log)->Flush();  // One batch each: each fills a file.
  }
  EXPECT_EQ((*log)->written(), static_cast<uint64_t>(total));
  struct stat st;
  ASSERT_EQ(::stat(path_.c_str(), &st), 0);
  EXPECT_LE(st.st_size, 4096);
  EXPECT_EQ(::stat((path_ + ".1").c_str(), &st), 0);
  EXPECT_EQ(::stat((path_ + ".2").c_str(), &st), 0);
  EXPECT_NE(::stat((path_ + ".3").c_str(), &st), 0);  // Only `keep` kept.
  for (const std::string& p : {path_, path_ + ".1", path_ + ".2"}) {
    for (const std::string& l : Lines(Read(p))) {
      EXPECT_NO_THROW(nlohmann::json::parse(l)) << p;
    }
  }
}

TEST_F(EventLogFile, ReopenFollowsLogrotate) {
  EventLogOptions options;
  options.path = path_;
  auto log = EventLog::Open(options);
  ASSERT_TRUE(log.ok());
  (*log)->OnOutcome(Delivered());
  (*log)->Flush();
  // logrotate moves the file away, then signals.
  ASSERT_EQ(::rename(path_.c_str(), (path_ + ".old").c_str()), 0);
  (*log)->OnOutcome(Delivered());
  (*log)->Flush();  // Still the old file, until told.
  (*log)->Reopen();
  (*log)->OnOutcome(Delivered());
  (*log)->Flush();
  EXPECT_EQ(Lines(Read(path_ + ".old")).size(), 2u);
  EXPECT_EQ(Lines(Read(path_)).size(), 1u);
}

TEST_F(EventLogFile, AFullDiskDropsAndCountsWithoutBlocking) {
  // /dev/full answers every write with ENOSPC.
  EventLogOptions options;
  options.path = "/dev/full";
  auto log = EventLog::Open(options);
  ASSERT_TRUE(log.ok()) << log.status();
  absl::Time start = absl::Now();
  for (int i = 0; i < 500; ++i) (*log)->OnOutcome(Delivered());
  EXPECT_LT(absl::Now() - start, absl::Seconds(2));
  (*log)->Flush();
  EXPECT_EQ((*log)->dropped(), 500u);
  EXPECT_EQ((*log)->written(), 0u);
}

TEST_F(EventLogFile, AStuckWriterNeverHoldsUpTheCaller) {
  // More than the buffer holds, faster than any writer: the excess is
  // dropped and counted, the rest written, and OnOutcome never waits.
  EventLogOptions options;
  options.path = path_;
  options.flush_every = absl::Seconds(30);
  auto log = EventLog::Open(options);
  ASSERT_TRUE(log.ok());
  Outcome big = Delivered();
  big.reply.text = std::string(60 * 1024, 'x');
  for (int i = 0; i < 400; ++i) (*log)->OnOutcome(big);  // ~24 MiB.
  (*log)->Flush();
  EXPECT_EQ((*log)->written() + (*log)->dropped(), 400u);
  EXPECT_EQ(Lines(Read(path_)).size(), (*log)->written());
}

TEST_F(EventLogFile, AnUnwritablePathIsAnErrorAtOpen) {
  EventLogOptions options;
  options.path = dir_ + "/no/such/folder/events.json";
  auto log = EventLog::Open(options);
  ASSERT_FALSE(log.ok());
  EXPECT_NE(log.status().message().find("events.path"), std::string::npos);
  EXPECT_NE(log.status().message().find("no/such/folder"), std::string::npos);
}

}  // namespace
}  // namespace peregrine::outcome
