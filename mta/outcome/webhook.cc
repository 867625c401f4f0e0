#include "mta/outcome/webhook.h"

#include <curl/curl.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <algorithm>
#include <mutex>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "base/log.h"
#include "mta/outcome/event_log.h"

namespace peregrine::outcome {
namespace {

constexpr const char* kLog = "webhook";

void GlobalInit() {
  static std::once_flag once;
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

// The receiver's answer body is not used: read and dropped.
size_t Discard(char*, size_t size, size_t n, void*) { return size * n; }

// Aborts a POST once the stop grace ended (Unix nanoseconds).
int Progress(void* cut_at, curl_off_t, curl_off_t, curl_off_t, curl_off_t) {
  return absl::ToUnixNanos(absl::Now()) >=
                 static_cast<std::atomic<int64_t>*>(cut_at)->load()
             ? 1
             : 0;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Webhook>> Webhook::Create(
    WebhookOptions options) {
  if (!absl::StartsWith(options.url, "http://") &&
      !absl::StartsWith(options.url, "https://")) {
    return absl::InvalidArgumentError(absl::StrCat(
        "url: \"", options.url, "\" is not an http:// or https:// URL"));
  }
  if (options.secret.empty()) {
    return absl::InvalidArgumentError(
        "no secret: every batch is signed (HMAC-SHA256); give secret_file");
  }
  options.batch = std::max<size_t>(options.batch, 1);
  GlobalInit();
  return std::unique_ptr<Webhook>(new Webhook(std::move(options)));
}

Webhook::Webhook(WebhookOptions options)
    : options_(std::move(options)), thread_([this] { Run(); }) {}

Webhook::~Webhook() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  thread_.join();
}

size_t Webhook::held() const {
  absl::MutexLock lock(&mu_);
  return held_.size();
}

void Webhook::OnOutcome(const Outcome& o) {
  // As the event log: a recipient parked again by a suspended site is not
  // news (every minute for each one held).
  if (o.kind == Kind::kDeferred && !o.attempted) return;
  if (!options_.kinds.empty() &&
      std::find(options_.kinds.begin(), options_.kinds.end(), o.kind) ==
          options_.kinds.end()) {
    return;
  }
  std::string record = EventLog::ToJson(o);
  absl::MutexLock lock(&mu_);
  if (held_.size() >= options_.max_held) {
    dropped_.fetch_add(1, std::memory_order_relaxed);
    ++dropped_unlogged_;
    absl::Time now = absl::Now();
    if (now - last_drop_log_ >= absl::Minutes(1)) {
      log::Warn(kLog,
                "%s: %d events held for %s already (its receiver is slow or "
                "down); %d dropped since the last word (the event log has "
                "them all)",
                options_.name, held_.size(), options_.url, dropped_unlogged_);
      last_drop_log_ = now;
      dropped_unlogged_ = 0;
    }
    return;
  }
  held_.push_back(std::move(record));
}

std::string Webhook::Sign(const std::string& secret, int64_t timestamp,
                          const std::string& body) {
  std::string signed_text = absl::StrCat(timestamp, ".", body);
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  HMAC(EVP_sha256(), secret.data(), static_cast<int>(secret.size()),
       reinterpret_cast<const unsigned char*>(signed_text.data()),
       signed_text.size(), mac, &length);
  std::string out = "sha256=";
  for (unsigned int i = 0; i < length; ++i) {
    absl::StrAppendFormat(&out, "%02x", mac[i]);
  }
  return out;
}

bool Webhook::Post(const std::string& body, uint64_t number, std::string* why) {
  CURL* curl = curl_easy_init();
  if (curl == nullptr) {
    *why = "libcurl could not start a request";
    return false;
  }
  int64_t now = absl::ToUnixSeconds(absl::Now());
  curl_slist* headers = nullptr;
  for (const std::string& h :
       {std::string("Content-Type: application/json"),
        absl::StrCat("X-Peregrine-Timestamp: ", now),
        absl::StrCat("X-Peregrine-Signature: ",
                     Sign(options_.secret, now, body)),
        absl::StrCat("X-Peregrine-Batch: ", number),
        std::string("Expect:")}) {  // No 100-continue round trip.
    headers = curl_slist_append(headers, h.c_str());
  }
  curl_easy_setopt(curl, CURLOPT_URL, options_.url.c_str());
  curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
  curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body.data());
  curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE_LARGE,
                   static_cast<curl_off_t>(body.size()));
  curl_easy_setopt(
      curl, CURLOPT_TIMEOUT_MS,
      static_cast<long>(absl::ToInt64Milliseconds(options_.timeout)));
  curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, Discard);
  curl_easy_setopt(curl, CURLOPT_NOPROGRESS, 0L);
  curl_easy_setopt(curl, CURLOPT_XFERINFOFUNCTION, Progress);
  curl_easy_setopt(curl, CURLOPT_XFERINFODATA, &cut_at_);
  curl_easy_setopt(curl, CURLOPT_USERAGENT, "peregrine-webhook");
  CURLcode rc = curl_easy_perform(curl);
  long status = 0;
  curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
  curl_slist_free_all(headers);
  curl_easy_cleanup(curl);
  if (rc != CURLE_OK) {
    *why = curl_easy_strerror(rc);
    return false;
  }
  if (status < 200 || status > 299) {
    *why = absl::StrCat("answered HTTP ", status);
    return false;
  }
  return true;
}

void Webhook::Run() {
  uint64_t number = 0;
  absl::Duration backoff = absl::ZeroDuration();
  absl::Time grace_ends = absl::InfiniteFuture();
  for (;;) {
    std::string body;
    size_t taken = 0;
    {
      absl::MutexLock lock(&mu_);
      // Wait for a full batch, or for the oldest to have waited long
      // enough, or for the stop.
      auto full = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return stopping_ || held_.size() >= options_.batch;
      };
      if (backoff > absl::ZeroDuration()) {
        auto stop = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
          return stopping_;
        };
        mu_.AwaitWithTimeout(absl::Condition(&stop), backoff);
      } else if (held_.empty() && !stopping_) {
        auto any = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
          return stopping_ || !held_.empty();
        };
        mu_.Await(absl::Condition(&any));
      }
      if (!full())
        mu_.AwaitWithTimeout(absl::Condition(&full), options_.flush_every);
      if (stopping_ && grace_ends == absl::InfiniteFuture()) {
        grace_ends = absl::Now() + options_.stop_grace;
      }
      if (held_.empty() || (stopping_ && absl::Now() >= grace_ends)) {
        if (!held_.empty()) {
          log::Warn(kLog,
                    "%s: stopping with %d events not delivered to %s (the "
                    "event log has them)",
                    options_.name, held_.size(), options_.url);
          dropped_.fetch_add(held_.size());
          held_.clear();
        }
        if (stopping_) return;
        continue;
      }
      taken = std::min(held_.size(), options_.batch);
      body.reserve(taken * 600);
      body += '[';
      for (size_t i = 0; i < taken; ++i) {
        if (i > 0) body += ',';
        body += held_[i];
      }
      body += "]\n";
    }
    if (grace_ends != absl::InfiniteFuture()) {
      // What is left of the grace bounds this POST too.
      cut_at_.store(absl::ToUnixNanos(grace_ends));
    }
    if (backoff == absl::ZeroDuration()) ++number;  // A new batch.
    std::string why;
    if (Post(body, number, &why)) {
      absl::MutexLock lock(&mu_);
      // Only this thread takes from the front: the first `taken` are the
      // ones sent.
      held_.erase(held_.begin(), held_.begin() + taken);
      sent_.fetch_add(taken, std::memory_order_relaxed);
      if (backoff > absl::ZeroDuration()) {
        log::Info(kLog, "%s: %s takes events again", options_.name,
                  options_.url);
      }
      backoff = absl::ZeroDuration();
      continue;
    }
    failures_.fetch_add(1, std::memory_order_relaxed);
    if (grace_ends != absl::InfiniteFuture()) {
      // Stopping: try again now and then until the grace ends, quietly.
      absl::SleepFor(
          std::min(absl::Milliseconds(200), grace_ends - absl::Now()));
      backoff = absl::Milliseconds(1);  // The same batch again.
      continue;
    }
    backoff = backoff == absl::ZeroDuration()
                  ? options_.backoff_first
                  : std::min(backoff * 2, options_.backoff_max);
    log::Warn(kLog, "%s: batch %d (%d events) to %s: %s; sent again in %s",
              options_.name, number, taken, options_.url, why,
              absl::FormatDuration(backoff));
  }
}

}  // namespace peregrine::outcome
