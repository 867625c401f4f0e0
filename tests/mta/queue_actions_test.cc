// Operators' retry, bounce and delete (mta/queue_actions.h) on a real
// queue: what the selection names and nothing else, outcomes on the bus,
// what delivery holds handed to it, and selections refused with a reason.
#include "mta/queue_actions.h"

#include <mutex>
#include <vector>

#include "gtest/gtest.h"
#include "mta/outcome/consumers.h"
#include "tests/queue/store_testing.h"

namespace peregrine {
namespace {

using queue::EnqueueSync;
using queue::Message;
using queue::MessageId;
using queue::RecipientState;

// Records every outcome (thread-safe, as a consumer must be).
class Recorder : public outcome::Consumer {
 public:
  void OnOutcome(const outcome::Outcome& o) override {
    std::lock_guard<std::mutex> lock(mu_);
    seen_.push_back(o);
  }
  std::vector<outcome::Outcome> seen() {
    std::lock_guard<std::mutex> lock(mu_);
    return seen_;
  }

 private:
  std::mutex mu_;
  std::vector<outcome::Outcome> seen_;
};

class QueueActionsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    queue::RocksStoreOptions o = queue::Options(queue::TempPath("actions"), 1);
    o.fresh_bytes = 0;  // Delivery finds mail by the scan alone.
    store_ = queue::OpenOrDie(o);
    recorder_ = std::make_unique<outcome::QueueRecorder>(store_.get());
    bus_.Attach(recorder_.get());
    bus_.Attach(&seen_);
    context_.store = store_.get();
    context_.outcomes = &bus_;
    context_.page = 2;  // Several pages for a handful of messages.
  }

  MessageId Enqueue(const std::string& campaign, int recipients) {
    std::vector<std::pair<std::string, uint16_t>> rcpts;
    for (int i = 0; i < recipients; ++i) {
      rcpts.push_back({absl::StrCat("u", i, "@", campaign, ".test"), 0});
    }
    queue::NewMessage m = Message(rcpts);
    m.envelope.campaign = campaign;
    return *EnqueueSync(*store_, std::move(m));
  }

  // Final recipients of `id` (0: the message is gone, all final).
  int Final(MessageId id) {
    auto m = store_->Read(id, false);
    if (!m.ok()) return -1;
    int n = 0;
    for (const auto& r : m->recipients) n += queue::IsFinal(r.state);
    return n;
  }

  QueueSelection Select(const std::string& json) {
    auto s = QueueSelection::FromJson(nlohmann::json::parse(json));
    EXPECT_TRUE(s.ok()) << s.status();
    return s.ok() ? *s : QueueSelection{};
  }

  std::unique_ptr<queue::RocksStore> store_;
  std::unique_ptr<outcome::QueueRecorder> recorder_;
  Recorder seen_;
  outcome::Bus bus_;
  QueueActionContext context_;
};

TEST_F(QueueActionsTest, BounceByCampaignFailsThatCampaignAlone) {
  std::vector<MessageId> spring, autumn;
  for (int i = 0; i < 5; ++i) spring.push_back(Enqueue("spring", 2));
  autumn.push_back(Enqueue("autumn", 3));
  auto counts = RunQueueAction(context_, QueueAction::kBounce,
                               Select(R"({"campaign": "spring"})"));
  ASSERT_TRUE(counts.ok()) << counts.status();
  EXPECT_EQ(counts->matched, 10u);
  EXPECT_EQ(counts->done, 10u);
  EXPECT_EQ(counts->in_flight, 0u);
  ASSERT_TRUE(store_->WaitAnswered(absl::Seconds(10)));
  for (MessageId id : spring) EXPECT_EQ(Final(id), -1);  // Gone: all final.
  EXPECT_EQ(Final(autumn[0]), 0);
  auto seen = seen_.seen();
  ASSERT_EQ(seen.size(), 10u);
  for (const outcome::Outcome& o : seen) {
    EXPECT_EQ(o.kind, outcome::Kind::kFailed);
    EXPECT_EQ(o.operator_action, "bounce");
    EXPECT_EQ(o.campaign, "spring");
    EXPECT_FALSE(o.attempted);
    EXPECT_EQ(o.reply.code, 550);
  }
  // Done once: a second bounce finds nothing.
  counts = RunQueueAction(context_, QueueAction::kBounce,
                          Select(R"({"campaign": "spring"})"));
  EXPECT_EQ(counts->matched, 0u);
}

TEST_F(QueueActionsTest, DeleteOneMessageByIdAndDomainWithinIt) {
  MessageId a = Enqueue("spring", 2);
  MessageId b = Enqueue("spring", 2);
  auto counts = RunQueueAction(
      context_, QueueAction::kDelete,
      Select(absl::StrCat(R"({"id": ")", queue::FormatMessageId(a), R"("})")));
  ASSERT_TRUE(counts.ok());
  EXPECT_EQ(counts->done, 2u);
  ASSERT_TRUE(store_->WaitAnswered(absl::Seconds(10)));
  EXPECT_EQ(Final(a), -1);
  EXPECT_EQ(Final(b), 0);
  for (const outcome::Outcome& o : seen_.seen()) {
    EXPECT_EQ(o.operator_action, "delete");
    EXPECT_EQ(o.id, a);
  }
  // A domain no recipient has: nothing.
  counts = RunQueueAction(context_, QueueAction::kDelete,
                          Select(R"({"domain": "nowhere.test"})"));
  EXPECT_EQ(counts->matched, 0u);
  EXPECT_EQ(Final(b), 0);
}

TEST_F(QueueActionsTest, RetryMakesDeferredMailDueNowWithoutAnAttempt) {
  MessageId id = Enqueue("spring", 1);
  auto due = *store_->Claim(0, absl::Now(), 10);
  ASSERT_EQ(due.size(), 1u);
  queue::RecipientUpdate u =
      queue::Outcome(due[0], RecipientState::kDeferred,
                     absl::Now() + absl::Hours(3), "451 4.7.1 try later");
  ASSERT_TRUE(queue::UpdateSync(*store_, u).ok());
  EXPECT_TRUE(store_->Claim(0, absl::Now(), 10)->empty());

  auto counts = RunQueueAction(context_, QueueAction::kRetry,
                               Select(R"({"site": "spring.test"})"));
  ASSERT_TRUE(counts.ok());
  EXPECT_EQ(counts->done, 1u);
  auto now_due = *store_->Claim(0, absl::Now(), 10);
  ASSERT_EQ(now_due.size(), 1u);
  EXPECT_EQ(now_due[0].message, id);
  EXPECT_EQ(now_due[0].attempts, 1u);  // The one real attempt, no more.
  EXPECT_EQ(now_due[0].last_reply.code, 451);
  EXPECT_TRUE(seen_.seen().empty());  // A retry is no outcome.
}

TEST_F(QueueActionsTest, WhatDeliveryHoldsIsHandedToIt) {
  MessageId id = Enqueue("spring", 3);
  // Delivery claimed recipients 0 and 1 (in a site's queue, or on a
  // connection); the operator's action gets recipient 2 alone.
  auto claimed = *store_->Claim(0, absl::Now(), 2);
  ASSERT_EQ(claimed.size(), 2u);
  absl::flat_hash_set<RecipientKey> asked;
  context_.take_from_delivery = [&asked](absl::flat_hash_set<RecipientKey> w,
                                         bool deleted) -> size_t {
    EXPECT_FALSE(deleted);
    asked = w;
    return 1;  // One waited at its site; the other is being tried.
  };
  auto counts = RunQueueAction(context_, QueueAction::kBounce,
                               Select(R"({"tenant": "acme"})"));
  ASSERT_TRUE(counts.ok());
  EXPECT_EQ(counts->matched, 3u);
  EXPECT_EQ(counts->done, 2u);
  EXPECT_EQ(counts->in_flight, 1u);
  EXPECT_EQ(asked, (absl::flat_hash_set<RecipientKey>{{id, claimed[0].index},
                                                      {id, claimed[1].index}}));
  ASSERT_TRUE(store_->WaitAnswered(absl::Seconds(10)));
  EXPECT_EQ(Final(id), 1);
}

TEST_F(QueueActionsTest, AStopEndsTheActionAtTheNextPage) {
  for (int i = 0; i < 6; ++i) Enqueue("spring", 1);
  int pages = 0;
  context_.cancelled = [&pages] { return ++pages > 2; };
  auto counts = RunQueueAction(context_, QueueAction::kDelete,
                               Select(R"({"campaign": "spring"})"));
  ASSERT_TRUE(counts.ok());
  EXPECT_TRUE(counts->cancelled);
  EXPECT_EQ(counts->done, 4u);  // Two pages of two messages, then the stop.
}

TEST_F(QueueActionsTest, TransferDropsOnlyWhatTheOtherNodeTook) {
  MessageId whole = Enqueue("spring", 2);
  MessageId half = Enqueue("spring", 2);
  MessageId down = Enqueue("spring", 1);
  std::vector<std::pair<MessageId, size_t>> relayed;
  std::string to;
  context_.relay_to = [&](const std::string& destination) -> RelayFn {
    to = destination;
    return [&](const queue::StoredMessage& m,
               const std::vector<queue::RecipientRecord>& rs)
               -> absl::StatusOr<Relayed> {
      EXPECT_FALSE(m.body.empty());  // Read with its body.
      relayed.push_back({m.id, rs.size()});
      if (m.id == down) {
        return absl::UnavailableError("cannot connect to 10.0.0.9:25");
      }
      Relayed r;
      r.reply = "250 2.0.0 queued as 0123456789ABCDEF";
      for (const auto& rec : rs) {
        if (m.id == half && rec.index == 1) {
          r.refused.push_back("u1@spring.test: 550 5.1.1 suppressed");
        } else {
          r.accepted.push_back(rec.index);
        }
      }
      return r;
    };
  };
  QueueSelection s = Select(R"({"campaign": "spring", "to": "10.0.0.9:25"})");
  auto counts = RunQueueAction(context_, QueueAction::kTransfer, s);
  ASSERT_TRUE(counts.ok()) << counts.status();
  EXPECT_EQ(to, "10.0.0.9:25");
  EXPECT_EQ(counts->done, 3u);
  EXPECT_EQ(counts->kept, 2u);  // The refused one, and the one not sent.
  EXPECT_EQ(counts->error, "cannot connect to 10.0.0.9:25");
  ASSERT_TRUE(store_->WaitAnswered(absl::Seconds(10)));
  EXPECT_EQ(Final(whole), -1);  // Gone: both taken.
  EXPECT_EQ(Final(half), 1);
  EXPECT_EQ(Final(down), 0);
  for (const outcome::Outcome& o : seen_.seen()) {
    EXPECT_EQ(o.kind, outcome::Kind::kDelivered);
    EXPECT_EQ(o.operator_action, "transfer");
    EXPECT_EQ(o.mx, "10.0.0.9:25");
    EXPECT_EQ(o.reply.code, 250);
  }
  // What stayed is due here again, unclaimed, its attempts untouched.
  auto due = *store_->Claim(0, absl::Now(), 10);
  EXPECT_EQ(due.size(), 2u);
  for (const auto& r : due) EXPECT_EQ(r.attempts, 0u);
  // No destination: refused, nothing touched.
  auto refused = RunQueueAction(context_, QueueAction::kTransfer,
                                Select(R"({"campaign": "spring"})"));
  EXPECT_FALSE(refused.ok());
}

TEST(QueueSelectionTest, BadSelectionsSayWhatIsWrong) {
  auto error = [](const char* json) {
    auto s = QueueSelection::FromJson(nlohmann::json::parse(json));
    EXPECT_FALSE(s.ok()) << json;
    return s.ok() ? std::string() : std::string(s.status().message());
  };
  EXPECT_NE(error("{}").find("name the mail"), std::string::npos);
  EXPECT_NE(error("[1]").find("JSON object"), std::string::npos);
  EXPECT_NE(error(R"({"campain": "x"})").find("unknown field \"campain\""),
            std::string::npos);
  EXPECT_NE(error(R"({"id": "xyz"})").find("16 hex digits"), std::string::npos);
  EXPECT_NE(error(R"({"site": ""})").find("non-empty"), std::string::npos);
  EXPECT_NE(error(R"({"site": 5})").find("non-empty string"),
            std::string::npos);
  EXPECT_NE(error(R"({"all": true, "site": "a"})").find("alone"),
            std::string::npos);
  auto all = QueueSelection::FromJson(nlohmann::json::parse(R"({"all":true})"));
  ASSERT_TRUE(all.ok());
  EXPECT_EQ(all->ToString(), "all");
  auto two = QueueSelection::FromJson(
      nlohmann::json::parse(R"({"campaign":"c","domain":"d.test"})"));
  EXPECT_EQ(two->ToString(), "domain=d.test campaign=c");
}

}  // namespace
}  // namespace peregrine
