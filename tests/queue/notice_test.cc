// Store::UpdateWithNotice (a failure and its DSN in one atomic write), the
// side table, and the record fields added for bounces (delay_notified, the
// envelope's listener), against a real RocksDB.
#include <thread>

#include "absl/synchronization/notification.h"
#include "gtest/gtest.h"
#include "queue/codec.h"
#include "queue/rocksdb_store.h"
#include "tests/queue/store_testing.h"

namespace peregrine::queue {
namespace {

absl::StatusOr<MessageId> UpdateWithNoticeSync(
    Store& store, std::vector<RecipientUpdate> updates,
    std::optional<NewMessage> notice) {
  absl::Notification done;
  absl::StatusOr<MessageId> result;
  store.UpdateWithNotice(std::move(updates), std::move(notice),
                         [&](absl::StatusOr<MessageId> r) {
                           result = r;
                           done.Notify();
                         });
  done.WaitForNotification();
  return result;
}

NewMessage Notice(const std::string& to) {
  NewMessage n;
  n.envelope.sender = "";
  n.envelope.listener = "dsn";
  n.body = "Subject: Undelivered Mail\r\n\r\nreport\r\n";
  RecipientSpec r;
  r.address = to;
  r.notify = kNotifyNever;
  r.site = "sender.test";
  n.recipients.push_back(r);
  return n;
}

TEST(NoticeTest, FailuresAndTheirNoticeInOneWrite) {
  std::string path = TempPath("notice");
  MessageId original, notice;
  {
    auto store = OpenOrDie(Options(path));
    auto id = EnqueueSync(*store, Message({{"a@x.test", 0}, {"b@x.test", 0}}));
    ASSERT_TRUE(id.ok());
    original = *id;
    auto due = store->Claim(0, absl::Now() + absl::Seconds(1), 10);
    ASSERT_TRUE(due.ok());
    ASSERT_EQ(due->size(), 2u);
    std::vector<RecipientUpdate> updates;
    for (const RecipientRecord& r : *due) {
      updates.push_back(Outcome(r, RecipientState::kFailed, absl::UnixEpoch(),
                                "550 5.1.1 no such user"));
    }
    auto n = UpdateWithNoticeSync(*store, std::move(updates),
                                  Notice("alice@sender.test"));
    ASSERT_TRUE(n.ok()) << n.status();
    ASSERT_NE(*n, 0u);
    notice = *n;
    // The original is finished (both failed); the notice is queued and due.
    EXPECT_TRUE(absl::IsNotFound(store->Read(original, false).status()));
    auto m = store->Read(notice, true);
    ASSERT_TRUE(m.ok()) << m.status();
    EXPECT_EQ(m->envelope.sender, "");
    EXPECT_EQ(m->envelope.listener, "dsn");
    EXPECT_EQ(m->recipients[0].spec.notify, kNotifyNever);
  }
  // And after a restart, the same.
  auto store = OpenOrDie(Options(path));
  EXPECT_TRUE(absl::IsNotFound(store->Read(original, false).status()));
  auto m = store->Read(notice, true);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->body, "Subject: Undelivered Mail\r\n\r\nreport\r\n");
  auto due = store->Due(0, absl::Now() + absl::Seconds(1), 10);
  ASSERT_TRUE(due.ok());
  ASSERT_EQ(due->size(), 1u);
  EXPECT_EQ((*due)[0].message, notice);
}

TEST(NoticeTest, NoNoticeForRecipientsAlreadyFinal) {
  auto store = OpenOrDie(Options(TempPath("notice-final")));
  auto id = EnqueueSync(*store, Message({{"a@x.test", 0}, {"b@x.test", 0}}));
  ASSERT_TRUE(id.ok());
  auto due = store->Claim(0, absl::Now() + absl::Seconds(1), 10);
  ASSERT_TRUE(due.ok());
  RecipientRecord a = (*due)[0];
  ASSERT_TRUE(UpdateSync(*store, Outcome(a, RecipientState::kDelivered)).ok());
  // A stale failure for the same recipient: skipped, and no notice.
  std::vector<RecipientUpdate> updates;
  updates.push_back(Outcome(a, RecipientState::kFailed));
  auto n = UpdateWithNoticeSync(*store, std::move(updates), Notice("z@s.test"));
  EXPECT_TRUE(absl::IsFailedPrecondition(n.status())) << n.status();
  auto counts = store->Counts();
  ASSERT_TRUE(counts.ok());
  EXPECT_EQ(counts->messages, 1u);  // Only the original, b still pending.
}

TEST(NoticeTest, DelayNotifiedIsKeptAndSurvivesRestart) {
  std::string path = TempPath("notice-delay");
  MessageId id;
  {
    auto store = OpenOrDie(Options(path));
    auto m = EnqueueSync(*store, Message({{"a@x.test", 0}}));
    ASSERT_TRUE(m.ok());
    id = *m;
    auto due = store->Claim(0, absl::Now() + absl::Seconds(1), 10);
    ASSERT_TRUE(due.ok());
    RecipientUpdate u =
        Outcome((*due)[0], RecipientState::kDeferred,
                absl::Now() + absl::Hours(1), "451 4.7.1 later");
    u.delay_notified = true;
    std::vector<RecipientUpdate> updates;
    updates.push_back(std::move(u));
    auto n =
        UpdateWithNoticeSync(*store, std::move(updates), Notice("s@s.test"));
    ASSERT_TRUE(n.ok()) << n.status();
  }
  auto store = OpenOrDie(Options(path));
  auto m = store->Read(id, false);
  ASSERT_TRUE(m.ok());
  EXPECT_TRUE(m->recipients[0].delay_notified);
  EXPECT_EQ(m->recipients[0].state, RecipientState::kDeferred);
}

TEST(NoticeTest, RecordsWithoutTheNewFieldsStillDecode) {
  RecipientRecord r;
  r.spec.address = "a@x.test";
  std::string old = codec::EncodeRecipient(r);  // No held, no flag.
  auto back = codec::DecodeRecipient(1, 0, old);
  ASSERT_TRUE(back.ok());
  EXPECT_FALSE(back->delay_notified);
  r.delay_notified = true;
  back = codec::DecodeRecipient(1, 0, codec::EncodeRecipient(r));
  ASSERT_TRUE(back.ok());
  EXPECT_TRUE(back->delay_notified);
  EXPECT_EQ(back->held, absl::ZeroDuration());

  Envelope e;
  e.sender = "s@x.test";
  auto env = codec::DecodeEnvelope(codec::EncodeEnvelope(e));
  ASSERT_TRUE(env.ok());
  EXPECT_EQ(env->listener, "");
  e.listener = "submission";
  env = codec::DecodeEnvelope(codec::EncodeEnvelope(e));
  ASSERT_TRUE(env.ok());
  EXPECT_EQ(env->listener, "submission");
}

TEST(NoticeTest, SideTablePutGetScanDelete) {
  std::string path = TempPath("side");
  {
    auto store = OpenOrDie(Options(path));
    Table* t = store->SideTable();
    ASSERT_TRUE(t->Put("sup\x01"
                       "a",
                       "1")
                    .ok());
    ASSERT_TRUE(t->Put("sup\x01"
                       "b",
                       "2")
                    .ok());
    ASSERT_TRUE(t->Put("other", "3").ok());
  }
  auto store = OpenOrDie(Options(path));
  Table* t = store->SideTable();
  auto v = t->Get(
      "sup\x01"
      "b");
  ASSERT_TRUE(v.ok());
  EXPECT_EQ(v->value_or(""), "2");
  std::vector<std::string> keys;
  ASSERT_TRUE(t->Scan("sup\x01", [&](absl::string_view k, absl::string_view) {
                 keys.emplace_back(k);
                 return true;
               }).ok());
  EXPECT_EQ(keys, (std::vector<std::string>{"sup\x01"
                                            "a",
                                            "sup\x01"
                                            "b"}));
  ASSERT_TRUE(t->Delete("sup\x01"
                        "a")
                  .ok());
  v = t->Get(
      "sup\x01"
      "a");
  ASSERT_TRUE(v.ok());
  EXPECT_FALSE(v->has_value());
  // A read-only view sees it, and refuses writes.
  RocksStoreOptions ro = Options(path);
  ro.read_only = true;
  auto view = OpenOrDie(ro);
  v = view->SideTable()->Get(
      "sup\x01"
      "b");
  ASSERT_TRUE(v.ok());
  EXPECT_EQ(v->value_or(""), "2");
  EXPECT_FALSE(view->SideTable()->Put("x", "y").ok());
}

}  // namespace
}  // namespace peregrine::queue
