// Over 800 lines, one concern: RocksStore's behaviour (enqueue, claims,
// updates, recovery, the spool, storage faults, the floor, finished
// records), each case against a real RocksDB in a temporary folder.
#include <sys/stat.h>

#include <atomic>
#include <filesystem>
#include <thread>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "queue/codec.h"
#include "queue/rocksdb_store.h"
#include "rocksdb/db.h"
#include "rocksdb/file_system.h"
#include "rocksdb/write_batch.h"
#include "tests/queue/store_testing.h"

namespace peregrine::queue {
namespace {

using ::testing::HasSubstr;

TEST(StoreTest, EnqueueThenReadBackEverything) {
  auto store = OpenOrDie(Options(TempPath("read")));
  auto id =
      EnqueueSync(*store, Message({{"bob@a.test", 1}, {"carol@b.test", 2}},
                                  std::string(10240, 'x')));
  ASSERT_TRUE(id.ok()) << id.status();
  auto m = store->Read(*id, true);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->envelope.sender, "alice@sender.test");
  EXPECT_EQ(m->envelope.envid, "ENV-1");
  EXPECT_EQ(m->envelope.ret, DsnRet::kHeaders);
  EXPECT_EQ(m->envelope.campaign, "spring");
  EXPECT_EQ(m->envelope.tenant, "acme");
  EXPECT_EQ(m->envelope.auth_user, "app");
  EXPECT_EQ(m->envelope.tls, "TLSv1.3");
  EXPECT_EQ(m->envelope.received, absl::FromUnixSeconds(1700000000));
  EXPECT_EQ(m->envelope.recipient_count, 2u);
  EXPECT_EQ(m->envelope.body_bytes, 10240u);
  EXPECT_EQ(m->body, std::string(10240, 'x'));
  ASSERT_EQ(m->recipients.size(), 2u);
  EXPECT_EQ(m->recipients[1].spec.address, "carol@b.test");
  EXPECT_EQ(m->recipients[1].spec.orcpt, "rfc822;carol@b.test");
  EXPECT_EQ(m->recipients[1].spec.notify, kNotifyFailure | kNotifyDelay);
  EXPECT_EQ(m->recipients[1].spec.shard, 2);
  EXPECT_EQ(m->recipients[1].spec.site, "b.test");
  EXPECT_EQ(m->recipients[1].state, RecipientState::kQueued);
  EXPECT_EQ(m->recipients[1].domain(), "b.test");
  EXPECT_FALSE(store->Read(*id + 1, false).ok());
}

TEST(StoreTest, IdsIncrease) {
  auto store = OpenOrDie(Options(TempPath("ids")));
  MessageId last = 0;
  for (int i = 0; i < 50; ++i) {
    auto id = EnqueueSync(*store, Message({{"b@a.test", 0}}));
    ASSERT_TRUE(id.ok());
    EXPECT_GT(*id, last);
    last = *id;
  }
  MessageId parsed;
  ASSERT_TRUE(ParseMessageId(FormatMessageId(last), &parsed));
  EXPECT_EQ(parsed, last);
  EXPECT_EQ(FormatMessageId(last).size(), 16u);
}

TEST(StoreTest, DueIsPerShardEarliestFirstAndLimited) {
  auto store = OpenOrDie(Options(TempPath("due")));
  std::vector<MessageId> ids;
  for (int i = 0; i < 5; ++i) {
    ids.push_back(
        *EnqueueSync(*store, Message({{absl::StrCat("u", i, "@a.test"), 0},
                                      {absl::StrCat("v", i, "@b.test"), 3}})));
  }
  absl::Time now = absl::Now();
  auto due0 = store->Due(0, now, 100);
  ASSERT_TRUE(due0.ok());
  ASSERT_EQ(due0->size(), 5u);
  for (int i = 0; i < 5; ++i) {
    EXPECT_EQ((*due0)[i].message, ids[i]);
    EXPECT_EQ((*due0)[i].index, 0u);
  }
  EXPECT_EQ(store->Due(3, now, 2)->size(), 2u);
  EXPECT_TRUE(store->Due(1, now, 100)->empty());
  EXPECT_FALSE(store->Due(4, now, 100).ok());
  // Not due before they were queued.
  EXPECT_TRUE(store->Due(0, absl::FromUnixSeconds(1), 100)->empty());
}

TEST(StoreTest, DeferredRecipientComesBackAtItsTime) {
  auto store = OpenOrDie(Options(TempPath("defer")));
  auto id = EnqueueSync(*store, Message({{"bob@a.test", 1}}));
  absl::Time now = absl::Now();
  auto due = store->Due(1, now, 10);
  ASSERT_EQ(due->size(), 1u);
  absl::Time later = now + absl::Hours(1);
  ASSERT_TRUE(UpdateSync(*store, Outcome((*due)[0], RecipientState::kDeferred,
                                         later, "451 4.7.1 greylisted"))
                  .ok());
  EXPECT_TRUE(store->Due(1, now + absl::Minutes(59), 10)->empty());
  auto again = store->Due(1, later, 10);
  ASSERT_EQ(again->size(), 1u);
  EXPECT_EQ((*again)[0].state, RecipientState::kDeferred);
  EXPECT_EQ((*again)[0].attempts, 1u);
  EXPECT_EQ((*again)[0].last_reply, Reply::Parse("451 4.7.1 greylisted"));
  EXPECT_EQ((*again)[0].last_reply.enhanced, "4.7.1");
  EXPECT_EQ((*again)[0].next_attempt,
            absl::FromUnixMicros(absl::ToUnixMicros(later)));
  // The stale copy from the first Due() can no longer be used.
  auto m = store->Read(*id, false);
  EXPECT_EQ(m->recipients[0].attempts, 1u);
}

TEST(StoreTest, ClaimReturnsEachRecipientOnceUntilItMoves) {
  auto store = OpenOrDie(Options(TempPath("claim")));
  for (int i = 0; i < 5; ++i) {
    ASSERT_TRUE(
        EnqueueSync(*store, Message({{absl::StrCat("u", i, "@a.test"), 1}}))
            .ok());
  }
  absl::Time now = absl::Now();
  auto first = *store->Claim(1, now, 3);
  ASSERT_EQ(first.size(), 3u);
  auto second = *store->Claim(1, now, 10);
  ASSERT_EQ(second.size(), 2u);  // Only the ones not claimed yet.
  EXPECT_NE(second[0].message, first[2].message);
  EXPECT_TRUE(store->Claim(1, now, 10)->empty());
  // Due() still sees them all: claims only steer the scheduler.
  EXPECT_EQ(store->Due(1, now, 10)->size(), 5u);

  // Deferred: comes back at its new time, once.
  absl::Time later = now + absl::Minutes(10);
  ASSERT_TRUE(UpdateSync(*store, Outcome(first[0], RecipientState::kDeferred,
                                         later, "451 try later"))
                  .ok());
  EXPECT_TRUE(store->Claim(1, now + absl::Minutes(5), 10)->empty());
  auto back = *store->Claim(1, later, 10);
  ASSERT_EQ(back.size(), 1u);
  EXPECT_EQ(back[0].message, first[0].message);
  EXPECT_EQ(back[0].attempts, 1u);

  // Given back: claimable again.
  store->Unclaim(first[1]);
  auto again = *store->Claim(1, later, 10);
  ASSERT_EQ(again.size(), 1u);
  EXPECT_EQ(again[0].message, first[1].message);

  // Queued after the scan moved on, with an earlier time: still found.
  ASSERT_TRUE(EnqueueSync(*store, Message({{"late@a.test", 1}})).ok());
  EXPECT_EQ(store->Claim(1, later, 10)->size(), 1u);
  // Delivered: gone for good.
  ASSERT_TRUE(
      UpdateSync(*store, Outcome(second[0], RecipientState::kDelivered)).ok());
  EXPECT_TRUE(store->Claim(1, later + absl::Hours(1), 10)->empty());
}

TEST(StoreTest, ClaimNeverHandsOutARecipientWhoseUpdateIsInFlight) {
  // Until an outcome is on disk, the old schedule entry and record are
  // still there: the claim must hold until then, or the recipient is
  // delivered twice. A scan goes back over claimed entries whenever an
  // earlier time is (re)scheduled: concurrent enqueues stamped out of
  // order, or an Unclaim as here.
  auto store = OpenOrDie(Options(TempPath("claim-race")));
  constexpr int kMessages = 300;
  for (int i = 0; i < kMessages; ++i) {
    ASSERT_TRUE(
        EnqueueSync(*store, Message({{absl::StrCat("u", i, "@a.test"), 1},
                                     {absl::StrCat("v", i, "@a.test"), 1}}))
            .ok());
  }
  auto claimed = *store->Claim(1, absl::Now(), 10 * kMessages);
  ASSERT_EQ(claimed.size(), 2u * kMessages);
  std::atomic<int> done{0};
  for (size_t i = 1; i < claimed.size(); ++i) {
    // Half delivered (the message goes with its last), half deferred.
    RecipientState state =
        i % 2 ? RecipientState::kDelivered : RecipientState::kDeferred;
    store->Update(Outcome(claimed[i], state, absl::Now() + absl::Hours(1)),
                  [&done](absl::Status) { done.fetch_add(1); });
  }
  // The earliest one is given back: the next scan starts before them all.
  store->Unclaim(claimed[0]);
  auto again = *store->Claim(1, absl::Now(), 10 * kMessages);
  ASSERT_FALSE(again.empty());
  EXPECT_EQ(again[0].message, claimed[0].message);
  EXPECT_EQ(again.size(), 1u) << "handed out again while being updated";
  while (done.load() < static_cast<int>(claimed.size()) - 1) {
    absl::SleepFor(absl::Milliseconds(1));
  }
}

TEST(StoreTest, ReadOnlyViewOfAQueueInUse) {
  std::string path = TempPath("view");
  auto store = OpenOrDie(Options(path));
  auto id = EnqueueSync(*store, Message({{"bob@a.test", 1}}));
  ASSERT_TRUE(id.ok());
  RocksStoreOptions o = Options(path);
  o.read_only = true;
  auto view = RocksStore::Open(o);
  ASSERT_TRUE(view.ok()) << view.status();
  EXPECT_EQ((*view)->Counts()->messages, 1u);
  auto m = (*view)->Read(*id, /*with_body=*/true);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_FALSE(m->body.empty());
  absl::Status refused;
  (*view)->Enqueue(Message({{"eve@a.test", 1}}),
                   [&](absl::StatusOr<MessageId> r) { refused = r.status(); });
  EXPECT_TRUE(absl::IsFailedPrecondition(refused)) << refused;
  view->reset();
  EXPECT_EQ(store->Counts()->messages, 1u);  // The owner is untouched.
}

TEST(StoreTest, BodyGoesOnlyWithTheLastRecipientAcrossShards) {
  auto store = OpenOrDie(Options(TempPath("last")));
  auto id =
      EnqueueSync(*store, Message({{"bob@a.test", 1}, {"eve@b.test", 2}}));
  absl::Time now = absl::Now();
  auto r1 = (*store->Due(1, now, 10))[0];
  auto r2 = (*store->Due(2, now, 10))[0];
  ASSERT_TRUE(UpdateSync(*store, Outcome(r1, RecipientState::kDelivered)).ok());
  auto m = store->Read(*id, true);
  ASSERT_TRUE(m.ok()) << "body must stay while eve is pending";
  EXPECT_FALSE(m->body.empty());
  EXPECT_EQ(m->recipients[0].state, RecipientState::kDelivered);
  EXPECT_EQ(m->recipients[1].state, RecipientState::kQueued);
  EXPECT_TRUE(store->Due(1, now, 10)->empty());
  ASSERT_TRUE(
      UpdateSync(*store, Outcome(r2, RecipientState::kFailed, {}, "550 5.1.1"))
          .ok());
  EXPECT_TRUE(absl::IsNotFound(store->Read(*id, true).status()));
  EXPECT_EQ(store->LiveMessages(), 0u);
  auto counts = store->Counts();
  EXPECT_EQ(counts->messages, 0u);
  EXPECT_EQ(counts->recipients, 0u);
}

TEST(StoreTest, SecondFinalUpdateOfARecipientIsRefused) {
  auto store = OpenOrDie(Options(TempPath("twice")));
  auto id =
      EnqueueSync(*store, Message({{"bob@a.test", 0}, {"eve@b.test", 0}}));
  auto due = *store->Due(0, absl::Now(), 10);
  ASSERT_TRUE(
      UpdateSync(*store, Outcome(due[0], RecipientState::kDelivered)).ok());
  absl::Status again =
      UpdateSync(*store, Outcome(due[0], RecipientState::kDelivered));
  EXPECT_TRUE(absl::IsFailedPrecondition(again)) << again;
  // Eve's message must still be there: a double count would have freed it.
  EXPECT_TRUE(store->Read(*id, true).ok());
  EXPECT_EQ(store->Due(0, absl::Now(), 10)->size(), 1u);
  EXPECT_TRUE(absl::IsInvalidArgument(
      UpdateSync(*store, Outcome(due[1], RecipientState::kQueued))));
}

TEST(StoreTest, ConcurrentShardsFinishSharedMessages) {
  constexpr int kShards = 4, kMessages = 300;
  auto store = OpenOrDie(Options(TempPath("concurrent"), kShards));
  for (int i = 0; i < kMessages; ++i) {
    std::vector<std::pair<std::string, uint16_t>> rcpts;
    for (int s = 0; s < kShards; ++s) {
      rcpts.push_back({absl::StrCat("r", s, "@s", s, ".test"), s});
    }
    ASSERT_TRUE(EnqueueSync(*store, Message(rcpts)).ok());
  }
  std::vector<std::thread> threads;
  std::atomic<int> errors{0};
  for (int s = 0; s < kShards; ++s) {
    threads.emplace_back([&, s] {
      auto due = store->Due(s, absl::Now(), 100000);
      if (!due.ok() || due->size() != kMessages) ++errors;
      std::atomic<int> left{static_cast<int>(due->size())};
      absl::Notification all;
      for (const auto& r : *due) {
        store->Update(Outcome(r, RecipientState::kDelivered),
                      [&](absl::Status st) {
                        if (!st.ok()) ++errors;
                        if (--left == 0) all.Notify();
                      });
      }
      all.WaitForNotification();
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(errors.load(), 0);
  EXPECT_EQ(store->LiveMessages(), 0u);
  EXPECT_EQ(store->Counts()->messages, 0u);
  // Joined writes: far fewer commits than the 1500 writes made.
  EXPECT_LT(store->commits(), static_cast<uint64_t>(kMessages * (kShards + 1)));
}

TEST(StoreTest, RecoveryReschedulesEveryPendingRecipient) {
  std::string path = TempPath("recover");
  MessageId last_id;
  {
    auto store = OpenOrDie(Options(path));
    for (int i = 0; i < 10; ++i) {
      last_id =
          *EnqueueSync(*store, Message({{"bob@a.test", 1}, {"eve@b.test", 2}}));
    }
    auto due1 = *store->Due(1, absl::Now(), 100);
    // Deliver bob of the first 4 messages; defer bob of the next 3.
    for (int i = 0; i < 4; ++i) {
      ASSERT_TRUE(
          UpdateSync(*store, Outcome(due1[i], RecipientState::kDelivered))
              .ok());
    }
    for (int i = 4; i < 7; ++i) {
      ASSERT_TRUE(UpdateSync(*store, Outcome(due1[i], RecipientState::kDeferred,
                                             absl::Now() + absl::Hours(2)))
                      .ok());
    }
    // Finish message 0 entirely.
    auto due2 = *store->Due(2, absl::Now(), 100);
    ASSERT_TRUE(
        UpdateSync(*store, Outcome(due2[0], RecipientState::kDelivered)).ok());
  }
  RecoveryStats stats;
  auto store = OpenOrDie(Options(path), &stats);
  EXPECT_EQ(stats.messages, 9u);
  EXPECT_EQ(stats.pending_recipients, 9u + 6u);  // 9 eves, bob of msgs 4..9.
  EXPECT_EQ(stats.final_recipients, 3u);         // bob of msgs 1..3.
  EXPECT_EQ(store->Due(1, absl::Now(), 100)->size(), 3u);  // 3 deferred later.
  EXPECT_EQ(store->Due(1, absl::Now() + absl::Hours(3), 100)->size(), 6u);
  EXPECT_EQ(store->Due(2, absl::Now(), 100)->size(), 9u);
  auto next = EnqueueSync(*store, Message({{"x@c.test", 0}}));
  EXPECT_GT(*next, last_id);
  auto counts = store->Counts();
  EXPECT_EQ(counts->by_state[static_cast<int>(RecipientState::kDelivered)], 3u);
  EXPECT_EQ(counts->by_state[static_cast<int>(RecipientState::kDeferred)], 3u);
}

TEST(StoreTest, RecoveryMovesRecipientsWhenShardsChange) {
  std::string path = TempPath("reshard");
  {
    auto store = OpenOrDie(Options(path, 4));
    for (int i = 0; i < 8; ++i) {
      ASSERT_TRUE(EnqueueSync(*store, Message({{absl::StrCat("u@d", i, ".test"),
                                                static_cast<uint16_t>(i % 4)}}))
                      .ok());
    }
  }
  RecoveryStats stats;
  RocksStoreOptions o = Options(path, 2);
  o.shard_of = [](absl::string_view site) { return site == "d0.test" ? 1 : 0; };
  auto store = OpenOrDie(o, &stats);
  EXPECT_GT(stats.rescheduled, 0u);
  auto due0 = *store->Due(0, absl::Now(), 100);
  auto due1 = *store->Due(1, absl::Now(), 100);
  EXPECT_EQ(due0.size() + due1.size(), 8u);
  for (const auto& r : due1) EXPECT_EQ(r.spec.site, "d0.test");
  for (const auto& r : due0) EXPECT_EQ(r.spec.shard, 0);
}

TEST(StoreTest, FreeSpaceFloorRefusesNewMailButNotUpdates) {
  std::atomic<uint64_t> free_bytes{10ull << 30};
  RocksStoreOptions o = Options(TempPath("floor"));
  o.min_free_bytes = 1ull << 30;
  o.free_bytes = [&] { return free_bytes.load(); };
  auto store = OpenOrDie(o);
  ASSERT_TRUE(EnqueueSync(*store, Message({{"bob@a.test", 0}})).ok());
  free_bytes = 100 << 20;
  store->CheckFreeSpace();
  EXPECT_FALSE(store->AcceptingNewMail());
  auto refused = EnqueueSync(*store, Message({{"bob@a.test", 0}}));
  EXPECT_TRUE(absl::IsResourceExhausted(refused.status())) << refused.status();
  EXPECT_THAT(std::string(refused.status().message()), HasSubstr("floor"));
  // Deliveries free space, so they go on.
  auto due = *store->Due(0, absl::Now(), 10);
  EXPECT_TRUE(
      UpdateSync(*store, Outcome(due[0], RecipientState::kDelivered)).ok());
  free_bytes = 5ull << 30;
  store->CheckFreeSpace();
  EXPECT_TRUE(store->AcceptingNewMail());
  EXPECT_TRUE(EnqueueSync(*store, Message({{"bob@a.test", 0}})).ok());
}

// A burst between two free-space checks used to run the disk from 10 MiB
// free to 11 KiB: now each message is admitted against the bytes it takes,
// counting those admitted before it and not yet written.
TEST(StoreTest, FloorIsNeverCrossedByABurst) {
  constexpr uint64_t kBase = 10 << 20, kFloor = 8 << 20;
  std::atomic<RocksStore*> self{nullptr};
  RocksStoreOptions o = Options(TempPath("burst"), 1);
  o.min_free_bytes = kFloor;
  o.emergency_space_bytes = 0;
  // The disk fills as the spool is written.
  o.free_bytes = [&] {
    RocksStore* s = self.load();
    uint64_t used = s ? s->SpoolUsage().bytes : 0;
    return used >= kBase ? 0 : kBase - used;
  };
  auto store = OpenOrDie(o);
  self = store.get();
  store->CheckFreeSpace();
  EXPECT_TRUE(store->HasRoomFor(1 << 20));
  EXPECT_FALSE(store->HasRoomFor(3 << 20));
  std::atomic<int> accepted{0}, refused{0}, answered{0};
  for (int i = 0; i < 98; ++i) {
    store->Enqueue(
        Message({{"bob@a.test", 0}}, absl::StrCat("Subject: ", i, "\r\n\r\n",
                                                  std::string(100 << 10, 'x'))),
        [&](absl::StatusOr<MessageId> id) {
          (id.ok() ? accepted : refused)++;
          if (!id.ok()) {
            EXPECT_TRUE(absl::IsResourceExhausted(id.status()));
          }
          ++answered;
        });
  }
  absl::Time give_up = absl::Now() + absl::Seconds(20);
  while (answered.load() < 98 && absl::Now() < give_up) {
    absl::SleepFor(absl::Milliseconds(5));
  }
  ASSERT_EQ(answered.load(), 98);
  EXPECT_GT(accepted.load(), 10);
  EXPECT_GT(refused.load(), 50);
  // The spool's own record headers are the only bytes not counted ahead.
  EXPECT_GE(o.free_bytes(), kFloor - (64 << 10))
      << accepted.load() << " accepted";
  store.reset();
  self = nullptr;
}

TEST(StoreTest, EmergencySpaceLetsAStartOnAFullDiskDeliver) {
  std::atomic<uint64_t> free_bytes{1ull << 30};
  RocksStoreOptions o = Options(TempPath("emergency"), 1);
  o.min_free_bytes = 1 << 20;
  o.emergency_space_bytes = 2 << 20;
  o.free_bytes = [&] { return free_bytes.load(); };
  auto store = OpenOrDie(o);
  store->CheckFreeSpace();
  std::string path = store->EmergencyPath();
  struct stat st;
  ASSERT_EQ(stat(path.c_str(), &st), 0) << "kept while there is room";
  EXPECT_EQ(st.st_size, 2 << 20);
  ASSERT_TRUE(EnqueueSync(*store, Message({{"bob@a.test", 0}})).ok());
  store.reset();
  // The disk filled up while it was stopped.
  free_bytes = 0;
  store = OpenOrDie(o);
  EXPECT_NE(stat(path.c_str(), &st), 0) << "released to start";
  // What the freed space holds is no room for new mail...
  free_bytes = 2 << 20;
  store->CheckFreeSpace();
  EXPECT_FALSE(store->AcceptingNewMail());
  EXPECT_FALSE(store->HasRoomFor(0));
  // ...but what is queued is delivered.
  auto due = *store->Due(0, absl::Now(), 10);
  ASSERT_EQ(due.size(), 1u);
  EXPECT_TRUE(
      UpdateSync(*store, Outcome(due[0], RecipientState::kDelivered)).ok());
  // Space again: the emergency space is kept again, and mail taken.
  free_bytes = 1ull << 30;
  store->CheckFreeSpace();
  EXPECT_EQ(stat(path.c_str(), &st), 0);
  EXPECT_TRUE(store->AcceptingNewMail());
  EXPECT_TRUE(EnqueueSync(*store, Message({{"bob@a.test", 0}})).ok());
}

// A recipient put back by a suspended site: no attempt counted, and the
// time held kept (it does not count toward the maximum age), across a
// restart too.
TEST(StoreTest, UnattemptedUpdatesKeepTheCountAndAddHeldTime) {
  RocksStoreOptions o = Options(TempPath("held"), 1);
  auto store = OpenOrDie(o);
  ASSERT_TRUE(EnqueueSync(*store, Message({{"bob@a.test", 0}})).ok());
  auto due = *store->Due(0, absl::Now(), 10);
  ASSERT_EQ(due.size(), 1u);
  RecipientUpdate park =
      Outcome(due[0], RecipientState::kDeferred, absl::Now() - absl::Seconds(1),
              "451 4.4.5 held");
  park.attempted = false;
  park.held_more = absl::Minutes(3);
  ASSERT_TRUE(UpdateSync(*store, std::move(park)).ok());
  due = *store->Due(0, absl::Now(), 10);
  ASSERT_EQ(due.size(), 1u);
  EXPECT_EQ(due[0].attempts, 0u);
  EXPECT_EQ(due[0].held, absl::Minutes(3));
  RecipientUpdate tried = Outcome(due[0], RecipientState::kDeferred,
                                  absl::Now() - absl::Seconds(1), "451 later");
  tried.held_more = absl::Seconds(30);
  ASSERT_TRUE(UpdateSync(*store, std::move(tried)).ok());
  store.reset();
  store = OpenOrDie(o);
  due = *store->Due(0, absl::Now(), 10);
  ASSERT_EQ(due.size(), 1u);
  EXPECT_EQ(due[0].attempts, 1u);
  EXPECT_EQ(due[0].held, absl::Minutes(3) + absl::Seconds(30));
}

TEST(StoreTest, FinishedMessagesAreKeptForLookupAndCountedForever) {
  RocksStoreOptions o = Options(TempPath("finished"), 1);
  auto store = OpenOrDie(o);
  auto id =
      EnqueueSync(*store, Message({{"bob@a.test", 0}, {"eve@b.test", 0}}));
  ASSERT_TRUE(id.ok());
  auto due = *store->Due(0, absl::Now(), 10);
  ASSERT_EQ(due.size(), 2u);
  ASSERT_TRUE(UpdateSync(*store, Outcome(due[0], RecipientState::kDelivered,
                                         absl::UnixEpoch(), "250 2.0.0 ok"))
                  .ok());
  ASSERT_TRUE(
      UpdateSync(*store, Outcome(due[1], RecipientState::kFailed,
                                 absl::UnixEpoch(), "550 5.1.1 no such user"))
          .ok());
  EXPECT_TRUE(absl::IsNotFound(store->Read(*id, false).status()));
  auto check = [&](RocksStore& s) {
    auto m = s.Lookup(*id);
    ASSERT_TRUE(m.ok()) << m.status();
    EXPECT_TRUE(m->finished);
    EXPECT_EQ(m->envelope.sender, "alice@sender.test");
    ASSERT_EQ(m->recipients.size(), 2u);
    EXPECT_EQ(m->recipients[0].state, RecipientState::kDelivered);
    EXPECT_EQ(m->recipients[1].state, RecipientState::kFailed);
    EXPECT_EQ(m->recipients[1].last_reply.ToString(), "550 5.1.1 no such user");
    auto c = s.Counts();
    ASSERT_TRUE(c.ok());
    EXPECT_EQ(c->messages, 0u);
    EXPECT_EQ(c->totals[static_cast<int>(RecipientState::kDelivered)], 1u);
    EXPECT_EQ(c->totals[static_cast<int>(RecipientState::kFailed)], 1u);
  };
  check(*store);
  store.reset();
  store = OpenOrDie(o);  // Across a restart.
  check(*store);
  // A read-only view (the CLI's) finds it too.
  RocksStoreOptions view_options = o;
  view_options.read_only = true;
  auto view = RocksStore::Open(view_options);
  ASSERT_TRUE(view.ok()) << view.status();
  check(**view);
  view->reset();
  // Past the retention, the record goes; the totals stay.
  store.reset();
  o.keep_finished = absl::Microseconds(1);
  store = OpenOrDie(o);
  absl::Time give_up = absl::Now() + absl::Seconds(5);
  while (store->Lookup(*id).ok() && absl::Now() < give_up) {
    absl::SleepFor(absl::Milliseconds(20));
  }
  auto gone = store->Lookup(*id);
  EXPECT_TRUE(absl::IsNotFound(gone.status())) << gone.status();
  EXPECT_THAT(std::string(gone.status().message()),
              HasSubstr("none finished in the last"));
  EXPECT_EQ(
      store->Counts()->totals[static_cast<int>(RecipientState::kDelivered)],
      1u);
}

// Fails every WAL append while `fail` is set, like a full or broken disk.
class FlakyFs : public rocksdb::FileSystemWrapper {
 public:
  explicit FlakyFs(std::shared_ptr<rocksdb::FileSystem> base)
      : FileSystemWrapper(std::move(base)) {}
  const char* Name() const override { return "FlakyFs"; }
  std::atomic<bool> fail{false};

  rocksdb::IOStatus NewWritableFile(
      const std::string& name, const rocksdb::FileOptions& options,
      std::unique_ptr<rocksdb::FSWritableFile>* out,
      rocksdb::IODebugContext* dbg) override {
    std::unique_ptr<rocksdb::FSWritableFile> inner;
    rocksdb::IOStatus s = target()->NewWritableFile(name, options, &inner, dbg);
    if (s.ok()) out->reset(new File(std::move(inner), this));
    return s;
  }

 private:
  class File : public rocksdb::FSWritableFileOwnerWrapper {
   public:
    File(std::unique_ptr<rocksdb::FSWritableFile> f, FlakyFs* fs)
        : FSWritableFileOwnerWrapper(std::move(f)), fs_(fs) {}
    rocksdb::IOStatus Append(const rocksdb::Slice& data,
                             const rocksdb::IOOptions& o,
                             rocksdb::IODebugContext* d) override {
      if (fs_->fail) return rocksdb::IOStatus::IOError("injected I/O error");
      return target()->Append(data, o, d);
    }
    rocksdb::IOStatus Append(const rocksdb::Slice& data,
                             const rocksdb::IOOptions& o,
                             const rocksdb::DataVerificationInfo& v,
                             rocksdb::IODebugContext* d) override {
      if (fs_->fail) return rocksdb::IOStatus::IOError("injected I/O error");
      return target()->Append(data, o, v, d);
    }
    rocksdb::IOStatus Sync(const rocksdb::IOOptions& o,
                           rocksdb::IODebugContext* d) override {
      if (fs_->fail) return rocksdb::IOStatus::IOError("injected I/O error");
      return target()->Sync(o, d);
    }
    rocksdb::IOStatus Fsync(const rocksdb::IOOptions& o,
                            rocksdb::IODebugContext* d) override {
      if (fs_->fail) return rocksdb::IOStatus::IOError("injected I/O error");
      return target()->Fsync(o, d);
    }

   private:
    FlakyFs* fs_;
  };
};

TEST(StoreTest, FailedWriteIsAnErrorNeverAnAcknowledgement) {
  auto fs = std::make_shared<FlakyFs>(rocksdb::FileSystem::Default());
  std::unique_ptr<rocksdb::Env> env = rocksdb::NewCompositeEnv(fs);
  RocksStoreOptions o = Options(TempPath("fault"));
  o.env = env.get();
  std::string path = o.path;
  MessageId good;
  {
    auto store = OpenOrDie(o);
    good = *EnqueueSync(*store, Message({{"bob@a.test", 0}}));
    fs->fail = true;
    auto failed = EnqueueSync(*store, Message({{"eve@b.test", 0}}));
    EXPECT_TRUE(absl::IsUnavailable(failed.status())) << failed.status();
    EXPECT_EQ(store->LiveMessages(), 1u);  // The failed one is not counted.
    // A failed final update leaves the message pending, not half-finished.
    auto due = *store->Due(0, absl::Now(), 10);
    ASSERT_EQ(due.size(), 1u);
    EXPECT_TRUE(absl::IsUnavailable(
        UpdateSync(*store, Outcome(due[0], RecipientState::kDelivered))));
    EXPECT_EQ(store->LiveMessages(), 1u);
    fs->fail = false;
    // The disk is back: within about a second the committer reopens the
    // queue by itself; until then callers get Unavailable (451), never a
    // false success.
    absl::Status deferred;
    absl::Time give_up = absl::Now() + absl::Seconds(10);
    do {
      deferred = UpdateSync(
          *store, Outcome(due[0], RecipientState::kDeferred, absl::Now()));
      if (deferred.ok()) break;
      EXPECT_TRUE(absl::IsUnavailable(deferred)) << deferred;
      absl::SleepFor(absl::Milliseconds(100));
    } while (absl::Now() < give_up);
    EXPECT_TRUE(deferred.ok()) << deferred;
    auto later = EnqueueSync(*store, Message({{"zed@c.test", 0}}));
    EXPECT_TRUE(later.ok()) << later.status();
    EXPECT_EQ(store->LiveMessages(), 2u);
  }
  o.env = nullptr;
  auto store = OpenOrDie(o);
  auto kept = store->Read(good, false);
  ASSERT_TRUE(kept.ok());
  EXPECT_EQ(kept->recipients[0].state, RecipientState::kDeferred);
  auto all = store->List(ListFilter{});
  ASSERT_TRUE(all.ok());
  for (const auto& m : *all) {
    EXPECT_NE(m.recipients[0].spec.address, "eve@b.test");
  }
}

// Bodies of `n` bytes that differ per message.
std::string Body(int i, size_t n) {
  std::string body = absl::StrCat("Subject: ", i, "\r\n\r\n");
  while (body.size() < n) absl::StrAppend(&body, "line ", i, "\r\n");
  return body;
}

size_t SegmentFiles(const std::string& dir) {
  size_t n = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    std::string name = e.path().filename().string();
    if (name.size() == 20 && name.substr(16) == ".seg") ++n;
  }
  return n;
}

// Enqueues `n` messages with bodies Body(i, 4000); their ids, in order.
std::vector<MessageId> EnqueueNumbered(Store& store, int n) {
  std::vector<MessageId> ids;
  for (int i = 0; i < n; ++i) {
    auto id = EnqueueSync(store, Message({{"bob@a.test", 0}}, Body(i, 4000)));
    EXPECT_TRUE(id.ok()) << id.status();
    if (id.ok()) ids.push_back(*id);
  }
  return ids;
}

TEST(StoreTest, SpoolReplayBringsBackWhatRocksDbLost) {
  // RocksDB is written without a sync: after a power failure its WAL may
  // lack the newest groups. The test option drops them at close; the spool
  // must bring every acknowledged enqueue and update back.
  RocksStoreOptions o = Options(TempPath("replay"));
  o.spool_segment_bytes = 64 << 10;  // Records span several segments.
  o.test_lose_unsynced_rocksdb_writes = true;
  std::vector<MessageId> ids;
  {
    auto store = OpenOrDie(o);
    for (int i = 0; i < 40; ++i) {
      auto id = EnqueueSync(*store, Message({{"bob@a.test", uint16_t(i % 4)}},
                                            Body(i, 3000 + 100 * i)));
      ASSERT_TRUE(id.ok()) << id.status();
      ids.push_back(*id);
    }
    // The first ten delivered, the next five deferred.
    for (int i = 0; i < 15; ++i) {
      auto m = store->Read(ids[i], false);
      ASSERT_TRUE(m.ok());
      ASSERT_TRUE(UpdateSync(*store, Outcome(m->recipients[0],
                                             i < 10 ? RecipientState::kDelivered
                                                    : RecipientState::kDeferred,
                                             absl::Now() + absl::Hours(1)))
                      .ok());
    }
    EXPECT_GE(store->SpoolSegments(), 2u);
  }
  {
    // What RocksDB alone has: nothing of it.
    RocksStoreOptions view = o;
    view.read_only = true;
    auto store = OpenOrDie(view);
    auto all = store->List(ListFilter{});
    ASSERT_TRUE(all.ok()) << all.status();
    EXPECT_EQ(all->size(), 0u);
  }
  o.test_lose_unsynced_rocksdb_writes = false;
  RecoveryStats stats;
  auto store = OpenOrDie(o, &stats);
  EXPECT_EQ(stats.replayed, 55u);  // 40 enqueues, 15 updates.
  EXPECT_EQ(stats.messages, 30u);
  for (int i = 0; i < 40; ++i) {
    auto m = store->Read(ids[i], true);
    if (i < 10) {
      EXPECT_TRUE(absl::IsNotFound(m.status())) << i;
      continue;
    }
    ASSERT_TRUE(m.ok()) << i << ": " << m.status();
    EXPECT_EQ(m->body, Body(i, 3000 + 100 * i));
    EXPECT_EQ(m->recipients[0].state,
              i < 15 ? RecipientState::kDeferred : RecipientState::kQueued);
  }
  // Replaying again (a second crash before any new checkpoint) is harmless
  // and the checkpoint written at recovery makes it unnecessary.
  store.reset();
  store = OpenOrDie(o, &stats);
  EXPECT_EQ(stats.replayed, 0u);
  EXPECT_EQ(stats.messages, 30u);
}

TEST(StoreTest, SpoolSegmentsGoWhenTheirBodiesAreDone) {
  RocksStoreOptions o = Options(TempPath("segments"), 1);
  o.spool_segment_bytes = 64 << 10;
  o.spool_reserve_segments = 2;
  std::string dir = o.path + "/spool";
  auto store = OpenOrDie(o);
  std::vector<MessageId> ids = EnqueueNumbered(*store, 60);
  ASSERT_EQ(ids.size(), 60u);
  size_t before = SegmentFiles(dir);
  EXPECT_GE(before, 3u);
  // One message keeps its segment; the rest are delivered.
  for (size_t i = 1; i < ids.size(); ++i) {
    auto m = store->Read(ids[i], false);
    ASSERT_TRUE(m.ok());
    ASSERT_TRUE(UpdateSync(*store, Outcome(m->recipients[0],
                                           RecipientState::kDelivered))
                    .ok());
  }
  // Within a checkpoint interval, segments with nothing live go (two of
  // them become spares, the rest are deleted).
  absl::Time give_up = absl::Now() + absl::Seconds(10);
  while (SegmentFiles(dir) > 2 && absl::Now() < give_up) {
    absl::SleepFor(absl::Milliseconds(50));
  }
  EXPECT_LE(SegmentFiles(dir), 2u);  // The first message's and the last.
  auto kept = store->Read(ids[0], true);
  ASSERT_TRUE(kept.ok()) << kept.status();
  EXPECT_EQ(kept->body, Body(0, 4000));
  // After a restart, the same.
  store.reset();
  store = OpenOrDie(o);
  kept = store->Read(ids[0], true);
  ASSERT_TRUE(kept.ok()) << kept.status();
  EXPECT_EQ(kept->body, Body(0, 4000));
  EXPECT_LE(SegmentFiles(dir), 1u);
}

TEST(StoreTest, SpoolReserveIsWrittenOnceMailCameAndRefilledWhenIdle) {
  constexpr uint64_t kSegment = 64 << 10;
  RocksStoreOptions o = Options(TempPath("reserve"), 1);
  o.spool_segment_bytes = kSegment;
  o.spool_reserve_segments = 3;
  auto store = OpenOrDie(o);
  // A new queue keeps its disk until mail comes, even when idle.
  EXPECT_EQ(store->SpoolUsage().spares, 0u);
  absl::SleepFor(absl::Milliseconds(1500));
  EXPECT_EQ(store->SpoolUsage().bytes, 0u);
  ASSERT_TRUE(
      EnqueueSync(*store, Message({{"bob@a.test", 0}}, Body(1, 4000))).ok());
  absl::Time ready_by = absl::Now() + absl::Seconds(10);
  while (store->SpoolUsage().spares < 3 && absl::Now() < ready_by) {
    absl::SleepFor(absl::Milliseconds(20));
  }
  ASSERT_EQ(store->SpoolUsage().spares, 3u);
  // Reopened, a used queue has its reserve ready at once.
  store.reset();
  store = OpenOrDie(o);
  EXPECT_EQ(store->SpoolUsage().spares, 3u);
  // About eight records a segment: the burst takes the reserve and grows
  // two segments beyond it.
  std::vector<MessageId> ids = EnqueueNumbered(*store, 40);
  ASSERT_EQ(ids.size(), 40u);
  EXPECT_GE(store->SpoolSegments(), 5u);
  // Idle: the committer writes the reserve again.
  absl::Time give_up = absl::Now() + absl::Seconds(10);
  while (store->SpoolUsage().spares < 3 && absl::Now() < give_up) {
    absl::SleepFor(absl::Milliseconds(20));
  }
  EXPECT_EQ(store->SpoolUsage().spares, 3u);
  for (size_t i = 0; i < ids.size(); ++i) {
    auto m = store->Read(ids[i], true);
    ASSERT_TRUE(m.ok()) << m.status();
    EXPECT_EQ(m->body, Body(static_cast<int>(i), 4000));
  }
  store.reset();
  RecoveryStats stats;
  store = OpenOrDie(o, &stats);
  EXPECT_EQ(stats.messages, 41u);
  EXPECT_EQ(store->SpoolUsage().spares, 3u);
  auto last = store->Read(ids.back(), true);
  ASSERT_TRUE(last.ok()) << last.status();
  EXPECT_EQ(last->body, Body(39, 4000));
}

TEST(StoreTest, SpoolReserveStaysAboveTheFreeSpaceFloor) {
  RocksStoreOptions o = Options(TempPath("reserve-floor"), 1);
  o.spool_segment_bytes = 64 << 10;
  o.spool_reserve_segments = 3;
  o.min_free_bytes = 100 << 20;
  // Room for one more segment above the floor, not for a reserve.
  o.free_bytes = [] { return uint64_t{(100 << 20) + (64 << 10)}; };
  auto store = OpenOrDie(o);
  EXPECT_EQ(store->SpoolUsage().spares, 0u);
  EXPECT_TRUE(store->AcceptingNewMail());
  EXPECT_TRUE(
      EnqueueSync(*store, Message({{"bob@a.test", 0}}, Body(1, 4000))).ok());
}

TEST(StoreTest, FewLiveBodiesMoveOutOfOldSegments) {
  // Deferred mail must not keep whole segments on disk.
  RocksStoreOptions o = Options(TempPath("relocate"), 1);
  o.spool_segment_bytes = 64 << 10;
  o.spool_reserve_segments = 2;
  o.spool_relocate_interval = absl::Milliseconds(20);
  o.spool_relocate_after = absl::Milliseconds(200);
  std::string dir = o.path + "/spool";
  auto store = OpenOrDie(o);
  std::vector<MessageId> ids = EnqueueNumbered(*store, 64);
  ASSERT_EQ(ids.size(), 64u);
  size_t before = SegmentFiles(dir);
  EXPECT_GE(before, 6u);
  // Every eighth stays (deferred); the rest are delivered.
  for (size_t i = 0; i < ids.size(); ++i) {
    auto m = store->Read(ids[i], false);
    ASSERT_TRUE(m.ok());
    ASSERT_TRUE(
        UpdateSync(*store, Outcome(m->recipients[0],
                                   i % 8 == 0 ? RecipientState::kDeferred
                                              : RecipientState::kDelivered,
                                   absl::Now() + absl::Hours(1)))
            .ok());
  }
  EXPECT_EQ(store->LiveMessages(), 8u);
  absl::Time give_up = absl::Now() + absl::Seconds(20);
  while (SegmentFiles(dir) > 2 && absl::Now() < give_up) {
    absl::SleepFor(absl::Milliseconds(50));
  }
  EXPECT_LE(SegmentFiles(dir), 2u) << "from " << before;
  for (size_t i = 0; i < ids.size(); i += 8) {
    auto m = store->Read(ids[i], true);
    ASSERT_TRUE(m.ok()) << i << ": " << m.status();
    EXPECT_EQ(m->body, Body(static_cast<int>(i), 4000));
    EXPECT_EQ(m->recipients[0].state, RecipientState::kDeferred);
  }
  store.reset();
  store = OpenOrDie(o);
  for (size_t i = 0; i < ids.size(); i += 8) {
    auto m = store->Read(ids[i], true);
    ASSERT_TRUE(m.ok()) << i << ": " << m.status();
    EXPECT_EQ(m->body, Body(static_cast<int>(i), 4000));
  }
  // Finishing them empties the spool.
  for (size_t i = 0; i < ids.size(); i += 8) {
    auto m = store->Read(ids[i], false);
    ASSERT_TRUE(m.ok());
    ASSERT_TRUE(UpdateSync(*store, Outcome(m->recipients[0],
                                           RecipientState::kDelivered))
                    .ok());
  }
  store.reset();
  store = OpenOrDie(o);
  EXPECT_EQ(SegmentFiles(dir), 0u);
}

TEST(StoreTest, LargeBodiesRoundTrip) {
  RocksStoreOptions o = Options(TempPath("large"));
  o.spool_segment_bytes = 1 << 20;  // Bodies larger than a segment.
  auto store = OpenOrDie(o);
  std::vector<std::pair<MessageId, std::string>> sent;
  for (size_t size : {size_t{20} << 20, size_t{3} << 20, size_t{100}}) {
    std::string body = Body(static_cast<int>(size), size);
    auto id = EnqueueSync(*store, Message({{"bob@a.test", 0}}, body));
    ASSERT_TRUE(id.ok()) << id.status();
    sent.push_back({*id, std::move(body)});
  }
  for (int restart = 0; restart < 2; ++restart) {
    for (const auto& [id, body] : sent) {
      auto m = store->Read(id, true);
      ASSERT_TRUE(m.ok()) << m.status();
      EXPECT_EQ(m->body.size(), body.size());
      EXPECT_TRUE(m->body == body);
    }
    store.reset();
    store = OpenOrDie(o);
  }
}

TEST(StoreTest, QueueWrittenBeforeTheSpoolStillWorks) {
  // A queue from a version that kept bodies in RocksDB's "bodies" column
  // family: written here the way that version wrote it.
  RocksStoreOptions o = Options(TempPath("legacy"), 1);
  const MessageId id = (MessageId{1700000000} * 1000000) << 8;
  const std::string body = Body(7, 5000);
  {
    rocksdb::Options options;
    options.create_if_missing = true;
    options.create_missing_column_families = true;
    std::vector<rocksdb::ColumnFamilyDescriptor> families;
    for (const char* name :
         {"default", "bodies", "envelopes", "recipients", "schedule"}) {
      families.push_back({name, rocksdb::ColumnFamilyOptions()});
    }
    std::vector<rocksdb::ColumnFamilyHandle*> h;
    rocksdb::DB* raw = nullptr;
    ASSERT_TRUE(rocksdb::DB::Open(options, o.path, families, &h, &raw).ok());
    std::unique_ptr<rocksdb::DB> db(raw);
    NewMessage m = Message({{"bob@a.test", 0}}, body);
    m.envelope.recipient_count = 1;
    m.envelope.body_bytes = body.size();
    RecipientRecord r;
    r.spec = m.recipients[0];
    r.next_attempt = absl::FromUnixSeconds(1700000000);
    rocksdb::WriteBatch b;
    std::string key = codec::MessageKey(id);
    b.Put(h[1], key, body);
    b.Put(h[2], key, codec::EncodeEnvelope(m.envelope));
    b.Put(h[3], codec::RecipientKey(id, 0), codec::EncodeRecipient(r));
    b.Put(h[4], codec::ScheduleKey(0, r.next_attempt, id, 0), "");
    rocksdb::WriteOptions wo;
    wo.sync = true;
    ASSERT_TRUE(db->Write(wo, &b).ok());
    for (auto* handle : h) db->DestroyColumnFamilyHandle(handle);
  }
  RecoveryStats stats;
  auto store = OpenOrDie(o, &stats);
  EXPECT_EQ(stats.messages, 1u);
  auto m = store->Read(id, true);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->body, body);
  // New mail goes to the spool beside it; finishing the old one removes it.
  auto fresh = EnqueueSync(*store, Message({{"new@a.test", 0}}, Body(8, 900)));
  ASSERT_TRUE(fresh.ok());
  auto due = store->Due(0, absl::Now(), 10);
  ASSERT_TRUE(due.ok());
  ASSERT_EQ(due->size(), 2u);
  for (const RecipientRecord& r : *due) {
    ASSERT_TRUE(
        UpdateSync(*store, Outcome(r, RecipientState::kDelivered)).ok());
  }
  EXPECT_TRUE(absl::IsNotFound(store->Read(id, true).status()));
  EXPECT_EQ(store->LiveMessages(), 0u);
  store.reset();
  store = OpenOrDie(o, &stats);
  EXPECT_EQ(stats.messages, 0u);
}

TEST(StoreTest, MissingSpoolSegmentIsDataLossNotACrash) {
  RocksStoreOptions o = Options(TempPath("missing"));
  auto store = OpenOrDie(o);
  auto id = EnqueueSync(*store, Message({{"bob@a.test", 0}}, Body(1, 5000)));
  ASSERT_TRUE(id.ok());
  store.reset();
  std::filesystem::remove_all(o.path + "/spool");  // An operator's mistake.
  store = OpenOrDie(o);
  auto m = store->Read(*id, true);
  EXPECT_TRUE(absl::IsDataLoss(m.status())) << m.status();
  EXPECT_THAT(m.status().message(), HasSubstr("is missing"));
  EXPECT_TRUE(store->Read(*id, false).ok());  // Still listed and shown.
  // New mail is accepted and readable.
  auto next = EnqueueSync(*store, Message({{"eve@a.test", 0}}, Body(2, 500)));
  ASSERT_TRUE(next.ok());
  EXPECT_TRUE(store->Read(*next, true).ok());
}

TEST(StoreTest, CorruptBodyIsAnErrorNotWrongMail) {
  RocksStoreOptions o = Options(TempPath("corrupt"));
  auto store = OpenOrDie(o);
  auto id = EnqueueSync(*store, Message({{"bob@a.test", 0}}, Body(1, 5000)));
  ASSERT_TRUE(id.ok());
  store.reset();
  std::string dir = o.path + "/spool";
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    std::string name = e.path().filename().string();
    if (name.size() != 20) continue;
    // Flip a byte inside the body (after the 64-byte header).
    FILE* f = fopen(e.path().c_str(), "r+b");
    ASSERT_NE(f, nullptr);
    fseek(f, 64 + 100, SEEK_SET);
    int c = fgetc(f);
    fseek(f, 64 + 100, SEEK_SET);
    fputc(c ^ 0x20, f);
    fclose(f);
  }
  store = OpenOrDie(o);
  auto m = store->Read(*id, true);
  EXPECT_TRUE(absl::IsDataLoss(m.status())) << m.status();
  EXPECT_THAT(m.status().message(), HasSubstr("checksum"));
  EXPECT_TRUE(store->Read(*id, false).ok());  // The envelope is intact.
}

TEST(StoreTest, FailedSpoolWriteIsAnErrorAndTheNextOneTakesItsPlace) {
  // A disk error half way through a record: the callers hear of it, the
  // message is not counted, and the next group is written over the torn
  // record, so replay after a power failure still finds every group after.
  auto fail = std::make_shared<std::atomic<bool>>(false);
  RocksStoreOptions o = Options(TempPath("spoolfault"));
  o.test_fail_spool_write = [fail] { return fail->load(); };
  o.test_lose_unsynced_rocksdb_writes = true;  // Only the spool will tell.
  std::vector<MessageId> kept;
  {
    auto store = OpenOrDie(o);
    auto first = EnqueueSync(*store, Message({{"a@a.test", 0}}, Body(1, 9000)));
    ASSERT_TRUE(first.ok());
    kept.push_back(*first);
    fail->store(true);
    auto lost = EnqueueSync(*store, Message({{"b@b.test", 0}}, Body(2, 9000)));
    EXPECT_TRUE(absl::IsUnavailable(lost.status())) << lost.status();
    EXPECT_THAT(lost.status().message(), HasSubstr("spool write"));
    EXPECT_EQ(store->LiveMessages(), 1u);
    fail->store(false);
    for (int i = 3; i < 6; ++i) {
      auto id = EnqueueSync(*store, Message({{"c@c.test", 0}}, Body(i, 300)));
      ASSERT_TRUE(id.ok()) << id.status();
      kept.push_back(*id);
    }
    EXPECT_EQ(store->LiveMessages(), 4u);
    // RocksDB was not reopened for a spool error: what it held, it holds.
    for (MessageId id : kept) {
      auto m = store->Read(id, true);
      EXPECT_TRUE(m.ok()) << m.status();
    }
  }
  o.test_lose_unsynced_rocksdb_writes = false;
  o.test_fail_spool_write = nullptr;
  RecoveryStats stats;
  auto store = OpenOrDie(o, &stats);
  EXPECT_EQ(stats.messages, 4u);
  for (MessageId id : kept) {
    auto m = store->Read(id, true);
    ASSERT_TRUE(m.ok()) << m.status();
  }
  auto all = store->List(ListFilter{});
  ASSERT_TRUE(all.ok());
  for (const auto& m : *all) {
    EXPECT_NE(m.recipients[0].spec.address, "b@b.test");
  }
}

TEST(StoreTest, InspectionCountsAndFilters) {
  auto store = OpenOrDie(Options(TempPath("inspect")));
  NewMessage m1 = Message({{"a@gmail.test", 0}, {"b@yahoo.test", 1}});
  NewMessage m2 = Message({{"c@gmail.test", 0}});
  m2.envelope.sender = "news@other.test";
  auto id1 = *EnqueueSync(*store, std::move(m1));
  auto id2 = *EnqueueSync(*store, std::move(m2));
  auto due = *store->Due(1, absl::Now(), 10);
  ASSERT_TRUE(UpdateSync(*store, Outcome(due[0], RecipientState::kDeferred,
                                         absl::Now() + absl::Hours(1), "421"))
                  .ok());
  auto counts = store->Counts();
  ASSERT_TRUE(counts.ok());
  EXPECT_EQ(counts->messages, 2u);
  EXPECT_EQ(counts->recipients, 3u);
  EXPECT_EQ(counts->by_state[0], 2u);
  EXPECT_EQ(counts->by_state[1], 1u);
  ASSERT_EQ(counts->by_domain.size(), 2u);
  EXPECT_EQ(counts->by_domain[0].first, "gmail.test");
  EXPECT_EQ(counts->by_domain[0].second.recipients, 2u);
  EXPECT_EQ(counts->by_domain[1].first, "yahoo.test");
  EXPECT_EQ(counts->by_domain[1].second.recipients, 1u);
  EXPECT_EQ(counts->by_site.size(), 2u);
  // Received in 2023: the last age bucket (1280 minutes and over).
  EXPECT_EQ(counts->all.recipients, 3u);
  EXPECT_EQ(counts->all.ages[kAgeBuckets - 1], 3u);

  ListFilter deferred;
  deferred.has_state = true;
  deferred.state = RecipientState::kDeferred;
  auto list = *store->List(deferred);
  ASSERT_EQ(list.size(), 1u);
  EXPECT_EQ(list[0].id, id1);
  ListFilter by_domain;
  by_domain.domain = "GMAIL.test";
  EXPECT_EQ(store->List(by_domain)->size(), 2u);
  ListFilter by_sender;
  by_sender.sender = "NEWS@";
  list = *store->List(by_sender);
  ASSERT_EQ(list.size(), 1u);
  EXPECT_EQ(list[0].id, id2);
  ListFilter limited;
  limited.limit = 1;
  EXPECT_EQ(store->List(limited)->size(), 1u);
  // Paging: past the first message, the second alone.
  ListFilter after;
  after.after = id1;
  list = *store->List(after);
  ASSERT_EQ(list.size(), 1u);
  EXPECT_EQ(list[0].id, id2);
  ListFilter one;
  one.id = id1;
  list = *store->List(one);
  ASSERT_EQ(list.size(), 1u);
  EXPECT_EQ(list[0].id, id1);
}

TEST(StoreTest, CountsAndListsByCampaignTenantAndAge) {
  auto store = OpenOrDie(Options(TempPath("tags"), 2));
  NewMessage spring = Message({{"a@gmail.test", 0}, {"b@yahoo.test", 1}});
  spring.envelope.campaign = "spring";
  spring.envelope.tenant = "acme";
  // Received two hours ago: the 80-160 minute bucket.
  spring.envelope.received = absl::Now() - absl::Hours(2);
  NewMessage plain = Message({{"c@gmail.test", 0}});
  plain.envelope.campaign.clear();
  plain.envelope.tenant.clear();
  plain.envelope.received = absl::Now();
  auto spring_id = *EnqueueSync(*store, std::move(spring));
  ASSERT_TRUE(EnqueueSync(*store, std::move(plain)).ok());
  auto counts = *store->Counts();
  ASSERT_EQ(counts.by_campaign.size(), 2u);
  EXPECT_EQ(counts.by_campaign[0].first, "");
  EXPECT_EQ(counts.by_campaign[0].second.recipients, 1u);
  EXPECT_EQ(counts.by_campaign[1].first, "spring");
  EXPECT_EQ(counts.by_campaign[1].second.recipients, 2u);
  EXPECT_EQ(counts.by_campaign[1].second.ages[AgeBucket(absl::Hours(2))], 2u);
  EXPECT_EQ(AgeBucket(absl::Hours(2)), 5);
  EXPECT_EQ(AgeBucket(absl::Minutes(4)), 0);
  EXPECT_EQ(AgeBucket(absl::Hours(100)), kAgeBuckets - 1);
  ASSERT_EQ(counts.by_tenant.size(), 2u);
  EXPECT_EQ(counts.by_tenant[1].first, "acme");
  EXPECT_EQ(counts.all.ages[0], 1u);
  EXPECT_EQ(counts.all.ages[5], 2u);

  ListFilter f;
  f.campaign = "spring";
  auto list = *store->List(f);
  ASSERT_EQ(list.size(), 1u);
  EXPECT_EQ(list[0].id, spring_id);
  f.campaign.clear();
  f.tenant = "nobody";
  EXPECT_TRUE(store->List(f)->empty());
}

TEST(StoreTest, ClaimOneTakesWhatDeliveryHasNotAndDeliveryThenSkipsIt) {
  RocksStoreOptions o = Options(TempPath("claimone"), 1);
  o.fresh_bytes = 0;  // No fresh path: the scan hands recipients out.
  auto store = OpenOrDie(o);
  auto id = *EnqueueSync(*store, Message({{"a@x.test", 0}, {"b@x.test", 0}}));
  // Recipient 0 goes to an operator's action; delivery gets only 1.
  auto mine = store->ClaimOne(id, 0);
  ASSERT_TRUE(mine.ok()) << mine.status();
  ASSERT_TRUE(mine->has_value());
  EXPECT_EQ((*mine)->spec.address, "a@x.test");
  auto claimed = *store->Claim(0, absl::Now(), 10);
  ASSERT_EQ(claimed.size(), 1u);
  EXPECT_EQ(claimed[0].index, 1u);
  // What delivery holds is not the operator's to take.
  auto busy = store->ClaimOne(id, 1);
  ASSERT_TRUE(busy.ok());
  EXPECT_FALSE(busy->has_value());
  // Failed by the operator: final, not claimable again.
  ASSERT_TRUE(UpdateSync(*store, Outcome(**mine, RecipientState::kFailed,
                                         absl::Now(), "550 5.0.0 bounced"))
                  .ok());
  EXPECT_TRUE(absl::IsNotFound(store->ClaimOne(id, 0).status()));
  EXPECT_TRUE(absl::IsNotFound(store->ClaimOne(id, 7).status()));
  // Given back unchanged, the scan finds it again.
  store->Unclaim(claimed[0]);
  auto again = store->ClaimOne(id, 1);
  ASSERT_TRUE(again.ok() && again->has_value());
  store->Unclaim(**again);
  EXPECT_EQ(store->Claim(0, absl::Now(), 10)->size(), 1u);
}

TEST(StoreTest, BadMessagesAreRefused) {
  auto store = OpenOrDie(Options(TempPath("bad"), 2));
  EXPECT_TRUE(
      absl::IsInvalidArgument(EnqueueSync(*store, Message({})).status()));
  EXPECT_TRUE(absl::IsInvalidArgument(
      EnqueueSync(*store, Message({{"a@b.test", 5}})).status()));
  EXPECT_EQ(store->LiveMessages(), 0u);
}

TEST(StoreTest, ManyRecipientsBeyondSixtyFour) {
  const std::string path = TempPath("wide");
  auto store = OpenOrDie(Options(path, 1));
  std::vector<std::pair<std::string, uint16_t>> rcpts;
  for (int i = 0; i < 150; ++i)
    rcpts.push_back({absl::StrCat("u", i, "@x.test"), 0});
  auto id = *EnqueueSync(*store, Message(rcpts));
  auto due = *store->Due(0, absl::Now(), 1000);
  ASSERT_EQ(due.size(), 150u);
  for (int i = 0; i < 149; ++i) {
    ASSERT_TRUE(
        UpdateSync(*store, Outcome(due[i], RecipientState::kDelivered)).ok());
  }
  EXPECT_TRUE(absl::IsFailedPrecondition(
      UpdateSync(*store, Outcome(due[100], RecipientState::kDelivered))));
  EXPECT_TRUE(store->Read(id, true).ok());
  // A restart rebuilds which of the 150 are final from the records.
  store.reset();
  store = OpenOrDie(Options(path, 1));
  EXPECT_TRUE(absl::IsFailedPrecondition(
      UpdateSync(*store, Outcome(due[100], RecipientState::kDelivered))));
  EXPECT_TRUE(absl::IsFailedPrecondition(
      UpdateSync(*store, Outcome(due[3], RecipientState::kDelivered))));
  auto left = *store->Due(0, absl::Now(), 1000);
  ASSERT_EQ(left.size(), 1u);
  EXPECT_EQ(left[0].index, 149u);
  ASSERT_TRUE(
      UpdateSync(*store, Outcome(left[0], RecipientState::kExpired)).ok());
  EXPECT_FALSE(store->Read(id, true).ok());
}

TEST(CodecTest, GarbledValuesAreErrorsNotCrashes) {
  RecipientRecord r;
  r.spec.address = "someone@example.test";
  r.last_reply = Reply{250, "", "ok"};
  std::string good = codec::EncodeRecipient(r);
  ASSERT_TRUE(codec::DecodeRecipient(1, 0, good).ok());
  for (size_t cut = 0; cut < good.size(); ++cut) {
    EXPECT_FALSE(codec::DecodeRecipient(1, 0, good.substr(0, cut)).ok()) << cut;
  }
  std::string env = codec::EncodeEnvelope(Envelope{});
  for (size_t cut = 0; cut < env.size(); ++cut) {
    EXPECT_FALSE(codec::DecodeEnvelope(env.substr(0, cut)).ok()) << cut;
  }
  EXPECT_FALSE(codec::DecodeEnvelope(std::string("\x09garbage", 8)).ok());
  std::string huge_len = "\x01\xff\xff\xff\xff\x0f";
  EXPECT_FALSE(codec::DecodeRecipient(1, 0, huge_len).ok());
}

TEST(CodecTest, ScheduleKeysSortByShardThenTime) {
  absl::Time t = absl::FromUnixSeconds(1000);
  std::string a = codec::ScheduleKey(0, t + absl::Seconds(1), 5, 0);
  std::string b = codec::ScheduleKey(0, t + absl::Seconds(2), 1, 0);
  std::string c = codec::ScheduleKey(1, t, 1, 0);
  EXPECT_LT(a, b);
  EXPECT_LT(b, c);
  uint16_t shard;
  absl::Time when;
  MessageId id;
  uint32_t index;
  ASSERT_TRUE(codec::ParseScheduleKey(a, &shard, &when, &id, &index));
  EXPECT_EQ(shard, 0);
  EXPECT_EQ(when, t + absl::Seconds(1));
  EXPECT_EQ(id, 5u);
}

}  // namespace
}  // namespace peregrine::queue
