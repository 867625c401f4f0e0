#include "mta/auth.h"

#include <arpa/inet.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <optional>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "base/log.h"

namespace peregrine {
namespace {
constexpr const char* kLog = "auth";
// Past this many remembered addresses, the ones with a full budget and
// nothing in flight are forgotten (they would start afresh anyway).
constexpr size_t kMaxClients = 100000;
}  // namespace

Authenticator::Authenticator() : Authenticator(Limits()) {}

Authenticator::Authenticator(Limits limits, std::function<absl::Time()> clock)
    : limits_(limits), clock_(std::move(clock)) {
  {
    absl::MutexLock lock(&mu_);
    period_start_ = clock_();
  }
  for (int i = 0; i < std::max(1, limits_.workers); ++i) {
    threads_.emplace_back([this] { Main(); });
  }
}

Authenticator::~Authenticator() {
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
  }
  for (std::thread& t : threads_) t.join();
  AnswerQueued();  // Their connections are closing.
}

void Authenticator::AnswerQueued() {
  std::deque<Job> left;
  {
    absl::MutexLock lock(&mu_);
    left.swap(clean_);
    for (Job& j : suspect_) left.push_back(std::move(j));
    suspect_.clear();
    for (const Job& j : left) {
      auto it = clients_.find(j.key);
      if (it != clients_.end()) --it->second.in_flight;
    }
  }
  for (Job& j : left) {
    j.done({smtp::AuthVerdict::kTryLater, absl::ZeroDuration(),
            "the server is shutting down"});
  }
}

std::string Authenticator::SenderRefusal(absl::string_view user,
                                         absl::string_view address) const {
  std::shared_ptr<const UsersFile> users;
  {
    absl::Time now = clock_();
    absl::MutexLock lock(&mu_);
    MaybeReload(now);  // `peregrine user senders` counts within a second.
    users = users_;
  }
  return users == nullptr ? "" : users->SenderRefusal(user, address);
}

std::string Authenticator::TakeMessage(absl::string_view user) {
  absl::Time now = clock_();
  absl::MutexLock lock(&mu_);
  MaybeReload(now);
  std::string rate = users_ == nullptr ? "" : users_->Rate(user);
  auto it = rates_.find(std::string(user));
  if (rate.empty()) {
    if (it != rates_.end()) rates_.erase(it);
    return "";
  }
  if (it == rates_.end() || it->second.text != rate) {
    // A full hour's (minute's...) worth at once, then at the rate.
    double burst = 1;
    (void)absl::SimpleAtod(rate.substr(0, rate.find('/')), &burst);
    auto bucket = delivery::TokenBucket::Parse(rate, std::max(1.0, burst));
    if (!bucket.ok()) return "";
    it = rates_.insert_or_assign(std::string(user), Rate{rate, *bucket}).first;
  }
  if (it->second.bucket.TryTake(now)) return "";
  absl::Duration wait = it->second.bucket.NextAvailable(now) - now;
  return absl::StrCat("452 4.7.1 user ", user, " is over its message rate (",
                      rate, "); try again in ",
                      absl::FormatDuration(absl::Ceil(wait, absl::Seconds(1))));
}

void Authenticator::SetUsers(std::shared_ptr<const UsersFile> users) {
  absl::MutexLock lock(&mu_);
  users_ = std::move(users);
}

bool Authenticator::HasUsers() const {
  absl::Time now = clock_();
  absl::MutexLock lock(&mu_);
  MaybeReload(now);
  return users_ != nullptr && !users_->Names().empty();
}

void Authenticator::WatchFile(std::string path) {
  absl::MutexLock lock(&mu_);
  watched_ = std::move(path);
  // What is loaded now is what the file holds now.
  struct stat st;
  watched_id_ = FileId();
  if (::stat(watched_.c_str(), &st) == 0) {
    watched_id_ = {st.st_dev, st.st_ino, st.st_size,
                   st.st_mtim.tv_sec * 1000000000LL + st.st_mtim.tv_nsec};
  }
  watched_at_ = clock_();
}

void Authenticator::MaybeReload(absl::Time now) const {
  if (watched_.empty() || now - watched_at_ < absl::Seconds(1)) return;
  watched_at_ = now;
  struct stat st;
  FileId id;
  if (::stat(watched_.c_str(), &st) == 0) {
    id = {st.st_dev, st.st_ino, st.st_size,
          st.st_mtim.tv_sec * 1000000000LL + st.st_mtim.tv_nsec};
  }
  if (id == watched_id_) return;
  watched_id_ = id;
  auto users = UsersFile::Load(watched_);
  if (!users.ok()) {
    log::Error(kLog, "%s; keeping the %d users loaded before",
               users.status().message(),
               users_ == nullptr ? 0 : users_->Names().size());
    return;
  }
  log::Info(kLog, "%s changed: %d users now", watched_, users->Names().size());
  users_ = std::make_shared<const UsersFile>(*std::move(users));
}

Authenticator::Stats Authenticator::stats() const {
  absl::MutexLock lock(&mu_);
  return stats_;
}

std::string Authenticator::ClientKey(absl::string_view client) {
  std::string text(client);
  in6_addr a6;
  if (inet_pton(AF_INET6, text.c_str(), &a6) != 1) return text;
  if (IN6_IS_ADDR_V4MAPPED(&a6)) {
    char v4[INET_ADDRSTRLEN];
    inet_ntop(AF_INET, a6.s6_addr + 12, v4, sizeof(v4));
    return v4;
  }
  // One IPv6 client usually has a whole /64 to pick addresses from.
  std::memset(a6.s6_addr + 8, 0, 8);
  char out[INET6_ADDRSTRLEN];
  inet_ntop(AF_INET6, &a6, out, sizeof(out));
  return absl::StrCat(out, "/64");
}

void Authenticator::Refill(Client& c, absl::Time now) {
  if (now > c.updated) {
    c.tokens = std::min<double>(
        limits_.failure_budget,
        c.tokens + absl::FDivDuration(now - c.updated, limits_.refill));
  }
  c.updated = now;
}

void Authenticator::Forget(absl::Time now) {
  for (auto it = clients_.begin(); it != clients_.end();) {
    Refill(it->second, now);
    if (it->second.in_flight == 0 &&
        it->second.tokens >= limits_.failure_budget) {
      clients_.erase(it++);
    } else {
      ++it;
    }
  }
}

void Authenticator::MaybeSummarize(absl::Time now) {
  if (now - period_start_ < limits_.summary_every) return;
  if (period_rejected_ + period_refused_ > 0) {
    const std::string* top = nullptr;
    uint64_t top_count = 0;
    size_t addresses = 0;
    for (auto& [key, c] : clients_) {
      if (c.failures_this_period == 0) continue;
      ++addresses;
      if (c.failures_this_period > top_count) {
        top_count = c.failures_this_period;
        top = &key;
      }
    }
    log::Warn(kLog,
              "in the last %s: %d failed logins from %d addresses%s; %d "
              "attempts refused without a check (too many failures from "
              "the address, or too many at once). Password guessing? Each "
              "address gets %d failures, then one every %s",
              absl::FormatDuration(now - period_start_), period_rejected_,
              addresses,
              top == nullptr
                  ? std::string()
                  : absl::StrCat(" (most from ", *top, ": ", top_count, ")"),
              period_refused_, limits_.failure_budget,
              absl::FormatDuration(limits_.refill));
  }
  for (auto& [key, c] : clients_) c.failures_this_period = 0;
  period_rejected_ = period_refused_ = 0;
  period_start_ = now;
}

void Authenticator::Check(std::string client, std::string user,
                          std::string password,
                          absl::AnyInvocable<void(AuthAnswer)> done) {
  absl::Time now = clock_();
  std::string key = ClientKey(client);
  std::optional<AuthAnswer> refused;
  {
    absl::MutexLock lock(&mu_);
    MaybeSummarize(now);
    if (clients_.size() >= kMaxClients) Forget(now);
    auto [it, fresh] = clients_.try_emplace(key);
    Client& c = it->second;
    if (fresh) {
      c.tokens = limits_.failure_budget;
      c.updated = now;
    }
    Refill(c, now);
    if (c.tokens < 1 - 1e-9) {  // Refills add up in steps: allow rounding.
      absl::Duration wait = (1 - c.tokens) * limits_.refill;
      refused = AuthAnswer{
          smtp::AuthVerdict::kTryLater, absl::ZeroDuration(),
          absl::StrCat("too many failed logins from ", key, "; try again in ",
                       static_cast<int>(std::ceil(absl::ToDoubleSeconds(wait))),
                       " seconds")};
    } else if (c.in_flight >= limits_.max_in_flight_per_client) {
      refused = AuthAnswer{smtp::AuthVerdict::kTryLater, absl::ZeroDuration(),
                           "too many logins from your address at once"};
    } else if (clean_.size() + suspect_.size() >= limits_.max_queued) {
      refused = AuthAnswer{smtp::AuthVerdict::kTryLater, absl::ZeroDuration(),
                           "too many logins waiting; try again later"};
    }
    if (refused) {
      // Answered a second late: a refused guesser cannot loop at full speed
      // (the wait costs a timer on the shard, no thread and no check).
      refused->delay = absl::Seconds(1);
      ++stats_.refused;
      ++period_refused_;
    } else {
      ++c.in_flight;
      bool clean = c.tokens >= limits_.failure_budget;
      (clean ? clean_ : suspect_)
          .push_back({std::move(key), std::move(user), std::move(password),
                      std::move(done)});
      return;
    }
  }
  done(*std::move(refused));
}

void Authenticator::Main() {
  while (true) {
    Job job;
    std::shared_ptr<const UsersFile> users;
    {
      absl::MutexLock lock(&mu_);
      auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return stop_ || !clean_.empty() || !suspect_.empty();
      };
      // Wakes at least once per summary period, so the last minute of an
      // attack is reported even when no attempt follows it.
      mu_.AwaitWithTimeout(absl::Condition(&ready), limits_.summary_every);
      MaybeSummarize(clock_());
      if (stop_) return;
      std::deque<Job>& from = !clean_.empty() ? clean_ : suspect_;
      if (from.empty()) continue;
      job = std::move(from.front());
      from.pop_front();
      MaybeReload(clock_());
      users = users_;
    }
    bool ok = users != nullptr && users->Check(job.user, job.password);
    AuthAnswer answer;
    {
      absl::MutexLock lock(&mu_);
      absl::Time now = clock_();
      Client& c = clients_[job.key];
      Refill(c, now);
      --c.in_flight;
      if (ok) {
        ++stats_.accepted;
        answer.verdict = smtp::AuthVerdict::kAccepted;
      } else {
        ++stats_.rejected;
        ++period_rejected_;
        ++c.failures_this_period;
        c.tokens -= 1;
        int recent = static_cast<int>(
            std::ceil(limits_.failure_budget - std::max(0.0, c.tokens)));
        answer.verdict = smtp::AuthVerdict::kRejected;
        answer.delay =
            std::min(limits_.max_delay,
                     absl::Seconds(1) * (1 << std::min(recent - 1, 20)));
      }
    }
    job.done(std::move(answer));
  }
}

}  // namespace peregrine
