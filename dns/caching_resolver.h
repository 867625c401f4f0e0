// CachingResolver: Resolver over a Transport that carries raw DNS packets.
//
// Owned by one shard (see resolver.h). Keeps a cache per shard, bounded
// (least recently used entries go first) and honouring TTLs: positive
// answers for the smallest TTL of the records and CNAMEs used, negative
// answers (NXDOMAIN, NODATA) for the SOA's negative TTL (RFC 2308 §5).
// Transient failures are not cached. Identical queries in flight are sent
// once and answer every asker. CNAMEs are followed, up to 8.
//
// Time and deferral are parameters, so the cache and the mail rules are
// tested with a fake clock and a fake transport.
#pragma once

#include <functional>
#include <list>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/node_hash_map.h"
#include "absl/time/time.h"
#include "dns/resolver.h"

namespace peregrine::dns {

class Transport {
 public:
  using Done = absl::AnyInvocable<void(absl::StatusOr<std::string> packet)>;
  virtual ~Transport() = default;
  // The response packet (any RCODE the transport passes on), or a
  // transient error: timeout, SERVFAIL, refused, network.
  virtual void Query(const std::string& name, uint16_t type, Done done) = 0;
};

// What a look-up found, as cached.
struct Answer {
  enum Kind { kRecords, kNoData, kNxDomain } kind = kRecords;
  std::vector<Record> records;  // Of the asked type, at the end of CNAMEs.
  // Every response on the way said AD, and the resolver trusts AD.
  bool authenticated = false;
};

// Bounded LRU of answers with expiry; pure.
class DnsCache {
 public:
  explicit DnsCache(size_t max_entries) : max_entries_(max_entries) {}

  // The answer if cached and not expired at `now` (and marks it used).
  const Answer* Find(const std::string& key, absl::Time now);
  void Put(const std::string& key, Answer answer, absl::Time expires);
  size_t size() const { return entries_.size(); }
  uint64_t evictions() const { return evictions_; }

 private:
  struct Entry {
    Answer answer;
    absl::Time expires;
    std::list<const std::string*>::iterator lru;
  };
  size_t max_entries_;
  absl::node_hash_map<std::string, Entry> entries_;
  std::list<const std::string*> lru_;  // Front: most recently used.
  uint64_t evictions_ = 0;
};

struct CachingResolverOptions {
  size_t cache_entries = 10000;
  absl::Duration max_ttl = absl::Hours(24);
  // Negative answers without a SOA are kept this long.
  absl::Duration default_negative_ttl = absl::Minutes(1);
  absl::Duration max_negative_ttl = absl::Hours(1);
  uint64_t seed = 0;  // Shuffles MX hosts of equal preference.
  // Believe the AD bit of answers (DNSSEC validated by the server): only
  // when the path to a validating server is trusted (loopback, or as the
  // operator says: dns.dnssec, dns.trust_ad). Otherwise every answer is
  // unauthenticated.
  bool trust_ad = false;
};

class CachingResolver final : public Resolver {
 public:
  using Clock = std::function<absl::Time()>;
  using Defer = std::function<void(absl::AnyInvocable<void()>)>;

  CachingResolver(std::unique_ptr<Transport> transport, Clock clock,
                  Defer defer, CachingResolverOptions options = {});
  // Cancels what is in flight: askers are told, later, with Cancelled.
  ~CachingResolver() override;

  void Mx(std::string domain, Callback<std::vector<MxHost>> done) override;
  void Addresses(std::string host, Callback<HostAddresses> done) override;
  void Ptr(IpAddress ip, Callback<std::vector<std::string>> done) override;
  void Txt(std::string name, Callback<std::vector<std::string>> done) override;
  void Tlsa(std::string name, Callback<TlsaAnswer> done) override;

  // One (name, type) look-up through the cache.
  void Lookup(std::string name, uint16_t type, Callback<Answer> done);

  const DnsCache& cache() const { return cache_; }
  uint64_t queries_sent() const { return queries_sent_; }
  uint64_t cache_hits() const { return cache_hits_; }

 private:
  void Start(const std::string& key, const std::string& name, uint16_t type,
             int hops);
  void Finish(const std::string& key, absl::StatusOr<Answer> result,
              absl::Duration ttl);
  absl::Duration NegativeTtl(const Response& response) const;

  std::unique_ptr<Transport> transport_;
  Clock clock_;
  Defer defer_;
  CachingResolverOptions options_;
  DnsCache cache_;
  absl::flat_hash_map<std::string, std::vector<Callback<Answer>>> in_flight_;
  std::mt19937_64 rng_;
  uint64_t queries_sent_ = 0;
  uint64_t cache_hits_ = 0;
};

}  // namespace peregrine::dns
