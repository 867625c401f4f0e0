// Fresh mail (RocksStoreOptions::fresh_bytes): recipients of mail just
// written are claimed at once and handed out first, each exactly once; its
// body is read from memory; a recipient given back goes to the scan; a
// failed group leaves nothing behind; past the budget, or after a
// restart, mail takes the ordinary path.
#include <atomic>

#include "absl/container/flat_hash_set.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "queue/rocksdb_store.h"
#include "tests/queue/store_testing.h"

namespace peregrine::queue {
namespace {

std::vector<RecipientRecord> ClaimAll(Store& store, int shard) {
  auto c = store.Claim(shard, absl::Now() + absl::Seconds(1), 1000);
  EXPECT_TRUE(c.ok()) << c.status();
  return c.ok() ? *c : std::vector<RecipientRecord>{};
}

TEST(FreshTest, EachFreshRecipientIsHandedOutOnceAndItsBodyFromMemory) {
  std::string path = TempPath("fresh");
  auto store = OpenOrDie(Options(path));
  std::vector<MessageId> ids;
  for (int i = 0; i < 20; ++i) {
    auto id = EnqueueSync(
        *store, Message({{"a@x.test", 0}, {"b@y.test", 1}},
                        absl::StrCat("Subject: ", i, "\r\n\r\nbody\r\n")));
    ASSERT_TRUE(id.ok());
    ids.push_back(*id);
  }
  absl::flat_hash_set<std::pair<MessageId, uint32_t>> seen;
  for (int shard : {0, 1}) {
    auto first = ClaimAll(*store, shard);
    EXPECT_EQ(first.size(), 20u);
    for (const RecipientRecord& r : first) {
      EXPECT_TRUE(seen.insert({r.message, r.index}).second);
      EXPECT_EQ(r.state, RecipientState::kQueued);
      EXPECT_EQ(r.spec.shard, shard);
    }
    // Nothing twice, whether from memory or from the scan.
    EXPECT_TRUE(ClaimAll(*store, shard).empty());
  }
  // The body from memory is the body on disk.
  for (MessageId id : ids) {
    auto fast = store->ReadForSend(id);
    auto slow = store->Read(id, true);
    ASSERT_TRUE(fast.ok() && slow.ok());
    EXPECT_EQ(*fast->body, slow->body);
    EXPECT_EQ(fast->envelope.sender, slow->envelope.sender);
    EXPECT_EQ(fast->envelope.body_bytes, slow->envelope.body_bytes);
  }
  // Records from memory update like records from disk.
  auto again = store->Read(ids[0], false);
  ASSERT_TRUE(again.ok());
  for (const RecipientRecord& r : again->recipients) {
    ASSERT_TRUE(
        UpdateSync(*store, Outcome(r, RecipientState::kDelivered)).ok());
  }
  EXPECT_TRUE(absl::IsNotFound(store->Read(ids[0], false).status()));
}

TEST(FreshTest, AGivenBackRecipientGoesToTheScan) {
  auto store = OpenOrDie(Options(TempPath("fresh-unclaim")));
  auto id = EnqueueSync(*store, Message({{"a@x.test", 0}}));
  ASSERT_TRUE(id.ok());
  auto first = ClaimAll(*store, 0);
  ASSERT_EQ(first.size(), 1u);
  store->Unclaim(first[0]);
  auto second = ClaimAll(*store, 0);
  ASSERT_EQ(second.size(), 1u);
  EXPECT_EQ(second[0].message, *id);
  EXPECT_EQ(second[0].next_attempt, first[0].next_attempt);
  // And the update finds its schedule entry: it is due nowhere after.
  ASSERT_TRUE(
      UpdateSync(*store, Outcome(second[0], RecipientState::kDeferred,
                                 absl::Now() + absl::Hours(1), "451 later"))
          .ok());
  EXPECT_TRUE(ClaimAll(*store, 0).empty());
  auto due = store->Due(0, absl::Now() + absl::Seconds(1), 10);
  ASSERT_TRUE(due.ok());
  EXPECT_TRUE(due->empty());
}

TEST(FreshTest, NewMailDoesNotStarveRetries) {
  auto store = OpenOrDie(Options(TempPath("fresh-fair")));
  // A retry due now, then a flood of new mail.
  auto old = EnqueueSync(*store, Message({{"old@x.test", 0}}));
  ASSERT_TRUE(old.ok());
  auto first = ClaimAll(*store, 0);
  ASSERT_EQ(first.size(), 1u);
  ASSERT_TRUE(UpdateSync(*store, Outcome(first[0], RecipientState::kDeferred,
                                         absl::Now(), "451 later"))
                  .ok());
  for (int i = 0; i < 40; ++i) {
    ASSERT_TRUE(EnqueueSync(*store, Message({{"new@x.test", 0}})).ok());
  }
  auto some = store->Claim(0, absl::Now() + absl::Seconds(1), 8);
  ASSERT_TRUE(some.ok());
  ASSERT_GE(some->size(), 2u);
  bool retry = false;
  for (const RecipientRecord& r : *some) retry = retry || r.message == *old;
  EXPECT_TRUE(retry) << "the retry waited behind new mail";
}

TEST(FreshTest, PastTheBudgetMailTakesTheOrdinaryPath) {
  RocksStoreOptions o = Options(TempPath("fresh-budget"));
  o.fresh_bytes = 4096;  // One small message at most.
  auto store = OpenOrDie(o);
  for (int i = 0; i < 10; ++i) {
    ASSERT_TRUE(
        EnqueueSync(*store, Message({{"a@x.test", 0}}, std::string(1500, 'x')))
            .ok());
  }
  auto all = ClaimAll(*store, 0);
  EXPECT_EQ(all.size(), 10u);
  absl::flat_hash_set<MessageId> distinct;
  for (const RecipientRecord& r : all) {
    EXPECT_TRUE(distinct.insert(r.message).second);
    auto m = store->ReadForSend(r.message);
    ASSERT_TRUE(m.ok());
    EXPECT_EQ(m->body->size(), 1500u);
    ASSERT_TRUE(
        UpdateSync(*store, Outcome(r, RecipientState::kDelivered)).ok());
  }
  // The budget is free again: the next message is fresh.
  ASSERT_TRUE(EnqueueSync(*store, Message({{"b@x.test", 0}})).ok());
  EXPECT_EQ(ClaimAll(*store, 0).size(), 1u);
}

TEST(FreshTest, AFailedGroupLeavesNothingToHandOut) {
  auto fail = std::make_shared<std::atomic<bool>>(true);
  RocksStoreOptions o = Options(TempPath("fresh-fail"));
  o.test_fail_spool_write = [fail] { return fail->load(); };
  auto store = OpenOrDie(o);
  auto lost = EnqueueSync(*store, Message({{"a@x.test", 0}}));
  EXPECT_FALSE(lost.ok());
  fail->store(false);
  EXPECT_TRUE(ClaimAll(*store, 0).empty());
  auto kept = EnqueueSync(*store, Message({{"b@x.test", 0}}));
  ASSERT_TRUE(kept.ok());
  auto c = ClaimAll(*store, 0);
  ASSERT_EQ(c.size(), 1u);
  EXPECT_EQ(c[0].message, *kept);
}

TEST(FreshTest, AfterARestartTheScanFindsWhatWasFresh) {
  std::string path = TempPath("fresh-restart");
  MessageId id;
  {
    auto store = OpenOrDie(Options(path));
    auto m = EnqueueSync(*store, Message({{"a@x.test", 0}}));
    ASSERT_TRUE(m.ok());
    id = *m;
  }
  auto store = OpenOrDie(Options(path));
  auto c = ClaimAll(*store, 0);
  ASSERT_EQ(c.size(), 1u);
  EXPECT_EQ(c[0].message, id);
  auto m = store->ReadForSend(id);
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(*m->body, "Subject: hi\r\n\r\nbody\r\n");
}

TEST(FreshTest, AFreshMessageFinishedKeepsItsEnvelopeForLookup) {
  // The finished record takes the envelope from memory, not from a read:
  // it must be the envelope as stored, across a restart too.
  std::string path = TempPath("fresh-finished");
  MessageId id;
  {
    auto store = OpenOrDie(Options(path));
    auto m = EnqueueSync(*store, Message({{"a@x.test", 0}, {"b@y.test", 0}}));
    ASSERT_TRUE(m.ok());
    id = *m;
    auto c = ClaimAll(*store, 0);
    ASSERT_EQ(c.size(), 2u);
    for (const RecipientRecord& r : c) {
      ASSERT_TRUE(
          UpdateSync(*store, Outcome(r, RecipientState::kDelivered)).ok());
    }
    auto f = store->Lookup(id);
    ASSERT_TRUE(f.ok()) << f.status();
    EXPECT_TRUE(f->finished);
    EXPECT_EQ(f->envelope.sender, "alice@sender.test");
    EXPECT_EQ(f->envelope.recipient_count, 2u);
  }
  auto store = OpenOrDie(Options(path));
  auto f = store->Lookup(id);
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(f->envelope.sender, "alice@sender.test");
  EXPECT_EQ(f->envelope.body_bytes, 21u);
  ASSERT_EQ(f->recipients.size(), 2u);
  EXPECT_EQ(f->recipients[1].state, RecipientState::kDelivered);
}

}  // namespace
}  // namespace peregrine::queue
