// The daemon's part in a cluster ([redis], mta/cluster): the options made
// from the configuration, the hooks that bring what other nodes did to
// this node's delivery shards and suppression list, and the main loop's
// side of the shared suppression list. Split from daemon.cc, which starts
// and stops it.
#include <unistd.h>

#include <cerrno>
#include <fstream>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "base/files.h"
#include "base/log.h"
#include "mta/daemon.h"
#include "mta/delivery/routing.h"

namespace peregrine {
namespace {

constexpr const char* kLog = "daemon";

}  // namespace

absl::StatusOr<cluster::ClusterOptions> ClusterOptionsFrom(
    const Config& config) {
  cluster::ClusterOptions o;
  auto endpoints = cluster::ResolveRedisAddresses(config.redis_addresses);
  if (!endpoints.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(config.Where("redis.addresses"), ": ",
                     endpoints.status().message()));
  }
  o.redis.endpoints = *std::move(endpoints);
  o.redis.user = config.redis_user;
  if (!config.redis_password_file.empty()) {
    std::ifstream in(config.redis_password_file);
    std::string line;
    if (!in.is_open()) {
      return absl::InvalidArgumentError(absl::StrCat(
          config.Where("redis.password_file"), ": ",
          CannotReadReason(config.redis_password_file, errno)));
    }
    std::getline(in, line);
    o.redis.password = std::string(absl::StripAsciiWhitespace(line));
    if (o.redis.password.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(
          config.Where("redis.password_file"), ": ",
          config.redis_password_file,
          " is empty: its first line is the password"));
    }
  }
  if (config.redis_tls) {
    auto tls = tls::ClientContext::Create(config.redis_ca_file);
    if (!tls.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat(config.Where("redis.tls_ca_file"), ": ",
                       tls.status().message()));
    }
    o.redis.tls = *tls;
    o.redis.tls_verify = config.redis_tls_verify;
  }
  o.redis.connect_timeout = config.redis_connect_timeout;
  o.redis.command_timeout = config.redis_command_timeout;
  o.prefix = config.redis_key_prefix;
  o.node = config.redis_node.empty()
               ? absl::StrCat(config.EffectiveHostname(), "-", getpid())
               : config.redis_node;
  o.expected_nodes = config.redis_expected_nodes;
  return o;
}

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
