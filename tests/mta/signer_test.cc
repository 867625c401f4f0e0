// The Signer: signatures made on its threads come back with the message;
// a full queue signs on the caller's thread; Stop() signs what waits, so
// every `done` runs; an unusable key is an error, not a crash.
#include "mta/signer.h"

#include <atomic>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"

namespace peregrine {
namespace {

std::shared_ptr<const dkim::SigningTable> Table(dkim::KeyType type) {
  std::string path = std::string(getenv("TEST_TMPDIR")) + "/signer.pem";
  std::ofstream(path) << (*dkim::PrivateKey::Generate(type, 1024))->ToPem();
  dkim::Policy policy;
  policy.keys.push_back({"example.com", "s1", path});
  return dkim::SigningTable::Load(policy);
}

std::string Message(int i) {
  return "From: a@example.com\r\nSubject: " + std::to_string(i) +
         "\r\n\r\nbody\r\n";
}

TEST(SignerTest, SignsOnItsThreadsAndHandsTheMessageBack) {
  auto table = Table(dkim::KeyType::kRsa);
  Signer signer(2);
  absl::Mutex mu;
  std::vector<std::pair<std::string, std::string>> done;  // Sigs, message.
  std::thread::id caller = std::this_thread::get_id();
  std::atomic<int> on_caller{0};
  constexpr int kMessages = 40;
  for (int i = 0; i < kMessages; ++i) {
    signer.Sign(table, Message(i), absl::Now(),
                [&](absl::StatusOr<std::string> sigs, std::string message) {
                  if (std::this_thread::get_id() == caller) ++on_caller;
                  ASSERT_TRUE(sigs.ok()) << sigs.status();
                  absl::MutexLock l(&mu);
                  done.emplace_back(*sigs, std::move(message));
                });
  }
  signer.Stop();
  ASSERT_EQ(done.size(), static_cast<size_t>(kMessages));
  for (const auto& [sigs, message] : done) {
    EXPECT_EQ(sigs.rfind("DKIM-Signature:", 0), 0u) << sigs;
    EXPECT_NE(message.find("From: a@example.com"), std::string::npos);
  }
  EXPECT_EQ(on_caller.load(), 0);
  EXPECT_EQ(signer.inline_signed(), 0u);
}

TEST(SignerTest, AFullQueueSignsOnTheCallersThread) {
  auto table = Table(dkim::KeyType::kEd25519);
  Signer signer(1, /*max_queued=*/0);
  std::thread::id caller = std::this_thread::get_id();
  bool here = false;
  signer.Sign(table, Message(1), absl::Now(),
              [&](absl::StatusOr<std::string> sigs, std::string) {
                EXPECT_TRUE(sigs.ok());
                here = std::this_thread::get_id() == caller;
              });
  EXPECT_TRUE(here);
  EXPECT_EQ(signer.inline_signed(), 1u);
}

TEST(SignerTest, AfterStopSigningStillAnswers) {
  auto table = Table(dkim::KeyType::kEd25519);
  Signer signer(1);
  signer.Stop();
  bool answered = false;
  signer.Sign(table, Message(1), absl::Now(),
              [&](absl::StatusOr<std::string> sigs, std::string) {
                answered = sigs.ok();
              });
  EXPECT_TRUE(answered);
}

TEST(SignerTest, AnUnusableKeyIsAnErrorForTheCaller) {
  std::string path = std::string(getenv("TEST_TMPDIR")) + "/bad.pem";
  std::ofstream(path) << "not a key\n";
  dkim::Policy policy;
  policy.keys.push_back({"example.com", "s1", path});
  auto table = dkim::SigningTable::Load(policy);
  Signer signer(1);
  absl::Notification got;
  absl::Status status;
  signer.Sign(table, Message(1), absl::Now(),
              [&](absl::StatusOr<std::string> sigs, std::string message) {
                status = sigs.status();
                EXPECT_FALSE(message.empty());
                got.Notify();
              });
  ASSERT_TRUE(got.WaitForNotificationWithTimeout(absl::Seconds(10)));
  EXPECT_FALSE(status.ok());
}

}  // namespace
}  // namespace peregrine
