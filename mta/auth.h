// Authenticator: checks AUTH credentials off the shard threads.
//
// scrypt is slow on purpose (tens of milliseconds), far too slow for a
// reactor, so checks run on one worker thread of their own, one at a time
// (which also caps what a password-guessing client can cost). Results are
// delivered on that thread; the caller posts them back to its shard.
// Created and destroyed by the daemon's main thread.
#pragma once

#include <deque>
#include <memory>
#include <string>
#include <thread>

#include "absl/functional/any_invocable.h"
#include "absl/synchronization/mutex.h"
#include "mta/users.h"

namespace peregrine {

class Authenticator {
 public:
  Authenticator();
  ~Authenticator();

  // Replaces the users checked against (start, SIGHUP).
  void SetUsers(std::shared_ptr<const UsersFile> users);
  bool HasUsers() const;
  void Check(std::string user, std::string password,
             absl::AnyInvocable<void(bool ok)> done);

 private:
  struct Job {
    std::string user;
    std::string password;
    absl::AnyInvocable<void(bool)> done;
  };
  void Main();

  mutable absl::Mutex mu_;
  std::shared_ptr<const UsersFile> users_ ABSL_GUARDED_BY(mu_);
  std::deque<Job> jobs_ ABSL_GUARDED_BY(mu_);
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

}  // namespace peregrine
