#include "mta/outcome/consumers.h"

#include <vector>

#include "gtest/gtest.h"
#include "tests/queue/null_store.h"

namespace peregrine::outcome {
namespace {

class RecordingStore : public queue::NullStore {
 public:
  void Update(queue::RecipientUpdate u, Done done) override {
    updates.push_back(u);
    done(absl::OkStatus());
  }
  std::vector<queue::RecipientUpdate> updates;
};

class Counting : public Consumer {
 public:
  void OnOutcome(const Outcome& o) override { kinds.push_back(o.kind); }
  std::vector<Kind> kinds;
};

Outcome ForRecipient(Kind kind) {
  Outcome o;
  o.kind = kind;
  o.id = 5;
  o.recipient = "a@example.com";
  o.record.message = 5;
  o.record.index = 1;
  o.record.attempts = 2;
  o.reply = Reply{451, "4.7.1", "greylisted"};
  o.attempt = 3;
  return o;
}

TEST(QueueRecorder, EachDeliveryOutcomeUpdatesTheQueueWithItsReply) {
  RecordingStore store;
  QueueRecorder recorder(&store);
  Outcome deferred = ForRecipient(Kind::kDeferred);
  deferred.next_attempt = absl::FromUnixSeconds(1000);
  deferred.held_more = absl::Seconds(30);
  recorder.OnOutcome(deferred);
  Outcome delivered = ForRecipient(Kind::kDelivered);
  delivered.reply = Reply{250, "2.0.0", "ok"};
  recorder.OnOutcome(delivered);
  recorder.OnOutcome(ForRecipient(Kind::kFailed));
  ASSERT_EQ(store.updates.size(), 3u);
  EXPECT_EQ(store.updates[0].state, queue::RecipientState::kDeferred);
  EXPECT_EQ(store.updates[0].next_attempt, absl::FromUnixSeconds(1000));
  EXPECT_EQ(store.updates[0].held_more, absl::Seconds(30));
  EXPECT_EQ(store.updates[0].reply, (Reply{451, "4.7.1", "greylisted"}));
  EXPECT_EQ(store.updates[0].before.index, 1u);
  EXPECT_EQ(store.updates[1].state, queue::RecipientState::kDelivered);
  EXPECT_EQ(store.updates[1].reply.code, 250);
  EXPECT_EQ(store.updates[2].state, queue::RecipientState::kFailed);
}

TEST(QueueRecorder, ExpiryKeepsTheLastCodesAndSaysWhy) {
  RecordingStore store;
  QueueRecorder recorder(&store);
  Outcome o = ForRecipient(Kind::kExpired);
  o.reason = "expired after 3 attempts over 5d";
  recorder.OnOutcome(o);
  ASSERT_EQ(store.updates.size(), 1u);
  EXPECT_EQ(store.updates[0].state, queue::RecipientState::kExpired);
  EXPECT_EQ(store.updates[0].reply.ToString(),
            "451 4.7.1 expired after 3 attempts over 5d; last: greylisted");
}

TEST(QueueRecorder, ReceptionOutcomesTouchNothing) {
  RecordingStore store;
  QueueRecorder recorder(&store);
  recorder.OnOutcome(ForRecipient(Kind::kReceived));
  recorder.OnOutcome(ForRecipient(Kind::kRejected));
  EXPECT_TRUE(store.updates.empty());
}

TEST(Bus, EveryConsumerSeesEveryOutcomeInOrderAttached) {
  RecordingStore store;
  QueueRecorder recorder(&store);
  Counting first, second;
  Bus bus;
  bus.Attach(&recorder);
  bus.Attach(&first);
  bus.Attach(&second);
  bus.Publish(ForRecipient(Kind::kDelivered));
  bus.Publish(ForRecipient(Kind::kReceived));
  EXPECT_EQ(store.updates.size(), 1u);
  EXPECT_EQ(first.kinds,
            (std::vector<Kind>{Kind::kDelivered, Kind::kReceived}));
  EXPECT_EQ(second.kinds, first.kinds);
}

TEST(Kinds, TerminalOnesAreTheFinalStates) {
  EXPECT_TRUE(IsTerminal(Kind::kDelivered));
  EXPECT_TRUE(IsTerminal(Kind::kFailed));
  EXPECT_TRUE(IsTerminal(Kind::kExpired));
  EXPECT_FALSE(IsTerminal(Kind::kDeferred));
  EXPECT_FALSE(IsTerminal(Kind::kReceived));
  EXPECT_FALSE(IsTerminal(Kind::kRejected));
  EXPECT_EQ(KindName(Kind::kExpired), "expired");
}

}  // namespace
}  // namespace peregrine::outcome
