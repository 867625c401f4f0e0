// Webhook against a loopback HTTP receiver of the test's own: batches in
// order, signed; a receiver answering 500 then recovering gets every event
// at least once and in order; a receiver that is down costs at most
// max_held events of memory; stopping is bounded by the grace.
#include "mta/outcome/webhook.h"

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <map>
#include <mutex>
#include <thread>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace peregrine::outcome {
namespace {

struct Request {
  std::map<std::string, std::string> headers;  // Lower-case names.
  std::string body;
};

// Answers each POST with the next status of `script` (then 200s).
class Receiver {
 public:
  explicit Receiver(std::vector<int> script) : script_(std::move(script)) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(::bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
    socklen_t len = sizeof(a);
    ::getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len);
    port_ = ntohs(a.sin_port);
    ::listen(fd_, 16);
    thread_ = std::thread([this] { Serve(); });
  }
  ~Receiver() {
    ::shutdown(fd_, SHUT_RDWR);
    ::close(fd_);
    thread_.join();
  }
  std::string url() const {
    return absl::StrCat("http://127.0.0.1:", port_, "/hook");
  }
  std::vector<Request> requests() {
    std::lock_guard<std::mutex> lock(mu_);
    return requests_;
  }
  // The requests answered 2xx, their events in order.
  std::vector<nlohmann::json> accepted() {
    std::lock_guard<std::mutex> lock(mu_);
    return accepted_;
  }
  bool WaitAccepted(size_t n, absl::Duration timeout = absl::Seconds(20)) {
    absl::Time deadline = absl::Now() + timeout;
    while (accepted().size() < n && absl::Now() < deadline) {
      absl::SleepFor(absl::Milliseconds(10));
    }
    return accepted().size() >= n;
  }

 private:
  void Serve() {
    for (;;) {
      int c = ::accept(fd_, nullptr, nullptr);
      if (c < 0) return;
      std::string in;
      char buf[65536];
      size_t end = std::string::npos, length = 0;
      while (true) {
        ssize_t n = ::recv(c, buf, sizeof(buf), 0);
        if (n <= 0) break;
        in.append(buf, static_cast<size_t>(n));
        if (end == std::string::npos) {
          end = in.find("\r\n\r\n");
          if (end == std::string::npos) continue;
        }
        Request r = Parse(in.substr(0, end));
        absl::SimpleAtoi(r.headers["content-length"], &length);
        if (in.size() >= end + 4 + length) break;
      }
      Request r = Parse(in.substr(0, end));
      r.body = in.substr(end + 4);
      int status = 200;
      {
        std::lock_guard<std::mutex> lock(mu_);
        if (next_ < script_.size()) status = script_[next_++];
        requests_.push_back(r);
        if (status == 200) {
          for (const auto& e : nlohmann::json::parse(r.body)) {
            accepted_.push_back(e);
          }
        }
      }
      std::string answer = absl::StrCat("HTTP/1.1 ", status,
                                        " X\r\nContent-Length: 2\r\n"
                                        "Connection: close\r\n\r\nok");
      ::send(c, answer.data(), answer.size(), MSG_NOSIGNAL);
      ::close(c);
    }
  }
  static Request Parse(const std::string& head) {
    Request r;
    for (absl::string_view line : absl::StrSplit(head, "\r\n")) {
      size_t colon = line.find(':');
      if (colon == absl::string_view::npos) continue;
      r.headers[absl::AsciiStrToLower(line.substr(0, colon))] =
          std::string(absl::StripAsciiWhitespace(line.substr(colon + 1)));
    }
    return r;
  }

  std::vector<int> script_;
  size_t next_ = 0;
  std::mutex mu_;
  std::vector<Request> requests_;
  std::vector<nlohmann::json> accepted_;
  int fd_ = -1;
  int port_ = 0;
  std::thread thread_;
};

Outcome Delivered(int i) {
  Outcome o;
  o.kind = Kind::kDelivered;
  o.time = absl::Now();
  o.id = static_cast<queue::MessageId>(1000 + i / 3);
  o.recipient = absl::StrCat("r", i, "@example.com");
  o.reply = Reply{250, "2.0.0", "ok"};
  return o;
}

WebhookOptions Options(const std::string& url) {
  WebhookOptions o;
  o.name = "test";
  o.url = url;
  o.secret = "a-secret-of-sixteen+";
  o.batch = 100;
  o.flush_every = absl::Milliseconds(50);
  o.backoff_first = absl::Milliseconds(50);
  o.stop_grace = absl::Seconds(1);
  return o;
}

TEST(Webhook, BatchesInOrderSignedWithHmac) {
  Receiver receiver({});
  auto hook = *Webhook::Create(Options(receiver.url()));
  for (int i = 0; i < 250; ++i) hook->OnOutcome(Delivered(i));
  ASSERT_TRUE(receiver.WaitAccepted(250));
  auto events = receiver.accepted();
  for (int i = 0; i < 250; ++i) {
    EXPECT_EQ(events[i]["recipient"], absl::StrCat("r", i, "@example.com"));
    EXPECT_EQ(events[i]["type"], "delivered");
  }
  auto requests = receiver.requests();
  ASSERT_GE(requests.size(), 3u);
  EXPECT_EQ(nlohmann::json::parse(requests[0].body).size(), 100u);
  for (const Request& r : requests) {
    int64_t ts = 0;
    ASSERT_TRUE(absl::SimpleAtoi(r.headers.at("x-peregrine-timestamp"), &ts));
    EXPECT_EQ(r.headers.at("x-peregrine-signature"),
              Webhook::Sign("a-secret-of-sixteen+", ts, r.body));
    EXPECT_EQ(r.headers.at("content-type"), "application/json");
  }
  // A known answer, for receivers to check their own code against.
  EXPECT_EQ(Webhook::Sign("key", 1, "[]"),
            "sha256=74844a5a51cfee4367dd6f6d7903d46a076eb27921483686e5a7cac9"
            "8f726d1c")
      << "HMAC-SHA256(\"key\", \"1.[]\"), as openssl dgst -hmac says";
  EXPECT_EQ(hook->sent(), 250u);
  EXPECT_EQ(hook->dropped(), 0u);
}

TEST(Webhook, AReceiverThatFailsThenRecoversGetsEverythingInOrder) {
  Receiver receiver({500, 500, 503});
  auto hook = *Webhook::Create(Options(receiver.url()));
  for (int i = 0; i < 150; ++i) hook->OnOutcome(Delivered(i));
  ASSERT_TRUE(receiver.WaitAccepted(150));
  auto events = receiver.accepted();
  ASSERT_EQ(events.size(), 150u);  // Refused batches were not counted.
  for (int i = 0; i < 150; ++i) {
    EXPECT_EQ(events[i]["recipient"], absl::StrCat("r", i, "@example.com"));
  }
  auto requests = receiver.requests();
  // The refused batch went again unchanged, under the same number.
  ASSERT_GE(requests.size(), 5u);
  EXPECT_EQ(requests[0].body, requests[3].body);
  EXPECT_EQ(requests[0].headers.at("x-peregrine-batch"),
            requests[3].headers.at("x-peregrine-batch"));
  EXPECT_NE(requests[3].headers.at("x-peregrine-batch"),
            requests[4].headers.at("x-peregrine-batch"));
  EXPECT_EQ(hook->failures(), 3u);
}

TEST(Webhook, AReceiverThatIsDownHoldsAtMostMaxHeld) {
  WebhookOptions o = Options("http://127.0.0.1:1/down");
  o.max_held = 10;
  o.backoff_first = absl::Seconds(30);
  auto hook = *Webhook::Create(o);
  for (int i = 0; i < 100; ++i) hook->OnOutcome(Delivered(i));
  EXPECT_EQ(hook->held(), 10u);
  EXPECT_EQ(hook->dropped(), 90u);
  // Stopping: one more try within the grace, then the rest is dropped.
  absl::Time start = absl::Now();
  hook.reset();
  EXPECT_LT(absl::Now() - start, absl::Seconds(5));
}

TEST(Webhook, FiltersByTypeAndSkipsParkedRecipients) {
  Receiver receiver({});
  WebhookOptions o = Options(receiver.url());
  o.kinds = {Kind::kFailed};
  auto hook = *Webhook::Create(o);
  hook->OnOutcome(Delivered(1));
  Outcome failed = Delivered(2);
  failed.kind = Kind::kFailed;
  hook->OnOutcome(failed);
  ASSERT_TRUE(receiver.WaitAccepted(1));
  absl::SleepFor(absl::Milliseconds(200));
  ASSERT_EQ(receiver.accepted().size(), 1u);
  EXPECT_EQ(receiver.accepted()[0]["type"], "failed");

  WebhookOptions all = Options(receiver.url());
  auto every = *Webhook::Create(all);
  Outcome parked = Delivered(3);
  parked.kind = Kind::kDeferred;
  parked.attempted = false;
  every->OnOutcome(parked);
  EXPECT_EQ(every->held(), 0u);
}

TEST(Webhook, BadOptionsAreRefused) {
  WebhookOptions o = Options("ftp://example.com/");
  EXPECT_TRUE(absl::IsInvalidArgument(Webhook::Create(o).status()));
  o = Options("http://127.0.0.1:1/");
  o.secret.clear();
  EXPECT_TRUE(absl::IsInvalidArgument(Webhook::Create(o).status()));
}

}  // namespace
}  // namespace peregrine::outcome
