#include "mta/delivery/site.h"

#include <algorithm>
#include <limits>
#include <utility>

namespace peregrine::delivery {

absl::Duration Job::HeldUntil(absl::Time now) const {
  return held_since == absl::InfinitePast() ? held : held + (now - held_since);
}

Site::Site(std::string k, std::string first_domain,
           std::vector<dns::MxHost> hosts, bool relay, SiteOptions o)
    : key(std::move(k)),
      domain(std::move(first_domain)),
      mx(std::move(hosts)),
      smarthost(relay),
      options_(std::move(o)),
      message_rate_(*TokenBucket::Parse(options_.message_rate)),
      connection_rate_(*TokenBucket::Parse(options_.connection_rate)),
      window_(options_.initial_connections, options_.max_connections) {}

Site::Change Site::SetOptions(SiteOptions fresh, absl::Time now) {
  if (fresh.message_rate != options_.message_rate) {
    message_rate_ = *TokenBucket::Parse(fresh.message_rate);
  }
  if (fresh.connection_rate != options_.connection_rate) {
    connection_rate_ = *TokenBucket::Parse(fresh.connection_rate);
  }
  window_.SetMax(fresh.max_connections);
  bool resumed = options_.suspended && !fresh.suspended;
  bool suspended = !options_.suspended && fresh.suspended;
  options_ = std::move(fresh);
  if (suspended) {
    for (auto& job : ready_) job->held_since = now;
    return Change::kSuspended;
  }
  if (resumed) {
    for (auto& job : ready_) {
      job->held = job->HeldUntil(now);
      job->held_since = absl::InfinitePast();
    }
    return Change::kResumed;
  }
  return Change::kNone;
}

void Site::Add(std::unique_ptr<Job> job, absl::Time now) {
  last_used_ = now;
  if (options_.suspended) job->held_since = now;
  size_t per =
      static_cast<size_t>(std::max(1, options_.recipients_per_transaction));
  while (job->recipients.size() > per) {
    auto part = std::make_unique<Job>(*job);
    part->recipients.assign(job->recipients.end() - per, job->recipients.end());
    job->recipients.resize(job->recipients.size() - per);
    ready_.push_back(std::move(part));
  }
  ready_.push_back(std::move(job));
}

std::vector<std::unique_ptr<Job>> Site::Excess(absl::Time now) {
  std::vector<std::unique_ptr<Job>> out;
  if (!options_.suspended) return out;
  while (ready_.size() > kMaxHeldJobs) {
    std::unique_ptr<Job> job = std::move(ready_.back());
    ready_.pop_back();
    job->held = job->HeldUntil(now) + kParkFor;
    job->held_since = absl::InfinitePast();
    out.push_back(std::move(job));
  }
  return out;
}

std::deque<std::unique_ptr<Job>> Site::TakeAll() {
  std::deque<std::unique_ptr<Job>> out;
  out.swap(ready_);
  return out;
}

std::vector<std::unique_ptr<Job>> Site::TakeMatching(
    const std::function<bool(const queue::RecipientRecord&)>& match) {
  std::vector<std::unique_ptr<Job>> out;
  std::deque<std::unique_ptr<Job>> kept;
  for (std::unique_ptr<Job>& job : ready_) {
    auto taken = std::make_unique<Job>();
    std::vector<queue::RecipientRecord> left;
    for (queue::RecipientRecord& r : job->recipients) {
      (match(r) ? taken->recipients : left).push_back(std::move(r));
    }
    if (!taken->recipients.empty()) {
      std::vector<queue::RecipientRecord> mine = std::move(taken->recipients);
      *taken = *job;  // The message's fields; recipients replaced below.
      taken->recipients = std::move(mine);
      out.push_back(std::move(taken));
    }
    job->recipients = std::move(left);
    if (!job->recipients.empty()) kept.push_back(std::move(job));
  }
  ready_.swap(kept);
  return out;
}

std::vector<std::unique_ptr<Job>> Site::TakeJobsIf(
    const std::function<bool(Job&)>& match) {
  std::vector<std::unique_ptr<Job>> out;
  std::deque<std::unique_ptr<Job>> kept;
  for (std::unique_ptr<Job>& job : ready_) {
    (match(*job) ? out.emplace_back() : kept.emplace_back()) = std::move(job);
  }
  ready_.swap(kept);
  return out;
}

std::unique_ptr<Job> Site::TakeNext() {
  if (ready_.empty()) return nullptr;
  std::unique_ptr<Job> job = std::move(ready_.front());
  ready_.pop_front();
  return job;
}

bool Site::MayStartJob(absl::Time now, absl::Time* wake) {
  *wake = absl::InfiniteFuture();
  if (options_.suspended || ready_.empty()) return false;
  if (now < paused_until_) {
    *wake = paused_until_;
    return false;
  }
  if (!message_rate_.TryTake(now)) {
    *wake = message_rate_.NextAvailable(now);
    return false;
  }
  if (share_ == nullptr) return true;
  absl::Time unused = absl::InfiniteFuture();
  Leases(0, now, &unused);  // Renewed while busy connections carry on.
  // A local token refused by the cluster is lost: the local bucket runs at
  // the whole limit, above this node's part of it.
  return share_->TakeMessage(now, wake);
}

int Site::Leases(int connecting_now, absl::Time now, absl::Time* wake) {
  int waiting = static_cast<int>(ready_.size()) - connecting_now;
  slots_ = share_->ConnectionSlots(window_.in_flight() + std::max(0, waiting),
                                   now, wake);
  return slots_;
}

int Site::ConnectionsToOpen(int connecting_now, absl::Time now,
                            absl::Time* wake) {
  *wake = absl::InfiniteFuture();
  if (options_.suspended) return 0;
  if (now < paused_until_) {
    *wake = paused_until_;
    return 0;
  }
  int waiting = static_cast<int>(ready_.size()) - connecting_now;
  int slots = std::numeric_limits<int>::max();
  if (share_ != nullptr) slots = Leases(connecting_now, now, wake);
  int open = 0;
  while (waiting > 0 && window_.in_flight() < slots && window_.TryAcquire()) {
    if (!connection_rate_.TryTake(now)) {
      window_.Release();
      *wake = connection_rate_.NextAvailable(now);
      break;
    }
    if (share_ != nullptr && !share_->TakeConnection(now, wake)) {
      window_.Release();
      break;
    }
    ++open;
    --waiting;
  }
  return open;
}

void Site::ConnectionClosed(bool worked) {
  window_.Release();
  if (!worked) window_.OnFailure();
}

void Site::BackOff(const Backoff& b, absl::Time now) {
  paused_until_ = std::max(paused_until_, now + b.pause);
  reduced_until_ = paused_until_ + b.pause;
  message_rate_.Scale(b.rate_factor);
  connection_rate_.Scale(b.rate_factor);
}

bool Site::RestoreRates(absl::Time now) {
  if (reduced_until_ == absl::InfinitePast() || now < reduced_until_) {
    return false;
  }
  message_rate_.Scale(1);
  connection_rate_.Scale(1);
  reduced_until_ = absl::InfinitePast();
  return true;
}

void Site::MarkHostDown(const std::string& host, absl::Time now) {
  if (smarthost) return;
  host_down_until_[host] = now + kHostDownFor;
}

bool Site::HostDown(const std::string& host, absl::Time now) const {
  auto it = host_down_until_.find(host);
  return it != host_down_until_.end() && it->second > now;
}

bool Site::Quiet(absl::Time now) const {
  return ready_.empty() && window_.in_flight() == 0 && connecting == 0 &&
         idle.empty() && wake_timer == 0 && now >= reduced_until_;
}

std::string Site::TlsPolicyLabel() const {
  if (smarthost) return "smarthost";
  switch (sts) {
    case StsMode::kEnforce:
      return "mta-sts";
    case StsMode::kTesting:
      return "mta-sts-testing";
    case StsMode::kNone:
      break;
  }
  return std::string(TlsModeName(options_.tls));
}

}  // namespace peregrine::delivery
