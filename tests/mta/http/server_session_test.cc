#include "mta/http/server_session.h"

#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace peregrine::http {
namespace {

// Feeds `bytes` in pieces of `step` (0: all at once) and takes every
// request, as a driver does: take, then resume with an empty Feed().
std::vector<Request> All(ServerSession& s, absl::string_view bytes,
                         size_t step = 0) {
  std::vector<Request> out;
  auto drain = [&] {
    while (auto r = s.Next()) {
      out.push_back(std::move(*r));
      s.Feed("");
    }
  };
  if (step == 0) step = bytes.size();
  for (size_t at = 0; at < bytes.size(); at += step) {
    if (!s.Feed(bytes.substr(at, step))) return out;
    drain();
  }
  return out;
}

TEST(HttpServerSession, AGetWithHeadersAndQuery) {
  ServerSession s;
  auto r = All(s,
               "GET /api/v1/queue?site=gmail HTTP/1.1\r\nHost: x\r\n"
               "Authorization: Bearer abc\r\n\r\n");
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].method, "GET");
  EXPECT_EQ(r[0].target, "/api/v1/queue?site=gmail");
  EXPECT_EQ(r[0].path, "/api/v1/queue");
  EXPECT_EQ(r[0].query, "site=gmail");
  EXPECT_EQ(r[0].Header("authorization"), "Bearer abc");
  EXPECT_FALSE(r[0].Header("Cookie").has_value());
  EXPECT_TRUE(r[0].keep_alive);
  EXPECT_FALSE(s.in_request());
  EXPECT_EQ(s.error(), 0);
}

TEST(HttpServerSession, KeepAliveFollowsTheVersionAndConnection) {
  ServerSession a;
  EXPECT_FALSE(
      All(a, "GET / HTTP/1.1\r\nConnection: close\r\n\r\n")[0].keep_alive);
  ServerSession b;
  EXPECT_FALSE(All(b, "GET / HTTP/1.0\r\n\r\n")[0].keep_alive);
  ServerSession c;
  EXPECT_TRUE(
      All(c, "GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")[0].keep_alive);
}

TEST(HttpServerSession, BodiesByLengthAndChunked) {
  ServerSession s;
  auto r = All(s,
               "POST /a HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello"
               "POST /b HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
               "3\r\nabc\r\n4;ext=1\r\ndefg\r\n0\r\nTrailer: x\r\n\r\n");
  ASSERT_EQ(r.size(), 2u);
  EXPECT_EQ(r[0].body, "hello");
  EXPECT_EQ(r[1].path, "/b");
  EXPECT_EQ(r[1].body, "abcdefg");
}

TEST(HttpServerSession, PipelinedRequestsWaitUntilTheFirstIsTaken) {
  ServerSession s;
  ASSERT_TRUE(s.Feed("GET /1 HTTP/1.1\r\n\r\nGET /2 HTTP/1.1\r\n\r\n"));
  // One at a time: the second stays unparsed while the first is held.
  EXPECT_GT(s.buffered(), 0u);
  auto first = s.Next();
  ASSERT_TRUE(first.has_value());
  EXPECT_EQ(first->path, "/1");
  EXPECT_FALSE(s.Next().has_value());
  ASSERT_TRUE(s.Feed(""));
  auto second = s.Next();
  ASSERT_TRUE(second.has_value());
  EXPECT_EQ(second->path, "/2");
  EXPECT_EQ(s.buffered(), 0u);
}

TEST(HttpServerSession, SplitAtEveryByteGivesTheSameRequests) {
  const std::string input =
      "POST /api/v1/inject HTTP/1.1\r\nHost: h\r\nContent-Type: "
      "application/json\r\nContent-Length: 11\r\n\r\n{\"a\": true}"
      "GET /metrics HTTP/1.1\r\nAccept: */*\r\n\r\n"
      "PUT /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
      "a\r\n0123456789\r\n1\r\nX\r\n0\r\n\r\n";
  ServerSession whole;
  auto want = All(whole, input);
  ASSERT_EQ(want.size(), 3u);
  for (size_t step = 1; step < input.size(); ++step) {
    ServerSession s;
    auto got = All(s, input, step);
    ASSERT_EQ(got.size(), 3u) << "step " << step;
    for (size_t i = 0; i < 3; ++i) {
      EXPECT_EQ(got[i].method, want[i].method) << step;
      EXPECT_EQ(got[i].target, want[i].target) << step;
      EXPECT_EQ(got[i].headers, want[i].headers) << step;
      EXPECT_EQ(got[i].body, want[i].body) << step;
    }
  }
  EXPECT_EQ(want[0].Header("content-type"), "application/json");
  EXPECT_EQ(want[2].body, "0123456789X");
}

TEST(HttpServerSession, HeadersPastTheLimitAre431) {
  ServerSession big;
  std::string huge = absl::StrCat(
      "GET / HTTP/1.1\r\nX-Big: ", std::string(20000, 'a'), "\r\n\r\n");
  EXPECT_FALSE(big.Feed(huge));
  EXPECT_EQ(big.error(), 431);
  ServerSession many;
  std::string lots = "GET / HTTP/1.1\r\n";
  for (int i = 0; i < 101; ++i) absl::StrAppend(&lots, "X-", i, ": v\r\n");
  lots += "\r\n";
  EXPECT_FALSE(many.Feed(lots));
  EXPECT_EQ(many.error(), 431);
  EXPECT_FALSE(many.Feed("GET / HTTP/1.1\r\n\r\n"));  // No more input.
  EXPECT_FALSE(many.Next().has_value());
}

TEST(HttpServerSession, ABodyPastTheLimitIs413BeforeItArrives) {
  Limits limits;
  limits.max_body = 100;
  ServerSession s(limits);
  EXPECT_FALSE(s.Feed("POST / HTTP/1.1\r\nContent-Length: 101\r\n\r\n"));
  EXPECT_EQ(s.error(), 413);
  ServerSession chunked(limits);
  std::string body = "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";
  for (int i = 0; i < 11; ++i) body += "a\r\n0123456789\r\n";
  EXPECT_FALSE(chunked.Feed(body));
  EXPECT_EQ(chunked.error(), 413);
}

TEST(HttpServerSession, MalformedInputIs400) {
  for (const char* bad : {
           "GARBAGE\r\n\r\n",
           "GET / HTTP/1.1\r\nNo colon here\r\n\r\n",
           "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
           "POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
           "GET / HTTP/1.1\r\nHost: a\rb\r\n\r\n",
       }) {
    ServerSession s;
    EXPECT_FALSE(s.Feed(bad)) << bad;
    EXPECT_EQ(s.error(), 400) << bad;
    EXPECT_FALSE(s.error_text().empty());
  }
}

TEST(HttpServerSession, OnlyHttp1IsServed) {
  ServerSession s;
  EXPECT_FALSE(s.Feed("GET / HTTP/9.9\r\n\r\n"));
  EXPECT_EQ(s.error(), 505);
}

TEST(HttpServerSession, AnUpgradeIsAnsweredAsPlainHttp) {
  ServerSession s;
  auto r =
      All(s,
          "GET /livez HTTP/1.1\r\nConnection: Upgrade, HTTP2-Settings\r\n"
          "Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA\r\n\r\n"
          "GET /readyz HTTP/1.1\r\n\r\n");
  ASSERT_EQ(r.size(), 2u);
  EXPECT_EQ(r[0].path, "/livez");
  EXPECT_EQ(r[1].path, "/readyz");
}

TEST(HttpServerSession, AHalfRequestIsInRequest) {
  ServerSession s;
  ASSERT_TRUE(s.Feed("GET / HT"));
  EXPECT_TRUE(s.in_request());
  EXPECT_FALSE(s.Next().has_value());
}

TEST(HttpResponse, StatusLineLengthAndConnection) {
  EXPECT_EQ(Response(200, "text/plain", "ok\n", true),
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
            "Content-Length: 3\r\nConnection: keep-alive\r\n\r\nok\n");
  std::string e = JsonError(404, "no such path: /x\xff", false);
  EXPECT_EQ(e.rfind("HTTP/1.1 404 Not Found\r\n", 0), 0u);
  EXPECT_NE(e.find("Connection: close\r\n"), std::string::npos);
  auto j = nlohmann::json::parse(e.substr(e.find("\r\n\r\n") + 4));
  EXPECT_EQ(j["error"]["code"], 404);
  EXPECT_EQ(j["error"]["message"], "no such path: /x\xef\xbf\xbd");
}

}  // namespace
}  // namespace peregrine::http
