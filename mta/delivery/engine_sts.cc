// The delivery engine's MTA-STS part (RFC 8461): which policy a domain
// has, and what it does to the site its mail goes to. See engine.h (the
// path of a recipient) and mta_sts_cache.h / mta_sts_fetcher.h.
//
// Per domain, after its MX look-up:
//   - a cached policy (valid until max_age) applies at once; its TXT id is
//     looked at again every hour in the background, and a new id (or less
//     than half its max_age left) fetches it again;
//   - a domain known to have none (no `_mta-sts` record, an hour) goes on;
//   - otherwise the job waits on this shard while `_mta-sts.DOMAIN` TXT is
//     looked up and, when it announces a policy, the policy is fetched
//     (StsFetcher, off the shard). Nothing is sent meanwhile. One look-up
//     per domain at a time on a shard; the others wait with it.
// A fetch that fails: the domain's mail is deferred with the reason for
// delivery.mta_sts_fetch_grace from the first failure (a fetch is tried
// again at most once a minute), then goes as though there were no policy.
#include <algorithm>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "base/log.h"
#include "mta/delivery/engine.h"

namespace peregrine::delivery {
namespace {

constexpr char kLog[] = "mta-sts";
// After a failed fetch, the next one waits at least this long.
constexpr absl::Duration kFetchAgainAfter = absl::Minutes(1);

std::string HostNames(const std::vector<dns::MxHost>& mx) {
  std::vector<std::string> names;
  for (const dns::MxHost& h : mx) names.push_back(h.host);
  return absl::StrJoin(names, ", ");
}

}  // namespace

SiteOptions DeliveryShard::OptionsOf(const Site& site) const {
  SiteOptions o = OptionsFor(site.smarthost, site.domain, site.mx);
  if (site.sts == StsMode::kEnforce) o.tls = TlsMode::kVerify;
  return o;
}

std::string SitePolicy::KeySuffix() const {
  std::string out;
  if (dane_required) {
    out += "|dane-required";
  } else if (dane) {
    out += "|dane";
  }
  if (sts == StsMode::kEnforce) out += "|mta-sts";
  if (sts == StsMode::kTesting) out += "|mta-sts-testing";
  return out;
}

void DeliveryShard::HandOverByMx(std::unique_ptr<Job> job,
                                 std::vector<dns::MxHost> mx, SitePolicy site) {
  std::string key = absl::StrCat(KeyFor(job->domain, mx), site.KeySuffix());
  HandOver(std::move(job), std::move(key), std::move(mx), false,
           std::move(site));
}

void DeliveryShard::RouteByMx(std::unique_ptr<Job> job,
                              std::vector<dns::MxHost> mx) {
  const TlsPolicyUse use = ResolveTlsPolicy(*options_, job->domain, mx);
  SitePolicy site;
  // DANE first (RFC 7672; RFC 8461 2: it takes precedence): only with an
  // MX answer the trusted resolver validated.
  const bool validated =
      options_->dane && !mx.empty() && mx.front().authenticated;
  if (use == TlsPolicyUse::kDane) {
    if (!validated) {
      job->tls_policy = "dane";
      job->tls_failure = "dnssec-invalid";
      return DeferAll(
          *job, Reply{451, "4.7.5",
                      absl::StrCat("DANE is required for ", job->domain,
                                   " (tls_policy = \"dane\") but ",
                                   options_->dane
                                       ? "its MX answer is not DNSSEC-validated"
                                       : "DNSSEC answers are not trusted here "
                                         "(dns.dnssec, dns.trust_ad)")});
    }
    site.dane = site.dane_required = true;
    return HandOverByMx(std::move(job), std::move(mx), std::move(site));
  }
  site.dane = validated && use == TlsPolicyUse::kAuto;
  StsCache* cache = context_.sts_cache;
  if (cache == nullptr || context_.sts_fetcher == nullptr ||
      !options_->mta_sts || use == TlsPolicyUse::kOff) {
    site.dane = site.dane && use != TlsPolicyUse::kOff;
    return HandOverByMx(std::move(job), std::move(mx), std::move(site));
  }
  const std::string domain = job->domain;
  absl::Time now = reactor_.Now();
  if (std::optional<StsCacheEntry> entry = cache->Get(domain, now)) {
    if (now - entry->checked >= StsCache::kCheckEvery) {
      cache->Checked(domain, now);  // One look at a time.
      LookUpSts(domain, /*refresh=*/true);
    }
    return ApplySts(std::move(job), std::move(mx), std::move(site),
                    entry->policy);
  }
  if (cache->KnownNone(domain, now)) {
    return HandOverByMx(std::move(job), std::move(mx), std::move(site));
  }
  if (std::optional<StsCache::Failure> f = cache->FailureOf(domain);
      f && now - f->last < kFetchAgainAfter) {
    return StsUnavailable(std::move(job), std::move(mx), std::move(site), *f);
  }
  std::vector<StsWaiting>& waiting = sts_waiting_[domain];
  waiting.push_back(StsWaiting{std::move(job), std::move(mx), std::move(site)});
  if (waiting.size() == 1) LookUpSts(domain, /*refresh=*/false);
}

void DeliveryShard::LookUpSts(const std::string& domain, bool refresh) {
  dns::Resolver* resolver = this->resolver();
  if (resolver == nullptr) return StsKnown(domain, nullptr);
  resolver->Txt(
      absl::StrCat("_mta-sts.", domain),
      [this, domain, refresh](absl::StatusOr<std::vector<std::string>> txt) {
        absl::Time now = reactor_.Now();
        // RFC 8461 3.1: records not starting "v=STSv1" are discarded; other
        // than exactly one valid record left means no policy.
        std::vector<std::string> ids;
        bool invalid = false;
        if (txt.ok()) {
          for (const std::string& record : *txt) {
            if (!absl::StartsWith(record, "v=STSv1")) continue;
            absl::StatusOr<std::string> id = ParseStsRecord(record);
            if (id.ok()) {
              ids.push_back(*id);
            } else {
              invalid = true;
            }
          }
        }
        if (ids.size() != 1 || invalid) {
          if (txt.ok() || dns::IsPermanent(txt.status())) {
            context_.sts_cache->NoPolicy(domain, now);
          } else {
            // A failed look-up: no policy known now (RFC 8461 3.3 goes on
            // without one); asked again for the next mail.
            log::Debug(kLog, "%s: _mta-sts look-up failed: %s", domain,
                       txt.status().message());
          }
          if (!refresh) StsKnown(domain, nullptr);
          return;
        }
        if (refresh) {
          // The cached policy stays while its id does and it is not near
          // its end; a record gone keeps it too, until max_age (3.3).
          std::optional<StsCacheEntry> entry =
              context_.sts_cache->Get(domain, now);
          if (entry && entry->id == ids[0] &&
              entry->Expires() - now >
                  absl::Seconds(entry->policy.max_age) / 2) {
            return;
          }
        }
        FetchSts(domain, ids[0], refresh);
      });
}

void DeliveryShard::FetchSts(const std::string& domain, const std::string& id,
                             bool refresh) {
  dns::Resolver* resolver = this->resolver();
  std::string host = absl::StrCat("mta-sts.", domain);
  resolver->Addresses(host, [this, domain, id, refresh,
                             host](absl::StatusOr<dns::HostAddresses> a) {
    if (!a.ok() || a->empty()) {
      return StsFetched(
          domain, refresh,
          absl::UnavailableError(absl::StrCat(
              host, " has no address",
              a.ok() ? "" : absl::StrCat(" (", a.status().message(), ")"))));
    }
    std::vector<std::string> ips;
    for (const dns::IpAddress& ip : a->v4) ips.push_back(ip.ToString());
    for (const dns::IpAddress& ip : a->v6) ips.push_back(ip.ToString());
    EngineContext* context = &context_;
    int shard = reactor_.id();
    context_.sts_fetcher->Fetch(
        domain, std::move(ips), id, reactor_.Now(),
        [context, shard, domain, refresh](absl::StatusOr<StsPolicy> policy) {
          // On a fetcher thread: back to the shard that asked.
          context->group->SubmitTo(shard,
                                   [context, shard, domain, refresh,
                                    policy = std::move(policy)]() mutable {
                                     context->engines[shard]->StsFetched(
                                         domain, refresh, std::move(policy));
                                   });
        });
  });
}

void DeliveryShard::StsFetched(const std::string& domain, bool refresh,
                               absl::StatusOr<StsPolicy> policy) {
  if (policy.ok()) {
    log::Info(kLog, "%s: policy fetched: mode %s, max_age %ds, mx %s", domain,
              StsModeName(policy->mode), policy->max_age,
              absl::StrJoin(policy->mx, ", "));
    return StsKnown(domain, &*policy);
  }
  log::Warn(kLog, "%s: the announced policy could not be fetched: %s%s", domain,
            policy.status().message(),
            refresh ? " (the cached policy stays in force)" : "");
  if (refresh) return;
  StsCache::Failure failure = context_.sts_cache->Failed(
      domain, reactor_.Now(), std::string(policy.status().message()),
      absl::IsInvalidArgument(policy.status()));
  auto it = sts_waiting_.find(domain);
  if (it == sts_waiting_.end()) return;
  std::vector<StsWaiting> waiting = std::move(it->second);
  sts_waiting_.erase(it);
  for (StsWaiting& w : waiting) {
    StsUnavailable(std::move(w.job), std::move(w.mx), std::move(w.site),
                   failure);
  }
}

void DeliveryShard::StsKnown(const std::string& domain,
                             const StsPolicy* policy) {
  auto it = sts_waiting_.find(domain);
  if (it == sts_waiting_.end()) return;
  std::vector<StsWaiting> waiting = std::move(it->second);
  sts_waiting_.erase(it);
  for (StsWaiting& w : waiting) {
    if (policy != nullptr) {
      ApplySts(std::move(w.job), std::move(w.mx), std::move(w.site), *policy);
    } else {
      HandOverByMx(std::move(w.job), std::move(w.mx), std::move(w.site));
    }
  }
}

void DeliveryShard::ApplySts(std::unique_ptr<Job> job,
                             std::vector<dns::MxHost> mx, SitePolicy site,
                             const StsPolicy& policy) {
  switch (policy.mode) {
    case StsMode::kNone:
      return HandOverByMx(std::move(job), std::move(mx), std::move(site));
    case StsMode::kTesting:
      site.sts = StsMode::kTesting;
      site.sts_mx = policy.mx;
      return HandOverByMx(std::move(job), std::move(mx), std::move(site));
    case StsMode::kEnforce:
      break;
  }
  std::vector<dns::MxHost> allowed;
  for (const dns::MxHost& h : mx) {
    if (StsAllows(policy, h.host)) allowed.push_back(h);
  }
  if (allowed.empty()) {
    job->tls_policy = "mta-sts";
    job->tls_failure = "validation-failure";
    return DeferAll(
        *job, Reply{451, "4.7.0",
                    absl::StrCat("MTA-STS policy of ", job->domain,
                                 " (enforce) allows none of its MX hosts (",
                                 HostNames(mx), "); it names ",
                                 absl::StrJoin(policy.mx, ", "))});
  }
  if (allowed.size() < mx.size()) {
    log::Debug(kLog, "%s: enforce: %zu of %zu MX hosts allowed", job->domain,
               allowed.size(), mx.size());
  }
  site.sts = StsMode::kEnforce;
  site.sts_mx = policy.mx;
  HandOverByMx(std::move(job), std::move(allowed), std::move(site));
}

void DeliveryShard::StsUnavailable(std::unique_ptr<Job> job,
                                   std::vector<dns::MxHost> mx, SitePolicy site,
                                   const StsCache::Failure& failure) {
  absl::Time now = reactor_.Now();
  const absl::Duration grace = options_->mta_sts_fetch_grace;
  if (now - failure.since >= grace) {
    // RFC 8461 3.3: no policy could be fetched and none is cached: on as
    // though the domain had none.
    log::Debug(kLog, "%s: no policy fetched for %s: sent without one",
               job->domain, absl::FormatDuration(now - failure.since));
    return HandOverByMx(std::move(job), std::move(mx), std::move(site));
  }
  job->tls_policy = "mta-sts";
  job->tls_failure =
      failure.invalid ? "sts-policy-invalid" : "sts-policy-fetch-error";
  DeferAll(*job,
           Reply{451, "4.7.0",
                 absl::StrCat("MTA-STS policy of ", job->domain,
                              " is announced but could not be fetched (",
                              failure.why,
                              "); not sent without it; it is tried again, "
                              "and after ",
                              absl::FormatDuration(grace),
                              " of failures mail goes without it")});
}

std::string TlsFailureType(const Site& site, const Reply& failure) {
  const std::string& t = failure.text;
  bool dane = absl::StartsWith(t, "DANE");
  if (!dane && site.sts != StsMode::kEnforce) return "";
  if (absl::StrContains(t, "TLSA look-up")) return "dnssec-invalid";
  if (absl::StrContains(t, "STARTTLS")) return "starttls-not-supported";
  // OpenSSL's words for the certificate check (X509_verify_cert_error_string).
  if (absl::StrContains(t, "DANE TLSA")) return "tlsa-invalid";
  if (absl::StrContains(t, "hostname mismatch")) {
    return "certificate-host-mismatch";
  }
  if (absl::StrContains(t, "certificate has expired")) {
    return "certificate-expired";
  }
  if (absl::StrContains(t, "self-signed") ||
      absl::StrContains(t, "unable to get local issuer")) {
    return "certificate-not-trusted";
  }
  if (absl::StrContains(t, "certificate") || absl::StrContains(t, "TLS")) {
    return "validation-failure";
  }
  return "";
}

std::string StsTestingNote(const Site& site, const Where& where) {
  if (site.sts != StsMode::kTesting) return "";
  StsPolicy policy;
  policy.mx = site.sts_mx;
  std::vector<std::string> wrong;
  if (!StsAllows(policy, where.mx)) wrong.push_back("the MX host is not in it");
  if (!where.tls) {
    wrong.push_back("no TLS (starttls-not-supported)");
  } else if (!where.tls->verified) {
    wrong.push_back("the certificate was not verified (validation-failure)");
  }
  if (wrong.empty()) return "";
  return absl::StrCat("MTA-STS policy (testing) would refuse this: ",
                      absl::StrJoin(wrong, "; "));
}

}  // namespace peregrine::delivery
