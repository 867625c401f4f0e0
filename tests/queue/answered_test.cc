// RocksStore::WaitAnswered: what the daemon waits for before its shards'
// reactors go, since the queue's answers are posted to them.
#include <atomic>

#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "queue/rocksdb_store.h"
#include "tests/queue/store_testing.h"

namespace peregrine::queue {
namespace {

TEST(AnsweredTest, ReturnsOnlyOnceEveryDoneHasReturned) {
  auto store = OpenOrDie(Options(TempPath("answered")));
  std::atomic<int> returned{0};
  for (int i = 0; i < 20; ++i) {
    store->Enqueue(Message({{"a@x.test", 0}}), [&](absl::StatusOr<MessageId>) {
      absl::SleepFor(absl::Milliseconds(10));  // A slow consumer.
      ++returned;
    });
  }
  EXPECT_TRUE(store->WaitAnswered(absl::Seconds(30)));
  EXPECT_EQ(returned.load(), 20);
  // Nothing pending: at once.
  EXPECT_TRUE(store->WaitAnswered(absl::ZeroDuration()));
}

TEST(AnsweredTest, FalseAtTheTimeoutWhileAnAnswerIsStuck) {
  auto store = OpenOrDie(Options(TempPath("answered-stuck")));
  absl::Notification in_done, release;
  store->Enqueue(Message({{"a@x.test", 0}}), [&](absl::StatusOr<MessageId>) {
    in_done.Notify();
    release.WaitForNotification();
  });
  in_done.WaitForNotification();
  EXPECT_FALSE(store->WaitAnswered(absl::Milliseconds(50)));
  release.Notify();
  EXPECT_TRUE(store->WaitAnswered(absl::Seconds(30)));
}

}  // namespace
}  // namespace peregrine::queue
