#include "mta/outcome/metrics.h"

#include "absl/strings/str_cat.h"
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

void Metrics::OnOutcome(const Outcome& o) {
  absl::MutexLock lock(&mu_);
  switch (o.kind) {
    case Kind::kReceived:
      ++received_[o.listener];
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
      if (!sites_.contains(site)) {
        if (sites_.size() >= kMaxSites) {
          site = "other";
        } else {
          sites_[site] = true;
        }
      }
      std::string category =
          o.category ? std::string(bounce::CategoryName(*o.category)) : "";
      ++recipients_[{std::string(KindName(o.kind)), site, category}];
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
  out.append(extra.data(), extra.size());
  return out;
}

}  // namespace peregrine::outcome
