// The per-site scheduler with a fake clock: no sockets, no sleeping.
#include "mta/delivery/site.h"

#include <memory>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace peregrine::delivery {
namespace {

const absl::Time kStart = absl::FromUnixSeconds(1795780800);

std::unique_ptr<Job> JobOf(int recipients, queue::MessageId id = 1) {
  auto job = std::make_unique<Job>();
  job->message = id;
  job->domain = "example.com";
  for (int i = 0; i < recipients; ++i) {
    queue::RecipientRecord r;
    r.message = id;
    r.index = static_cast<uint32_t>(i);
    r.spec.address = "r" + std::to_string(i) + "@example.com";
    job->recipients.push_back(r);
  }
  return job;
}

Site MakeSite(SiteOptions o) {
  return Site("mx.example.net", "example.com", {{"mx.example.net", 10, false}},
              false, o);
}

TEST(Site, SlowStartOpensTheInitialWindowThenGrowsWithSuccess) {
  SiteOptions o;
  o.initial_connections = 2;
  o.max_connections = 4;
  Site site = MakeSite(o);
  for (int i = 0; i < 10; ++i) site.Add(JobOf(1, i + 1), kStart);
  absl::Time wake;
  EXPECT_EQ(site.ConnectionsToOpen(0, kStart, &wake), 2);
  EXPECT_EQ(wake, absl::InfiniteFuture());
  EXPECT_EQ(site.ConnectionsToOpen(2, kStart, &wake), 0);  // Window full.
  // Successes widen the window (additive increase, 1/window each).
  for (int i = 0; i < 6; ++i) site.Delivered();
  EXPECT_EQ(site.window(), 4);
  EXPECT_EQ(site.ConnectionsToOpen(2, kStart, &wake), 2);
  EXPECT_EQ(site.open_connections(), 4);
  // Never past max_connections.
  for (int i = 0; i < 20; ++i) site.Delivered();
  EXPECT_EQ(site.window(), 4);
}

TEST(Site, AConnectionThatNeverWorkedHalvesTheWindow) {
  SiteOptions o;
  o.initial_connections = 8;
  o.max_connections = 8;
  Site site = MakeSite(o);
  for (int i = 0; i < 20; ++i) site.Add(JobOf(1, i + 1), kStart);
  absl::Time wake;
  ASSERT_EQ(site.ConnectionsToOpen(0, kStart, &wake), 8);
  site.ConnectionClosed(/*worked=*/false);
  EXPECT_EQ(site.window(), 4);
  site.ConnectionClosed(false);
  EXPECT_EQ(site.window(), 2);
  site.ConnectionClosed(/*worked=*/true);  // A clean end changes nothing.
  EXPECT_EQ(site.window(), 2);
  EXPECT_EQ(site.open_connections(), 5);
}

TEST(Site, OpensOnlyForWhatWaitsBeyondTheConnectingOnes) {
  SiteOptions o;
  o.initial_connections = 10;
  Site site = MakeSite(o);
  site.Add(JobOf(1), kStart);
  site.Add(JobOf(1, 2), kStart);
  absl::Time wake;
  EXPECT_EQ(site.ConnectionsToOpen(1, kStart, &wake), 1);
  EXPECT_EQ(site.ConnectionsToOpen(2, kStart, &wake), 0);
}

TEST(Site, MessageRateHoldsTransactionsAndNamesWhenToLookAgain) {
  SiteOptions o;
  o.message_rate = "2/s";
  Site site = MakeSite(o);
  for (int i = 0; i < 5; ++i) site.Add(JobOf(1, i + 1), kStart);
  absl::Time wake;
  int started = 0;
  while (site.MayStartJob(kStart, &wake)) {
    site.TakeNext();
    ++started;
  }
  EXPECT_GE(started, 1);
  EXPECT_LE(started, 2);  // The burst.
  EXPECT_GT(wake, kStart);
  EXPECT_LE(wake, kStart + absl::Seconds(1));
  // At the time named, one more may go.
  EXPECT_TRUE(site.MayStartJob(wake, &wake));
}

TEST(Site, ConnectionRateSpacesNewConnections) {
  SiteOptions o;
  o.initial_connections = 10;
  o.connection_rate = "1/s";
  Site site = MakeSite(o);
  for (int i = 0; i < 5; ++i) site.Add(JobOf(1, i + 1), kStart);
  absl::Time wake;
  EXPECT_EQ(site.ConnectionsToOpen(0, kStart, &wake), 1);
  EXPECT_NE(wake, absl::InfiniteFuture());
  EXPECT_EQ(site.open_connections(), 1);  // The refused slot went back.
  EXPECT_EQ(site.ConnectionsToOpen(1, wake, &wake), 1);
}

TEST(Site, BackOffPausesThenRunsReducedThenRecovers) {
  SiteOptions o;
  o.message_rate = "10/s";
  Site site = MakeSite(o);
  for (int i = 0; i < 50; ++i) site.Add(JobOf(1, i + 1), kStart);
  site.BackOff(Backoff{absl::Minutes(5), 0.5, "421"}, kStart);
  absl::Time wake;
  EXPECT_FALSE(site.MayStartJob(kStart + absl::Minutes(1), &wake));
  EXPECT_EQ(wake, kStart + absl::Minutes(5));
  EXPECT_EQ(site.ConnectionsToOpen(0, kStart + absl::Minutes(1), &wake), 0);
  EXPECT_EQ(wake, kStart + absl::Minutes(5));
  // Paused no more; reduced rates until the pause has passed once more.
  absl::Time after = kStart + absl::Minutes(5);
  EXPECT_TRUE(site.MayStartJob(after, &wake));
  EXPECT_FALSE(site.RestoreRates(after + absl::Minutes(4)));
  EXPECT_TRUE(site.RestoreRates(after + absl::Minutes(5)));
  EXPECT_FALSE(site.RestoreRates(after + absl::Minutes(6)));  // Once.
}

TEST(Site, SuspensionHoldsWithoutCountingAndResumeReleases) {
  SiteOptions o;
  Site site = MakeSite(o);
  site.Add(JobOf(1), kStart);
  SiteOptions suspended = o;
  suspended.suspended = true;
  EXPECT_EQ(site.SetOptions(suspended, kStart + absl::Minutes(1)),
            Site::Change::kSuspended);
  absl::Time wake;
  EXPECT_FALSE(site.MayStartJob(kStart + absl::Minutes(2), &wake));
  EXPECT_EQ(wake, absl::InfiniteFuture());  // Not by time: by a resume.
  EXPECT_EQ(site.ConnectionsToOpen(0, kStart + absl::Minutes(2), &wake), 0);
  site.Add(JobOf(1, 2), kStart + absl::Minutes(3));  // Held on arrival.
  EXPECT_EQ(site.SetOptions(o, kStart + absl::Minutes(11)),
            Site::Change::kResumed);
  std::unique_ptr<Job> first = site.TakeNext();
  std::unique_ptr<Job> second = site.TakeNext();
  EXPECT_EQ(first->held, absl::Minutes(10));
  EXPECT_EQ(second->held, absl::Minutes(8));
  EXPECT_EQ(first->held_since, absl::InfinitePast());
  EXPECT_EQ(site.SetOptions(o, kStart), Site::Change::kNone);
}

TEST(Site, ASuspendedSiteHoldsOnlySoManyInMemory) {
  SiteOptions o;
  o.suspended = true;
  Site site = MakeSite(o);
  for (size_t i = 0; i < Site::kMaxHeldJobs + 7; ++i) {
    site.Add(JobOf(1, i + 1), kStart);
  }
  std::vector<std::unique_ptr<Job>> excess =
      site.Excess(kStart + absl::Seconds(20));
  ASSERT_EQ(excess.size(), 7u);
  EXPECT_EQ(site.waiting(), Site::kMaxHeldJobs);
  // Their time held so far, and the time they wait in the queue.
  EXPECT_EQ(excess[0]->held, absl::Seconds(20) + Site::kParkFor);
  EXPECT_EQ(excess[0]->message, Site::kMaxHeldJobs + 7);  // Newest first.
  SiteOptions running;
  EXPECT_TRUE(MakeSite(running).Excess(kStart).empty());
}

TEST(Site, AnOperatorTakesTheRecipientsNamedAndTheRestWait) {
  SiteOptions o;
  o.suspended = true;
  Site site = MakeSite(o);
  site.Add(JobOf(3, 1), kStart);
  site.Add(JobOf(2, 2), kStart);
  site.Add(JobOf(1, 3), kStart);
  // Recipient 1 of message 1, all of message 2.
  auto taken = site.TakeMatching([](const queue::RecipientRecord& r) {
    return r.message == 2 || (r.message == 1 && r.index == 1);
  });
  ASSERT_EQ(taken.size(), 2u);
  EXPECT_EQ(taken[0]->message, 1u);
  ASSERT_EQ(taken[0]->recipients.size(), 1u);
  EXPECT_EQ(taken[0]->recipients[0].index, 1u);
  EXPECT_EQ(taken[0]->domain, "example.com");  // The message's fields too.
  EXPECT_EQ(taken[1]->recipients.size(), 2u);
  // Message 1 keeps its other two; message 2 is gone; 3 untouched.
  EXPECT_EQ(site.waiting(), 2u);
  std::unique_ptr<Job> first = site.TakeNext();
  EXPECT_EQ(first->message, 1u);
  ASSERT_EQ(first->recipients.size(), 2u);
  EXPECT_EQ(first->recipients[1].index, 2u);
  EXPECT_EQ(site.TakeNext()->message, 3u);
  EXPECT_TRUE(site.TakeMatching([](const auto&) { return true; }).empty());
}

TEST(Site, TransactionsCarryAtMostSoManyRecipients) {
  SiteOptions o;
  o.recipients_per_transaction = 3;
  Site site = MakeSite(o);
  site.Add(JobOf(8), kStart);
  EXPECT_EQ(site.waiting(), 3u);
  size_t total = 0;
  while (auto job = site.TakeNext()) {
    EXPECT_LE(job->recipients.size(), 3u);
    total += job->recipients.size();
  }
  EXPECT_EQ(total, 8u);
}

TEST(Site, MessagesPerConnection) {
  SiteOptions o;
  o.messages_per_connection = 3;
  Site site = MakeSite(o);
  EXPECT_TRUE(site.MoreOnConnection(2));
  EXPECT_FALSE(site.MoreOnConnection(3));
}

TEST(Site, HostsThatFailedGoLastForAWhile) {
  Site site = MakeSite(SiteOptions{});
  site.MarkHostDown("mx1.example.net", kStart);
  EXPECT_TRUE(site.HostDown("mx1.example.net", kStart + absl::Minutes(1)));
  EXPECT_FALSE(site.HostDown("mx2.example.net", kStart));
  EXPECT_FALSE(site.HostDown("mx1.example.net", kStart + Site::kHostDownFor));
  Site relay("smarthost", "", {}, true, SiteOptions{});
  relay.MarkHostDown("relay.example.net", kStart);  // One host: never.
  EXPECT_FALSE(relay.HostDown("relay.example.net", kStart));
}

TEST(Site, QuietOnlyWhenNothingWaitsOrRuns) {
  Site site = MakeSite(SiteOptions{});
  EXPECT_TRUE(site.Quiet(kStart));
  site.Add(JobOf(1), kStart);
  EXPECT_FALSE(site.Quiet(kStart));
  site.TakeNext();
  EXPECT_TRUE(site.Quiet(kStart));
  site.BackOff(Backoff{absl::Minutes(1), 0.5, "421"}, kStart);
  EXPECT_FALSE(site.Quiet(kStart + absl::Minutes(1)));
  EXPECT_TRUE(site.Quiet(kStart + absl::Minutes(2)));
}

// A share of the cluster's limits that says what the test tells it.
class FakeShare : public SiteShare {
 public:
  bool messages = true;
  bool connections = true;
  int slots = 100;
  absl::Time wake_at = absl::InfiniteFuture();
  int wanted = -1;
  bool TakeMessage(absl::Time, absl::Time* wake) override {
    if (!messages) *wake = wake_at;
    return messages;
  }
  bool TakeConnection(absl::Time, absl::Time* wake) override {
    if (!connections) *wake = wake_at;
    return connections;
  }
  int ConnectionSlots(int want, absl::Time, absl::Time* wake) override {
    wanted = want;
    if (slots < want) *wake = wake_at;
    return slots;
  }
};

TEST(Site, ASharedSiteAsksTheClusterAfterItsOwnLimits) {
  SiteOptions o;
  o.initial_connections = 4;
  o.max_connections = 4;
  Site site = MakeSite(o);
  auto owned = std::make_unique<FakeShare>();
  FakeShare* share = owned.get();
  site.SetShare(std::move(owned));
  EXPECT_TRUE(site.shared());
  for (int i = 0; i < 10; ++i) site.Add(JobOf(1, i + 1), kStart);
  // Leases: two connections, though the window allows four.
  share->slots = 2;
  share->wake_at = kStart + absl::Milliseconds(200);
  absl::Time wake;
  EXPECT_EQ(site.ConnectionsToOpen(0, kStart, &wake), 2);
  EXPECT_EQ(share->wanted, 10);  // In flight 0 + 10 waiting.
  EXPECT_EQ(wake, kStart + absl::Milliseconds(200));
  // The cluster's connection rate refuses: nothing opens, the slot is
  // given back.
  share->slots = 4;
  share->connections = false;
  EXPECT_EQ(site.ConnectionsToOpen(0, kStart, &wake), 0);
  EXPECT_EQ(site.open_connections(), 2);
  // A message: the cluster's rate says no, and when to ask again.
  share->messages = false;
  EXPECT_FALSE(site.MayStartJob(kStart, &wake));
  EXPECT_EQ(wake, kStart + absl::Milliseconds(200));
  share->messages = true;
  EXPECT_TRUE(site.MayStartJob(kStart, &wake));
  // Fewer leases than open connections (another node waits): the ones
  // open finish their message and are not kept.
  EXPECT_TRUE(site.MoreOnConnection(1));
  share->slots = 1;
  EXPECT_TRUE(site.MayStartJob(kStart, &wake));  // Renews: asks the share.
  EXPECT_FALSE(site.MoreOnConnection(1));
  site.SetShare(nullptr);
  EXPECT_TRUE(site.MoreOnConnection(1));
}

}  // namespace
}  // namespace peregrine::delivery
