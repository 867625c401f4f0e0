// Helpers shared by the queue's tests: a fresh store in the test's temp
// folder, synchronous Enqueue/Update, and a message with its recipients.
#pragma once

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "gtest/gtest.h"
#include "queue/rocksdb_store.h"

namespace peregrine::queue {

inline std::string TempPath(const std::string& name) {
  static std::atomic<int> n{0};
  std::string path = absl::StrCat(getenv("TEST_TMPDIR"), "/", name, "-", n++);
  std::filesystem::remove_all(path);
  return path;
}

inline RocksStoreOptions Options(const std::string& path, int shards = 4) {
  RocksStoreOptions o;
  o.path = path;
  o.shards = shards;
  // 64 MiB segments: a reserve would write 256 MiB per store. The tests
  // with small segments keep one.
  o.spool_reserve_segments = 0;
  return o;
}

inline std::unique_ptr<RocksStore> OpenOrDie(RocksStoreOptions o,
                                             RecoveryStats* stats = nullptr) {
  auto store = RocksStore::Open(std::move(o), stats);
  EXPECT_TRUE(store.ok()) << store.status();
  return store.ok() ? *std::move(store) : nullptr;
}

inline absl::StatusOr<MessageId> EnqueueSync(Store& store, NewMessage m) {
  absl::Notification done;
  absl::StatusOr<MessageId> result;
  store.Enqueue(std::move(m), [&](absl::StatusOr<MessageId> r) {
    result = r;
    done.Notify();
  });
  done.WaitForNotification();
  return result;
}

inline absl::Status UpdateSync(Store& store, RecipientUpdate u) {
  absl::Notification done;
  absl::Status result;
  store.Update(std::move(u), [&](absl::Status s) {
    result = s;
    done.Notify();
  });
  done.WaitForNotification();
  return result;
}

inline NewMessage Message(std::vector<std::pair<std::string, uint16_t>> rcpts,
                          std::string body = "Subject: hi\r\n\r\nbody\r\n") {
  NewMessage m;
  m.envelope.sender = "alice@sender.test";
  m.envelope.envid = "ENV-1";
  m.envelope.ret = DsnRet::kHeaders;
  m.envelope.campaign = "spring";
  m.envelope.tenant = "acme";
  m.envelope.client_address = "127.0.0.1";
  m.envelope.helo = "client.test";
  m.envelope.auth_user = "app";
  m.envelope.tls = "TLSv1.3";
  m.envelope.received = absl::FromUnixSeconds(1700000000);
  m.body = std::move(body);
  for (auto& [address, shard] : rcpts) {
    RecipientSpec r;
    r.address = address;
    r.orcpt = "rfc822;" + address;
    r.notify = kNotifyFailure | kNotifyDelay;
    r.site = address.substr(address.find('@') + 1);
    r.shard = shard;
    m.recipients.push_back(r);
  }
  return m;
}

inline RecipientUpdate Outcome(const RecipientRecord& r, RecipientState state,
                               absl::Time next = absl::UnixEpoch(),
                               std::string reply = "250 2.0.0 ok") {
  RecipientUpdate u;
  u.before = r;
  u.state = state;
  u.next_attempt = next;
  u.reply = Reply::Parse(reply);
  return u;
}

}  // namespace peregrine::queue
