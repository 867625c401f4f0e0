#include "mta/auth.h"

namespace peregrine {

Authenticator::Authenticator() : thread_([this] { Main(); }) {}

Authenticator::~Authenticator() {
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
  }
  thread_.join();
}

void Authenticator::SetUsers(std::shared_ptr<const UsersFile> users) {
  absl::MutexLock lock(&mu_);
  users_ = std::move(users);
}

bool Authenticator::HasUsers() const {
  absl::MutexLock lock(&mu_);
  return users_ != nullptr && !users_->Names().empty();
}

void Authenticator::Check(std::string user, std::string password,
                          absl::AnyInvocable<void(bool)> done) {
  absl::MutexLock lock(&mu_);
  jobs_.push_back({std::move(user), std::move(password), std::move(done)});
}

void Authenticator::Main() {
  while (true) {
    Job job;
    std::shared_ptr<const UsersFile> users;
    {
      absl::MutexLock lock(&mu_);
      auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return stop_ || !jobs_.empty();
      };
      mu_.Await(absl::Condition(&ready));
      if (jobs_.empty()) return;  // Stopping, nothing left.
      job = std::move(jobs_.front());
      jobs_.pop_front();
      users = users_;
    }
    bool ok = users != nullptr && users->Check(job.user, job.password);
    job.done(ok);
  }
}

}  // namespace peregrine
