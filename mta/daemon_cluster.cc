// The daemon's part in a cluster ([redis], mta/cluster): the options made
// from the configuration, the hooks that bring what other nodes did to
// this node's delivery shards and suppression list, and the main loop's
// side of the shared suppression list. Split from daemon.cc, which starts
// and stops it.
#include <unistd.h>

#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "base/log.h"
#include "mta/cluster_config.h"
#include "mta/daemon.h"
#include "mta/delivery/routing.h"

namespace peregrine {
namespace {

constexpr const char* kLog = "daemon";

}  // namespace

absl::Status Daemon::PrepareCluster() {
  if (config_.redis_addresses.empty()) return absl::OkStatus();
  auto options = ClusterOptionsFrom(config_);
  if (!options.ok()) return options.status();
  cluster::ClusterHooks hooks;
  hooks.paused = [this](const std::string& site, const delivery::Backoff& b,
                        absl::Time until) {
    if (delivery_ == nullptr) return;
    int owner = delivery::ShardForSite(site, group_->size());
    group_->SubmitTo(owner, [this, owner, site, b, until] {
      if (delivery_->engines[owner] != nullptr) {
        delivery_->engines[owner]->PeerBackedOff(site, b, until);
      }
    });
  };
  hooks.suppressions = [this](std::vector<bounce::SuppressionEntry> entries,
                              bool removed) {
    absl::MutexLock lock(&shared_mu_);
    for (auto& e : entries) shared_in_.push_back({std::move(e), removed});
  };
  hooks.backlog = [this] {
    absl::MutexLock lock(&shared_mu_);
    return shared_in_.size();
  };
  hooks.reshare = [this](absl::Time since) {
    absl::MutexLock lock(&shared_mu_);
    reshare_since_ = std::min(reshare_since_, since);
  };
  cluster_ = std::make_unique<cluster::Cluster>(
      *std::move(options), static_cast<int>(shards_.size()), std::move(hooks));
  log::Info(kLog, "redis: %s; node \"%s\" of %d expected",
            absl::StrJoin(config_.redis_addresses, ", "),
            cluster_->options().node, config_.redis_expected_nodes);
  return absl::OkStatus();
}

void Daemon::ApplySharedSuppressions() {
  if (cluster_ == nullptr || suppression_ == nullptr) return;
  std::vector<std::pair<bounce::SuppressionEntry, bool>> in;
  absl::Time since;
  {
    absl::MutexLock lock(&shared_mu_);
    in.swap(shared_in_);
    since = reshare_since_;
    reshare_since_ = absl::InfiniteFuture();
  }
  for (const auto& [entry, removed] : in) {
    absl::Status s = suppression_->ApplyShared(entry, removed);
    if (!s.ok()) {
      log::Warn(kLog, "suppression list: from another node: %s", s.message());
    }
  }
  if (since == absl::InfiniteFuture()) return;
  // Redis is back after changes made here were dropped from the outbox.
  size_t shared = 0;
  absl::Status s =
      suppression_->ForEach([&](const bounce::SuppressionEntry& e) {
        if (e.added >= since) {
          cluster_->ShareSuppression(e, false);
          ++shared;
        }
        return true;
      });
  log::Info(kLog,
            "suppression list: %d entries added while Redis was down shared "
            "again%s",
            shared, s.ok() ? "" : absl::StrCat(" (", s.message(), ")"));
}

}  // namespace peregrine
