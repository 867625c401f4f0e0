// The Notifier against a real queue: which outcomes get a DSN, one DSN per
// message for failures close together, the DSN queued with the failures,
// delay notices once, suppression, and the events it publishes.
#include "mta/bounce/notifier.h"

#include <mutex>

#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "tests/mta/bounce/memory_table.h"
#include "tests/queue/store_testing.h"

namespace peregrine::bounce {
namespace {

using outcome::Kind;
using outcome::Outcome;

class Recorder : public outcome::Consumer {
 public:
  void OnOutcome(const Outcome& o) override {
    std::lock_guard<std::mutex> l(mu_);
    seen_.push_back(o);
  }
  std::vector<Outcome> Of(Kind kind) {
    std::lock_guard<std::mutex> l(mu_);
    std::vector<Outcome> out;
    for (const Outcome& o : seen_) {
      if (o.kind == kind) out.push_back(o);
    }
    return out;
  }

 private:
  std::mutex mu_;
  std::vector<Outcome> seen_;
};

class NotifierTest : public ::testing::Test {
 protected:
  void SetUp() override {
    store_ = queue::OpenOrDie(queue::Options(queue::TempPath("notifier")));
    list_ = std::make_unique<SuppressionList>(&table_);
  }
  void Make(NotifierOptions o = {}) {
    o.hostname = "mx.peregrine.test";
    o.window = absl::Milliseconds(200);
    o.suppress = {Category::kInvalidRecipient};
    notifier_ = std::make_unique<Notifier>(store_.get(), &bus_, list_.get(), o);
    recorder_ =
        std::make_unique<outcome::QueueRecorder>(store_.get(), notifier_.get());
    bus_.Attach(recorder_.get());
    bus_.Attach(&events_);
    bus_.Attach(notifier_.get());
  }
  // Queues a message and claims its recipients.
  std::vector<queue::RecipientRecord> Queue(
      std::vector<std::string> to, std::string sender = "app@src.test",
      uint8_t notify = queue::kNotifyDefault, std::string listener = "relay") {
    std::vector<std::pair<std::string, uint16_t>> r;
    for (auto& a : to) r.emplace_back(a, 0);
    queue::NewMessage m = queue::Message(r);
    m.envelope.sender = sender;
    m.envelope.listener = listener;
    m.envelope.ret = queue::DsnRet::kUnspecified;
    for (auto& spec : m.recipients) spec.notify = notify;
    auto id = queue::EnqueueSync(*store_, std::move(m));
    EXPECT_TRUE(id.ok());
    auto due = store_->Claim(0, absl::Now() + absl::Seconds(1), 100);
    EXPECT_TRUE(due.ok());
    return *due;
  }
  Outcome Failed(const queue::RecipientRecord& r, std::string sender,
                 std::string listener = "relay") {
    Outcome o;
    o.kind = Kind::kFailed;
    o.time = absl::Now();
    o.id = r.message;
    o.sender = sender;
    o.recipient = r.spec.address;
    o.reply = Reply{550, "5.1.1", "no such user"};
    o.category = Category::kInvalidRecipient;
    o.mx = "mx.dest.test";
    o.ip = "127.0.0.1";
    o.listener = listener;
    o.record = r;
    o.attempt = 1;
    return o;
  }
  // True once message `id` is finished (the recorder's writes are answered
  // on the queue's thread).
  bool Finished(queue::MessageId id) {
    absl::Time deadline = absl::Now() + absl::Seconds(10);
    while (absl::Now() < deadline) {
      if (absl::IsNotFound(store_->Read(id, false).status())) return true;
      absl::SleepFor(absl::Milliseconds(10));
    }
    return false;
  }
  // The DSNs queued: messages from <>.
  std::vector<queue::StoredMessage> Dsns() {
    queue::ListFilter f;
    f.limit = 100;
    auto all = store_->List(f);
    EXPECT_TRUE(all.ok());
    std::vector<queue::StoredMessage> out;
    for (auto& m : *all) {
      if (m.envelope.sender.empty()) {
        auto full = store_->Read(m.id, true);
        if (full.ok()) out.push_back(*full);
      }
    }
    return out;
  }

  std::unique_ptr<queue::RocksStore> store_;
  MemoryTable table_;
  std::unique_ptr<SuppressionList> list_;
  outcome::Bus bus_;
  Recorder events_;
  std::unique_ptr<Notifier> notifier_;
  std::unique_ptr<outcome::QueueRecorder> recorder_;
};

TEST_F(NotifierTest, OneDsnForFailuresOfOnePass) {
  Make();
  auto rs = Queue({"a@dest.test", "b@dest.test"});
  ASSERT_EQ(rs.size(), 2u);
  for (auto& r : rs) bus_.Publish(Failed(r, "app@src.test"));
  notifier_->Stop();
  auto dsns = Dsns();
  ASSERT_EQ(dsns.size(), 1u);
  EXPECT_EQ(dsns[0].recipients[0].spec.address, "app@src.test");
  EXPECT_EQ(dsns[0].recipients[0].spec.notify, queue::kNotifyNever);
  EXPECT_NE(dsns[0].body.find("Final-Recipient: rfc822; a@dest.test"),
            std::string::npos);
  EXPECT_NE(dsns[0].body.find("Final-Recipient: rfc822; b@dest.test"),
            std::string::npos);
  EXPECT_EQ(events_.Of(Kind::kBounce).size(), 2u);
  EXPECT_EQ(events_.Of(Kind::kDsnSent).size(), 1u);
  EXPECT_EQ(events_.Of(Kind::kSuppressed).size(), 2u);
  EXPECT_TRUE(list_->Find("a@dest.test", "", "", absl::Now())->has_value());
  // The failures themselves were recorded: the original is finished.
  EXPECT_TRUE(Finished(rs[0].message));
}

TEST_F(NotifierTest, NoDsnForTheNullSenderNeverOrAListenerThatSaysNo) {
  NotifierOptions o;
  o.no_dsn_listeners = {"relay"};
  Make(o);
  auto a = Queue({"a@dest.test"}, "");
  bus_.Publish(Failed(a[0], ""));
  auto b = Queue({"b@dest.test"}, "app@src.test", queue::kNotifyNever);
  bus_.Publish(Failed(b[0], "app@src.test"));
  auto c = Queue({"c@dest.test"}, "app@src.test");
  bus_.Publish(Failed(c[0], "app@src.test", "relay"));
  auto d = Queue({"d@dest.test"}, "app@src.test", queue::kNotifySuccess);
  bus_.Publish(Failed(d[0], "app@src.test", "submission"));
  notifier_->Stop();
  EXPECT_TRUE(Dsns().empty());
  auto bounces = events_.Of(Kind::kBounce);
  ASSERT_EQ(bounces.size(), 4u);
  EXPECT_NE(bounces[0].reason.find("null"), std::string::npos);
  EXPECT_NE(bounces[1].reason.find("NOTIFY=NEVER"), std::string::npos);
  EXPECT_NE(bounces[2].reason.find("relay listener"), std::string::npos);
  EXPECT_NE(bounces[3].reason.find("NOTIFY"), std::string::npos);
  // Still recorded as failed by the queue recorder itself.
  for (auto* r : {&a[0], &b[0], &c[0], &d[0]}) {
    EXPECT_TRUE(Finished(r->message));
  }
}

TEST_F(NotifierTest, DelayNoticeOnceWhenAskedOrByListener) {
  NotifierOptions o;
  o.delay_after = absl::Hours(4);
  o.delay_listeners = {"submission"};
  Make(o);
  auto rs = Queue({"a@dest.test"}, "app@src.test", queue::kNotifyDefault,
                  "submission");
  Outcome d = Failed(rs[0], "app@src.test", "submission");
  d.kind = Kind::kDeferred;
  d.reply = Reply{451, "4.7.1", "greylisted"};
  d.next_attempt = absl::Now() + absl::Hours(1);
  d.queue_time = absl::Hours(3);
  EXPECT_FALSE(notifier_->DsnDue(d));  // Not yet.
  d.queue_time = absl::Hours(5);
  EXPECT_TRUE(notifier_->DsnDue(d));
  Outcome relay = d;
  relay.listener = "relay";
  EXPECT_FALSE(notifier_->DsnDue(relay));  // Not by default there...
  relay.record.spec.notify = queue::kNotifyDelay;
  EXPECT_TRUE(notifier_->DsnDue(relay));  // ... unless asked.
  Outcome told = d;
  told.record.delay_notified = true;
  EXPECT_FALSE(notifier_->DsnDue(told));  // Once.
  bus_.Publish(d);
  notifier_->Stop();
  auto dsns = Dsns();
  ASSERT_EQ(dsns.size(), 1u);
  EXPECT_NE(dsns[0].body.find("Action: delayed"), std::string::npos);
  auto m = store_->Read(rs[0].message, false);
  ASSERT_TRUE(m.ok());
  EXPECT_TRUE(m->recipients[0].delay_notified);
  EXPECT_EQ(m->recipients[0].state, queue::RecipientState::kDeferred);
}

}  // namespace
}  // namespace peregrine::bounce
