#include "mta/signer.h"

#include <algorithm>
#include <utility>

namespace peregrine {

Signer::Signer(int workers, size_t max_queued) : max_queued_(max_queued) {
  for (int i = 0; i < std::max(1, workers); ++i) {
    threads_.emplace_back([this] { Work(); });
  }
}

Signer::~Signer() { Stop(); }

void Signer::Stop() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  for (std::thread& t : threads_) {
    if (t.joinable()) t.join();
  }
}

uint64_t Signer::inline_signed() const {
  absl::MutexLock lock(&mu_);
  return inline_signed_;
}

void Signer::Run(Task& task) {
  absl::StatusOr<std::string> signatures =
      task.table->Sign(task.message, task.now, task.also_as);
  if (!signatures.ok()) {
    failed_.fetch_add(1, std::memory_order_relaxed);
  } else if (!signatures->empty()) {
    signed_.fetch_add(1, std::memory_order_relaxed);
  }
  task.done(std::move(signatures), std::move(task.message));
}

void Signer::Sign(std::shared_ptr<const dkim::SigningTable> table,
                  std::string message, absl::Time now, Done done) {
  Sign(std::move(table), std::move(message), now, "", std::move(done));
}

void Signer::Sign(std::shared_ptr<const dkim::SigningTable> table,
                  std::string message, absl::Time now, std::string also_as,
                  Done done) {
  Task task{std::move(table), std::move(message), now, std::move(done),
            std::move(also_as)};
  {
    absl::MutexLock lock(&mu_);
    if (!stopping_ && tasks_.size() < max_queued_) {
      tasks_.push_back(std::move(task));
      return;
    }
    ++inline_signed_;
  }
  Run(task);  // Full (or stopped): here, at the caller's pace.
}

void Signer::Work() {
  for (;;) {
    Task task;
    {
      absl::MutexLock lock(&mu_);
      auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return !tasks_.empty() || stopping_;
      };
      mu_.Await(absl::Condition(&ready));
      if (tasks_.empty()) return;  // Stopping, and nothing left.
      task = std::move(tasks_.front());
      tasks_.pop_front();
    }
    Run(task);
  }
}

}  // namespace peregrine
