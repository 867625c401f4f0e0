// AdminApi's answers without sockets, and the outcome metrics it renders.
#include "mta/admin.h"

#include <string>

#include "absl/strings/match.h"
#include "gtest/gtest.h"

namespace peregrine {
namespace {

http::Request Get(std::string path, std::string method = "GET") {
  http::Request r;
  r.method = std::move(method);
  r.target = r.path = std::move(path);
  return r;
}

int Status(const std::string& response) {
  return std::stoi(response.substr(9, 3));
}

TEST(AdminApi, RoutesMethodsAndHead) {
  AdminOptions options;
  bool ready = true;
  options.ready = [&](std::string* why) {
    *why = "draining";
    return ready;
  };
  AdminApi api(std::move(options));
  EXPECT_EQ(Status(api.Handle(Get("/livez"), true)), 200);
  EXPECT_EQ(Status(api.Handle(Get("/readyz"), true)), 200);
  ready = false;
  std::string not_ready = api.Handle(Get("/readyz"), true);
  EXPECT_EQ(Status(not_ready), 503);
  EXPECT_TRUE(absl::StrContains(not_ready, "draining"));
  EXPECT_EQ(Status(api.Handle(Get("/api/v1/queue"), true)), 404);
  std::string post = api.Handle(Get("/metrics", "POST"), true);
  EXPECT_EQ(Status(post), 405);
  EXPECT_TRUE(absl::StrContains(post, "Allow: GET, HEAD\r\n"));
  std::string head = api.Handle(Get("/livez", "HEAD"), true);
  EXPECT_EQ(Status(head), 200);
  EXPECT_TRUE(absl::EndsWith(head, "\r\n\r\n"));
}

TEST(AdminApi, TokensOffLoopback) {
  AdminOptions options;
  options.tokens = {"0123456789abcdef0123"};
  AdminApi api(std::move(options));
  http::Request r = Get("/metrics");
  EXPECT_EQ(Status(api.Handle(r, true)), 200);  // Loopback: none asked.
  std::string refused = api.Handle(r, false);
  EXPECT_EQ(Status(refused), 401);
  EXPECT_TRUE(absl::StrContains(refused, "WWW-Authenticate: Bearer"));
  r.headers = {{"Authorization", "Bearer 0123456789abcdef012"}};
  EXPECT_EQ(Status(api.Handle(r, false)), 401);  // A prefix is not it.
  r.headers = {{"authorization", "Bearer 0123456789abcdef0123"}};
  EXPECT_EQ(Status(api.Handle(r, false)), 200);
  r.headers = {{"Authorization", "Basic 0123456789abcdef0123"}};
  EXPECT_EQ(Status(api.Handle(r, false)), 401);
  // Probes are open everywhere; so is the page at /, which holds no data
  // (it fetches /api/v1/status, which needs the token).
  EXPECT_EQ(Status(api.Handle(Get("/livez"), false)), 200);
  EXPECT_EQ(Status(api.Handle(Get("/"), false)), 200);
  EXPECT_EQ(Status(api.Handle(Get("/api/v1/status"), false)), 401);
  EXPECT_EQ(Status(api.Handle(Get("/api/v1/queue/messages/01"), false)), 401);
}

TEST(Metrics, TroubledSitesSayTheLastProblemAndWhatToDo) {
  outcome::Metrics m;
  outcome::Outcome o;
  o.kind = outcome::Kind::kDeferred;
  o.site = "mx.blocked.test";
  o.reply = Reply{451, "4.4.1",
                  "connect to mx.blocked.test:25: Connection timed out"};
  m.OnOutcome(o);
  m.OnOutcome(o);
  o.kind = outcome::Kind::kDelivered;
  o.site = "mx.fine.test";
  o.reply = Reply{250, "2.0.0", "ok"};
  m.OnOutcome(o);
  nlohmann::json s = m.Status();
  ASSERT_EQ(s["troubled_sites"].size(), 1u);
  const nlohmann::json& t = s["troubled_sites"][0];
  EXPECT_EQ(t["site"], "mx.blocked.test");
  EXPECT_EQ(t["deferred"], 2);
  EXPECT_TRUE(absl::StrContains(t["last_problem"].get<std::string>(),
                                "Connection timed out"));
  EXPECT_TRUE(absl::StrContains(t["advice"].get<std::string>(),
                                "port 25 seems blocked"));
  EXPECT_FALSE(s["busiest_sites"][1].contains("last_problem"));
}

TEST(Metrics, CountsOutcomesWithBoundedLabels) {
  outcome::Metrics m;
  outcome::Outcome o;
  o.kind = outcome::Kind::kReceived;
  o.listener = "relay";
  m.OnOutcome(o);
  m.OnOutcome(o);
  o.kind = outcome::Kind::kDelivered;
  o.site = "mx.\"odd\"\\site\n";
  m.OnOutcome(o);
  o.kind = outcome::Kind::kDeferred;
  o.attempted = false;  // Held: not an attempt.
  m.OnOutcome(o);
  for (size_t i = 0; i < outcome::Metrics::kMaxSites + 50; ++i) {
    o.kind = outcome::Kind::kFailed;
    o.attempted = true;
    o.site = "site" + std::to_string(i);
    o.category = bounce::Category::kInvalidRecipient;
    m.OnOutcome(o);
  }
  o = outcome::Outcome();
  o.kind = outcome::Kind::kDelivered;
  o.site = "mx.example";
  o.tls = outcome::Tls{"TLSv1.3", "TLS_AES_256_GCM_SHA384", true};
  m.OnOutcome(o);
  std::string text = m.Render("x_extra 1\n");
  EXPECT_TRUE(absl::StrContains(
      text, "peregrine_tls_total{direction=\"in\",version=\"none\"} 2\n"));
  EXPECT_TRUE(absl::StrContains(
      text, "peregrine_tls_total{direction=\"out\",version=\"TLSv1.3\"} 1\n"));
  EXPECT_TRUE(absl::StrContains(
      text, "peregrine_messages_received_total{listener=\"relay\"} 2\n"));
  EXPECT_TRUE(absl::StrContains(
      text,
      "peregrine_recipients_total{outcome=\"delivered\",site=\"mx.\\\"odd\\\""
      "\\\\site\\n\",category=\"\"} 1\n"));
  EXPECT_FALSE(absl::StrContains(text, "outcome=\"deferred\""));
  EXPECT_TRUE(absl::StrContains(
      text,
      "peregrine_recipients_total{outcome=\"failed\",site=\"other\","
      "category=\"invalid_recipient\"} 51\n"));
  EXPECT_TRUE(absl::EndsWith(text, "x_extra 1\n"));
}

}  // namespace
}  // namespace peregrine
