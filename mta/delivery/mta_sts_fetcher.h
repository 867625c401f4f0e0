// StsFetcher: fetches MTA-STS policy files (RFC 8461 3.3) over HTTPS with
// libcurl, off the shards.
//
// A fetch is GET https://mta-sts.DOMAIN/.well-known/mta-sts.txt to the
// addresses the caller resolved (the shard's resolver, so the daemon's
// [dns] servers decide, not the system's): the certificate must be trusted
// (delivery.ca_file, or the system's) and name mta-sts.DOMAIN; redirects
// are refused; the answer must be 200 with Content-Type text/plain and at
// most 64 KiB; the whole fetch, connect included, has `timeout`. The body
// is parsed (ParseStsPolicy); a successful fetch is kept in the cache
// (StsCache::Put, a side-table write, here rather than on a shard) before
// `done` runs.
//
// Why threads with blocking transfers, not libcurl's multi interface on
// the reactor: policies are fetched about once per destination domain per
// day, so a couple of threads carry any load while the shards never wait;
// webhooks (mta/outcome/webhook.h) send the same way. At most
// `max_waiting` fetches wait; past that a fetch fails at once ("busy").
//
// Threads: Fetch() from any thread; `done` runs on a fetcher thread and
// must only post work elsewhere (the engine posts to its shard).
//
// Lifetime: made before the shards start, destroyed after they stopped.
// The destructor stops the threads: a transfer in progress is cut at once,
// and the `done` of fetches not finished is dropped, never called.
#pragma once

#include <atomic>
#include <cstdint>
#include <deque>
#include <string>
#include <thread>
#include <vector>

#include "absl/functional/any_invocable.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "mta/delivery/mta_sts.h"
#include "mta/delivery/mta_sts_cache.h"

namespace peregrine::delivery {

struct StsFetcherOptions {
  absl::Duration timeout = absl::Seconds(30);
  std::string ca_file;  // Empty: the system's trust store.
  int port = 443;       // RFC 8461: 443. Other values for unit tests.
  int threads = 2;
  size_t max_waiting = 1000;
};

class StsFetcher {
 public:
  using Done = absl::AnyInvocable<void(absl::StatusOr<StsPolicy>)>;

  // `cache` (may be null) outlives the fetcher.
  StsFetcher(StsFetcherOptions options, StsCache* cache);
  ~StsFetcher();
  StsFetcher(const StsFetcher&) = delete;
  StsFetcher& operator=(const StsFetcher&) = delete;

  // Fetches DOMAIN's policy from `addresses` (IP literals). On success the
  // policy is kept in the cache with `id` and `now` as its fetch time.
  void Fetch(std::string domain, std::vector<std::string> addresses,
             std::string id, absl::Time now, Done done);

  uint64_t fetched() const { return fetched_.load(); }
  uint64_t failed() const { return failed_.load(); }

  // One blocking fetch (what a thread does): the policy text's parse, or
  // Unavailable/InvalidArgument saying what went wrong.
  static absl::StatusOr<StsPolicy> FetchNow(
      const StsFetcherOptions& options, const std::string& domain,
      const std::vector<std::string>& addresses, const std::atomic<bool>* stop);

 private:
  struct Request {
    std::string domain;
    std::vector<std::string> addresses;
    std::string id;
    absl::Time now;
    Done done;
  };
  void Run();

  const StsFetcherOptions options_;
  StsCache* const cache_;
  absl::Mutex mu_;
  std::deque<Request> waiting_ ABSL_GUARDED_BY(mu_);
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> fetched_{0};
  std::atomic<uint64_t> failed_{0};
  std::vector<std::thread> threads_;
};

}  // namespace peregrine::delivery
