#include "dns/caching_resolver.h"

#include <sys/socket.h>

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace peregrine::dns {
namespace {

constexpr int kMaxCnameHops = 8;

absl::Duration MinTtl(const std::vector<Record>& records, absl::Duration cap) {
  absl::Duration ttl = cap;
  for (const Record& r : records) ttl = std::min(ttl, absl::Seconds(r.ttl));
  return ttl;
}

}  // namespace

bool HostAddresses::Contains(const IpAddress& ip) const {
  for (const IpAddress& a : ip.family() == AF_INET ? v4 : v6) {
    if (a == ip) return true;
  }
  return false;
}

bool IsPermanent(const absl::Status& status) {
  return absl::IsNotFound(status) || absl::IsFailedPrecondition(status) ||
         absl::IsInvalidArgument(status);
}

const Answer* DnsCache::Find(const std::string& key, absl::Time now) {
  auto it = entries_.find(key);
  if (it == entries_.end()) return nullptr;
  if (it->second.expires <= now) {
    lru_.erase(it->second.lru);
    entries_.erase(it);
    return nullptr;
  }
  lru_.splice(lru_.begin(), lru_, it->second.lru);
  return &it->second.answer;
}

void DnsCache::Put(const std::string& key, Answer answer, absl::Time expires) {
  if (max_entries_ == 0) return;
  auto [it, inserted] = entries_.try_emplace(key);
  if (inserted) {
    lru_.push_front(&it->first);
    it->second.lru = lru_.begin();
  } else {
    lru_.splice(lru_.begin(), lru_, it->second.lru);
  }
  it->second.answer = std::move(answer);
  it->second.expires = expires;
  while (entries_.size() > max_entries_) {
    const std::string* oldest = lru_.back();
    lru_.pop_back();
    entries_.erase(*oldest);
    ++evictions_;
  }
}

CachingResolver::CachingResolver(std::unique_ptr<Transport> transport,
                                 Clock clock, Defer defer,
                                 CachingResolverOptions options)
    : transport_(std::move(transport)),
      clock_(std::move(clock)),
      defer_(std::move(defer)),
      options_(options),
      cache_(options.cache_entries),
      rng_(options.seed) {}

CachingResolver::~CachingResolver() {
  // The transport first, while the in-flight table it reports to exists.
  transport_.reset();
}

absl::Duration CachingResolver::NegativeTtl(const Response& response) const {
  for (const Record& r : response.authority) {
    if (r.type == kSoa) {
      absl::Duration ttl =
          absl::Seconds(std::min(r.ttl, r.soa_minimum));  // RFC 2308 §5.
      return std::min(ttl, options_.max_negative_ttl);
    }
  }
  return options_.default_negative_ttl;
}

void CachingResolver::Lookup(std::string name, uint16_t type,
                             Callback<Answer> done) {
  name = NormalizeName(name);
  if (name.empty() || name.size() > 253) {
    defer_([done = std::move(done), name]() mutable {
      done(absl::InvalidArgumentError(
          absl::StrCat("'", name, "' is not a domain name")));
    });
    return;
  }
  std::string key = absl::StrCat(type, ":", name);
  if (const Answer* hit = cache_.Find(key, clock_())) {
    ++cache_hits_;
    defer_([done = std::move(done), answer = *hit]() mutable {
      done(std::move(answer));
    });
    return;
  }
  std::vector<Callback<Answer>>& waiters = in_flight_[key];
  waiters.push_back(std::move(done));
  if (waiters.size() > 1) return;  // Already asked: share the answer.
  Start(key, name, type, 0);
}

void CachingResolver::Start(const std::string& key, const std::string& name,
                            uint16_t type, int hops) {
  ++queries_sent_;
  transport_->Query(
      name, type,
      [this, key, name, type, hops](absl::StatusOr<std::string> packet) {
        if (!packet.ok()) {
          if (absl::IsNotFound(
                  packet.status())) {  // NXDOMAIN, packet not kept.
            return Finish(key, Answer{Answer::kNxDomain, {}},
                          options_.default_negative_ttl);
          }
          return Finish(key, packet.status(), absl::ZeroDuration());
        }
        auto response = ParseResponse(*packet);
        if (!response.ok()) {
          return Finish(key,
                        absl::UnavailableError(
                            absl::StrCat("unreadable DNS answer for ", name,
                                         ": ", response.status().message())),
                        absl::ZeroDuration());
        }
        const bool ad = options_.trust_ad && response->authenticated;
        if (response->rcode == 3) {
          return Finish(key, Answer{Answer::kNxDomain, {}, ad},
                        NegativeTtl(*response));
        }
        if (response->rcode != 0) {
          return Finish(key,
                        absl::UnavailableError(absl::StrCat(
                            "DNS server answered rcode ", response->rcode,
                            " for ", name, " ", TypeName(type))),
                        absl::ZeroDuration());
        }
        // Follow CNAMEs inside this answer.
        std::string current = name;
        absl::Duration chain_ttl = options_.max_ttl;
        for (int i = 0; i <= kMaxCnameHops; ++i) {
          Answer answer;
          answer.authenticated = ad;
          for (const Record& r : response->answers) {
            if (r.type == type && r.name == current)
              answer.records.push_back(r);
          }
          if (!answer.records.empty()) {
            absl::Duration ttl =
                std::min(chain_ttl, MinTtl(answer.records, chain_ttl));
            return Finish(key, std::move(answer), ttl);
          }
          const Record* cname = nullptr;
          for (const Record& r : response->answers) {
            if (r.type == kCname && r.name == current) cname = &r;
          }
          if (cname == nullptr) break;
          chain_ttl = std::min(chain_ttl, absl::Seconds(cname->ttl));
          current = cname->target;
        }
        if (current == name) {
          return Finish(key, Answer{Answer::kNoData, {}, ad},
                        NegativeTtl(*response));
        }
        // The chain leaves this answer: ask for its end. Not coalesced, so a
        // CNAME loop across answers cannot wait on itself; it stops at the hop
        // limit instead.
        if (hops >= kMaxCnameHops) {
          return Finish(key,
                        absl::UnavailableError(absl::StrCat(
                            "CNAME chain from ", name, " is longer than ",
                            kMaxCnameHops, " (a loop?)")),
                        absl::ZeroDuration());
        }
        std::string chase_key = absl::StrCat(key, "#", hops + 1);
        in_flight_[chase_key].push_back(
            [this, key, chain_ttl, ad](absl::StatusOr<Answer> end) {
              if (end.ok()) end->authenticated = end->authenticated && ad;
              absl::Duration ttl = chain_ttl;
              if (end.ok() && end->kind == Answer::kRecords) {
                ttl = MinTtl(end->records, chain_ttl);
              } else if (end.ok()) {
                ttl = std::min(chain_ttl, options_.default_negative_ttl);
              }
              Finish(key, std::move(end), ttl);
            });
        Start(chase_key, current, type, hops + 1);
      });
}

void CachingResolver::Finish(const std::string& key,
                             absl::StatusOr<Answer> result,
                             absl::Duration ttl) {
  bool chase = key.find('#') != std::string::npos;
  if (result.ok() && !chase && ttl > absl::ZeroDuration()) {
    cache_.Put(key, *result, clock_() + std::min(ttl, options_.max_ttl));
  }
  auto node = in_flight_.extract(key);
  if (node.empty()) return;
  for (auto& waiter : node.mapped()) {
    if (chase) {
      waiter(result);  // Internal: continues the original look-up.
    } else {
      defer_([waiter = std::move(waiter), result]() mutable {
        waiter(std::move(result));
      });
    }
  }
}

void CachingResolver::Mx(std::string domain,
                         Callback<std::vector<MxHost>> done) {
  std::string d = NormalizeName(domain);
  Lookup(
      d, kMx,
      [this, d, done = std::move(done)](absl::StatusOr<Answer> answer) mutable {
        if (!answer.ok()) return done(answer.status());
        if (answer->kind == Answer::kNxDomain) {
          return done(absl::NotFoundError(
              absl::StrCat("domain ", d, " does not exist (NXDOMAIN)")));
        }
        if (answer->kind == Answer::kNoData) {
          // No MX: the domain's own address is its mail exchanger.
          bool authenticated = answer->authenticated;
          Addresses(d, [d, authenticated, done = std::move(done)](
                           absl::StatusOr<HostAddresses> addresses) mutable {
            if (!addresses.ok()) {
              if (IsPermanent(addresses.status())) {
                return done(absl::NotFoundError(absl::StrCat(
                    "domain ", d, " has no MX and no A/AAAA records")));
              }
              return done(addresses.status());
            }
            // An implicit MX is authenticated when the "no MX" answer and
            // the address answers both are.
            done(std::vector<MxHost>{
                {d, 0, true, authenticated && addresses->authenticated}});
          });
          return;
        }
        std::vector<MxHost> hosts;
        bool null_mx = false;
        for (const Record& r : answer->records) {
          if (r.target.empty()) {
            null_mx = true;  // "MX 0 ." (RFC 7505).
          } else {
            hosts.push_back(
                {r.target, r.preference, false, answer->authenticated});
          }
        }
        if (hosts.empty()) {
          return done(absl::FailedPreconditionError(absl::StrCat(
              "domain ", d, " does not accept mail (null MX, RFC 7505)")));
        }
        (void)null_mx;  // A null MX beside real ones is ignored, as §3 allows.
        // By preference; equals in random order, so load spreads (§5.1).
        std::shuffle(hosts.begin(), hosts.end(), rng_);
        std::stable_sort(hosts.begin(), hosts.end(),
                         [](const MxHost& a, const MxHost& b) {
                           return a.preference < b.preference;
                         });
        done(std::move(hosts));
      });
}

void CachingResolver::Addresses(std::string host,
                                Callback<HostAddresses> done) {
  auto literal = IpAddress::Parse(host);
  if (literal.ok()) {
    HostAddresses out;
    (literal->family() == AF_INET ? out.v4 : out.v6).push_back(*literal);
    defer_([done = std::move(done), out]() mutable { done(out); });
    return;
  }
  struct State {
    int left = 2;
    int authenticated = 0;  // Answers that were.
    HostAddresses out;
    absl::Status transient;
    int nxdomain = 0;
    std::string host;
    Callback<HostAddresses> done;
  };
  auto state = std::make_shared<State>();
  state->host = NormalizeName(host);
  state->done = std::move(done);
  for (uint16_t type : {uint16_t{kA}, uint16_t{kAaaa}}) {
    Lookup(state->host, type, [state, type](absl::StatusOr<Answer> answer) {
      if (!answer.ok()) {
        if (!IsPermanent(answer.status())) state->transient = answer.status();
      } else if (answer->kind == Answer::kNxDomain) {
        ++state->nxdomain;
        if (answer->authenticated) ++state->authenticated;
      } else {
        if (answer->authenticated) ++state->authenticated;
        for (const Record& r : answer->records) {
          (type == kA ? state->out.v4 : state->out.v6).push_back(r.address);
        }
      }
      if (--state->left > 0) return;
      state->out.authenticated = state->authenticated == 2;
      if (!state->out.empty()) return state->done(std::move(state->out));
      if (!state->transient.ok()) return state->done(state->transient);
      state->done(absl::NotFoundError(
          state->nxdomain == 2
              ? absl::StrCat("host ", state->host, " does not exist (NXDOMAIN)")
              : absl::StrCat("host ", state->host,
                             " has no A or AAAA records")));
    });
  }
}

void CachingResolver::Ptr(IpAddress ip,
                          Callback<std::vector<std::string>> done) {
  Lookup(ip.ReverseName(), kPtr,
         [ip, done = std::move(done)](absl::StatusOr<Answer> answer) mutable {
           if (!answer.ok()) return done(answer.status());
           if (answer->kind != Answer::kRecords) {
             return done(absl::NotFoundError(
                 absl::StrCat("no PTR record for ", ip.ToString())));
           }
           std::vector<std::string> names;
           for (const Record& r : answer->records) names.push_back(r.target);
           done(std::move(names));
         });
}

void CachingResolver::Txt(std::string name,
                          Callback<std::vector<std::string>> done) {
  Lookup(name, kTxt,
         [name, done = std::move(done)](absl::StatusOr<Answer> answer) mutable {
           if (!answer.ok()) return done(answer.status());
           if (answer->kind != Answer::kRecords) {
             return done(absl::NotFoundError(absl::StrCat(
                 "no TXT record for ", name,
                 answer->kind == Answer::kNxDomain ? " (NXDOMAIN)" : "")));
           }
           std::vector<std::string> texts;
           for (const Record& r : answer->records) {
             texts.push_back(absl::StrJoin(r.texts, ""));
           }
           done(std::move(texts));
         });
}

void CachingResolver::Tlsa(std::string name, Callback<TlsaAnswer> done) {
  Lookup(name, kTlsa,
         [done = std::move(done)](absl::StatusOr<Answer> answer) mutable {
           if (!answer.ok()) return done(answer.status());
           TlsaAnswer out;
           out.authenticated = answer->authenticated;
           out.records = std::move(answer->records);
           done(std::move(out));
         });
}

void Resolver::ForwardConfirmed(IpAddress ip, Callback<std::string> done) {
  Ptr(ip, [this, ip, done = std::move(done)](
              absl::StatusOr<std::vector<std::string>> names) mutable {
    if (!names.ok()) return done(names.status());
    // Only the first few names: a long PTR set is not worth a query storm.
    if (names->size() > 5) names->resize(5);
    struct State {
      size_t left;
      std::vector<int> confirmed;  // Per name: 1 yes, 0 no, -1 transient.
      std::vector<std::string> names;
      Callback<std::string> done;
      IpAddress ip;
    };
    auto state = std::make_shared<State>();
    state->left = names->size();
    state->confirmed.assign(names->size(), 0);
    state->names = *names;
    state->done = std::move(done);
    state->ip = ip;
    for (size_t i = 0; i < state->names.size(); ++i) {
      Addresses(state->names[i], [state,
                                  i](absl::StatusOr<HostAddresses> addresses) {
        if (addresses.ok()) {
          state->confirmed[i] = addresses->Contains(state->ip) ? 1 : 0;
        } else if (!IsPermanent(addresses.status())) {
          state->confirmed[i] = -1;
        }
        if (--state->left > 0) return;
        bool transient = false;
        for (size_t j = 0; j < state->names.size(); ++j) {
          if (state->confirmed[j] == 1) return state->done(state->names[j]);
          if (state->confirmed[j] == -1) transient = true;
        }
        if (transient) {
          return state->done(absl::UnavailableError(absl::StrCat(
              "could not confirm the PTR names of ", state->ip.ToString(),
              ": DNS failed; try again later")));
        }
        state->done(absl::NotFoundError(absl::StrCat(
            "no PTR name of ", state->ip.ToString(), " resolves back to it (",
            absl::StrJoin(state->names, ", "), ")")));
      });
    }
  });
}

}  // namespace peregrine::dns
