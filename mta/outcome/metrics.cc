#include "mta/outcome/metrics.h"

#include <algorithm>
#include <vector>

#include "absl/strings/str_cat.h"
#include "mta/advice.h"
#include "mta/bounce/category.h"

namespace peregrine::outcome {

std::string EscapeLabel(absl::string_view value) {
  std::string out;
  out.reserve(value.size());
  for (char c : value) {
    switch (c) {
      case '\\':
        out += "\\\\";
        break;
      case '"':
        out += "\\\"";
        break;
      case '\n':
        out += "\\n";
        break;
      default:
        out += c;
    }
  }
  return out;
}

void Metrics::CountTls(const char* direction, const Outcome& o) {
  std::string version = o.tls ? o.tls->version : "none";
  std::pair<std::string, std::string> key{direction, version};
  // Versions come from OpenSSL: a handful. Bounded all the same.
  if (!tls_.contains(key) && tls_.size() >= 32) key.second = "other";
  ++tls_[key];
}

void Metrics::OnOutcome(const Outcome& o) {
  absl::MutexLock lock(&mu_);
  switch (o.kind) {
    case Kind::kReceived:
      ++received_[o.listener];
      CountTls("in", o);
      return;
    case Kind::kRejected:
      ++refused_[o.listener];
      return;
    case Kind::kDelivered:
    case Kind::kDeferred:
    case Kind::kFailed:
    case Kind::kExpired: {
      if (o.kind == Kind::kDeferred && !o.attempted) return;
      std::string site = o.site;
      auto known = sites_.find(site);
      if (known == sites_.end()) {
        if (sites_.size() >= kMaxSites) {
          site = "other";
        } else {
          known = sites_.emplace(site, "").first;
        }
      }
      if (o.kind != Kind::kDelivered && known != sites_.end()) {
        known->second = o.reply.ToString().substr(0, 300);
      }
      std::string category =
          o.category ? std::string(bounce::CategoryName(*o.category)) : "";
      ++recipients_[{std::string(KindName(o.kind)), site, category}];
      if (o.kind == Kind::kDelivered) {
        CountTls("out", o);
        std::pair<std::string, std::string> key{
            o.tls_policy.empty() ? "-" : o.tls_policy, !o.tls ? "none"
                                                       : o.tls->verified
                                                           ? "true"
                                                           : "false"};
        if (!tls_policy_.contains(key) && tls_policy_.size() >= 32) {
          key.first = "other";
        }
        ++tls_policy_[key];
      }
      return;
    }
    default:
      ++events_[std::string(KindName(o.kind))];
  }
}

std::string Metrics::Render(absl::string_view extra) const {
  std::string out;
  absl::MutexLock lock(&mu_);
  out +=
      "# HELP peregrine_messages_received_total Messages queued by "
      "reception.\n# TYPE peregrine_messages_received_total counter\n";
  for (const auto& [listener, n] : received_) {
    absl::StrAppend(&out, "peregrine_messages_received_total{listener=\"",
                    EscapeLabel(listener), "\"} ", n, "\n");
  }
  out +=
      "# HELP peregrine_clients_refused_total Clients or messages refused "
      "at reception.\n# TYPE peregrine_clients_refused_total counter\n";
  for (const auto& [listener, n] : refused_) {
    absl::StrAppend(&out, "peregrine_clients_refused_total{listener=\"",
                    EscapeLabel(listener), "\"} ", n, "\n");
  }
  out +=
      "# HELP peregrine_recipients_total Delivery attempts' outcomes per "
      "recipient, by site and failure category.\n"
      "# TYPE peregrine_recipients_total counter\n";
  for (const auto& [key, n] : recipients_) {
    const auto& [outcome, site, category] = key;
    absl::StrAppend(&out, "peregrine_recipients_total{outcome=\"", outcome,
                    "\",site=\"", EscapeLabel(site), "\",category=\"", category,
                    "\"} ", n, "\n");
  }
  out +=
      "# HELP peregrine_events_total Bounce handling and suppression "
      "events.\n# TYPE peregrine_events_total counter\n";
  for (const auto& [type, n] : events_) {
    absl::StrAppend(&out, "peregrine_events_total{type=\"", type, "\"} ", n,
                    "\n");
  }
  out +=
      "# HELP peregrine_tls_total Messages received (in) and recipients "
      "delivered (out) by TLS version; none: in the clear.\n"
      "# TYPE peregrine_tls_total counter\n";
  for (const auto& [key, n] : tls_) {
    absl::StrAppend(&out, "peregrine_tls_total{direction=\"", key.first,
                    "\",version=\"", EscapeLabel(key.second), "\"} ", n, "\n");
  }
  out +=
      "# HELP peregrine_tls_policy_total Recipients delivered by the TLS "
      "policy that applied (mta-sts, mta-sts-testing, smarthost, or the "
      "site's mode) and whether the certificate was verified.\n"
      "# TYPE peregrine_tls_policy_total counter\n";
  for (const auto& [key, n] : tls_policy_) {
    absl::StrAppend(&out, "peregrine_tls_policy_total{policy=\"",
                    EscapeLabel(key.first), "\",verified=\"", key.second,
                    "\"} ", n, "\n");
  }
  out.append(extra.data(), extra.size());
  return out;
}

nlohmann::json Metrics::Status() const {
  absl::MutexLock lock(&mu_);
  std::map<std::string, uint64_t> totals;
  uint64_t received = 0;
  for (const auto& [listener, n] : received_) received += n;
  totals["received"] = received;
  for (const char* k : {"delivered", "deferred", "failed", "expired"}) {
    totals[k] = 0;
  }
  struct Site {
    uint64_t delivered = 0, deferred = 0, failed = 0;
  };
  std::map<std::string, Site> sites;
  std::map<std::string, uint64_t> categories;
  for (const auto& [key, n] : recipients_) {
    const auto& [outcome, site, category] = key;
    totals[outcome] += n;
    Site& s = sites[site];
    if (outcome == "delivered") s.delivered += n;
    if (outcome == "deferred") s.deferred += n;
    if (outcome == "failed" || outcome == "expired") s.failed += n;
    if (!category.empty() && outcome != "delivered") categories[category] += n;
  }
  auto bounce = events_.find("bounce");
  totals["bounce"] = bounce == events_.end() ? 0 : bounce->second;
  const std::map<std::string, std::string>& problems = sites_;
  auto list = [&sites, &problems](auto score) {
    std::vector<std::pair<uint64_t, std::string>> order;
    for (const auto& [name, s] : sites) {
      if (score(s) > 0) order.push_back({score(s), name});
    }
    std::sort(order.begin(), order.end(),
              [](const auto& a, const auto& b) { return a.first > b.first; });
    if (order.size() > 10) order.resize(10);
    nlohmann::json out = nlohmann::json::array();
    for (const auto& [score, name] : order) {
      const Site& s = sites.at(name);
      nlohmann::json j = {{"site", name},
                          {"delivered", s.delivered},
                          {"deferred", s.deferred},
                          {"failed", s.failed}};
      auto known = problems.find(name);
      if (known != problems.end() && !known->second.empty()) {
        j["last_problem"] = known->second;
        j["advice"] = Advice(known->second);
      }
      out.push_back(std::move(j));
    }
    return out;
  };
  return nlohmann::json{
      {"totals", totals},
      {"busiest_sites",
       list([](const Site& s) { return s.delivered + s.deferred + s.failed; })},
      {"troubled_sites",
       list([](const Site& s) { return s.deferred + s.failed; })},
      {"failures_by_category", categories}};
}

}  // namespace peregrine::outcome
