#include "mta/delivery/mta_sts_fetcher.h"

#include <curl/curl.h>

#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "base/log.h"

namespace peregrine::delivery {
namespace {

constexpr char kLog[] = "mta-sts";
constexpr size_t kMaxPolicy = 64 * 1024;  // RFC 8461 3.3.

struct Body {
  std::string text;
  bool too_big = false;
};

size_t Keep(char* data, size_t size, size_t n, void* user) {
  auto* body = static_cast<Body*>(user);
  if (body->text.size() + size * n > kMaxPolicy) {
    body->too_big = true;
    return 0;  // Aborts the transfer.
  }
  body->text.append(data, size * n);
  return size * n;
}

int Progress(void* stop, curl_off_t, curl_off_t, curl_off_t, curl_off_t) {
  return static_cast<const std::atomic<bool>*>(stop)->load() ? 1 : 0;
}

}  // namespace

StsFetcher::StsFetcher(StsFetcherOptions options, StsCache* cache)
    : options_(std::move(options)), cache_(cache) {
  static std::once_flag once;
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
  for (int i = 0; i < std::max(1, options_.threads); ++i) {
    threads_.emplace_back([this] { Run(); });
  }
}

StsFetcher::~StsFetcher() {
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
  }
  for (std::thread& t : threads_) t.join();
}

void StsFetcher::Fetch(std::string domain, std::vector<std::string> addresses,
                       std::string id, absl::Time now, Done done) {
  {
    absl::MutexLock lock(&mu_);
    if (!stop_ && waiting_.size() < options_.max_waiting) {
      waiting_.push_back(Request{std::move(domain), std::move(addresses),
                                 std::move(id), now, std::move(done)});
      return;
    }
  }
  ++failed_;
  done(absl::UnavailableError(
      "too many MTA-STS policy fetches waiting; trying again later"));
}

void StsFetcher::Run() {
  while (true) {
    Request r;
    {
      absl::MutexLock lock(&mu_);
      auto ready = [this]() ABSL_SHARED_LOCKS_REQUIRED(mu_) {
        return stop_.load() || !waiting_.empty();
      };
      mu_.Await(absl::Condition(&ready));
      if (stop_) return;  // Unfinished fetches' `done` are dropped.
      r = std::move(waiting_.front());
      waiting_.pop_front();
    }
    absl::StatusOr<StsPolicy> policy =
        FetchNow(options_, r.domain, r.addresses, &stop_);
    if (stop_) return;
    if (policy.ok()) {
      ++fetched_;
      if (cache_ != nullptr) {
        StsCacheEntry entry{*policy, r.id, r.now, r.now};
        absl::Status kept = cache_->Put(r.domain, entry);
        if (!kept.ok()) {
          log::Warn(kLog, "%s: policy fetched but not kept: %s", r.domain,
                    kept.message());
        }
      }
    } else {
      ++failed_;
    }
    r.done(std::move(policy));
  }
}

absl::StatusOr<StsPolicy> StsFetcher::FetchNow(
    const StsFetcherOptions& options, const std::string& domain,
    const std::vector<std::string>& addresses, const std::atomic<bool>* stop) {
  std::string host = absl::StrCat("mta-sts.", domain);
  if (addresses.empty()) {
    return absl::UnavailableError(absl::StrCat(host, " has no address"));
  }
  CURL* curl = curl_easy_init();
  if (curl == nullptr) {
    return absl::UnavailableError("libcurl could not start a request");
  }
  std::string url =
      absl::StrCat("https://", host,
                   options.port == 443 ? "" : absl::StrCat(":", options.port),
                   "/.well-known/mta-sts.txt");
  // Connect to the addresses our resolver gave; the name stays the host's
  // for SNI and the certificate check.
  std::vector<std::string> literal;
  for (const std::string& a : addresses) {
    literal.push_back(absl::StrContains(a, ':') ? absl::StrCat("[", a, "]")
                                                : a);
  }
  std::string resolve =
      absl::StrCat(host, ":", options.port, ":", absl::StrJoin(literal, ","));
  curl_slist* resolves = curl_slist_append(nullptr, resolve.c_str());
  Body body;
  curl_easy_setopt(curl, CURLOPT_URL, url.c_str());
  curl_easy_setopt(curl, CURLOPT_RESOLVE, resolves);
  curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "https");
  curl_easy_setopt(curl, CURLOPT_FOLLOWLOCATION, 0L);
  curl_easy_setopt(curl, CURLOPT_SSL_VERIFYPEER, 1L);
  curl_easy_setopt(curl, CURLOPT_SSL_VERIFYHOST, 2L);
  if (!options.ca_file.empty()) {
    curl_easy_setopt(curl, CURLOPT_CAINFO, options.ca_file.c_str());
  }
  curl_easy_setopt(
      curl, CURLOPT_TIMEOUT_MS,
      static_cast<long>(absl::ToInt64Milliseconds(options.timeout)));
  curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(curl, CURLOPT_MAXFILESIZE_LARGE,
                   static_cast<curl_off_t>(kMaxPolicy));
  curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, Keep);
  curl_easy_setopt(curl, CURLOPT_WRITEDATA, &body);
  if (stop != nullptr) {
    curl_easy_setopt(curl, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(curl, CURLOPT_XFERINFOFUNCTION, Progress);
    curl_easy_setopt(curl, CURLOPT_XFERINFODATA, stop);
  }
  curl_easy_setopt(curl, CURLOPT_USERAGENT, "peregrine-mta-sts");
  CURLcode rc = curl_easy_perform(curl);
  long status = 0;
  curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
  char* type_ptr = nullptr;
  curl_easy_getinfo(curl, CURLINFO_CONTENT_TYPE, &type_ptr);
  std::string type = type_ptr == nullptr ? "" : type_ptr;
  curl_slist_free_all(resolves);
  curl_easy_cleanup(curl);
  if (body.too_big || rc == CURLE_FILESIZE_EXCEEDED) {
    return absl::InvalidArgumentError(
        absl::StrCat(url, ": the policy is larger than 64 KiB"));
  }
  if (rc != CURLE_OK) {
    return absl::UnavailableError(
        absl::StrCat(url, ": ", curl_easy_strerror(rc)));
  }
  if (status >= 300 && status < 400) {
    return absl::UnavailableError(absl::StrCat(
        url, ": answered HTTP ", status, " (redirects are not followed)"));
  }
  if (status != 200) {
    return absl::UnavailableError(
        absl::StrCat(url, ": answered HTTP ", status));
  }
  std::string media = absl::AsciiStrToLower(
      absl::StripAsciiWhitespace(type.substr(0, type.find(';'))));
  if (media != "text/plain") {
    return absl::InvalidArgumentError(absl::StrCat(
        url, ": served as \"", type, "\", not text/plain (RFC 8461 3.2)"));
  }
  absl::StatusOr<StsPolicy> policy = ParseStsPolicy(body.text);
  if (!policy.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(url, ": ", policy.status().message()));
  }
  return policy;
}

}  // namespace peregrine::delivery
