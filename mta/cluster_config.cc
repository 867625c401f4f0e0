#include "mta/cluster_config.h"

#include <unistd.h>

#include <cerrno>
#include <fstream>
#include <string>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "base/files.h"

namespace peregrine {

absl::StatusOr<cluster::ClusterOptions> ClusterOptionsFrom(
    const Config& config) {
  cluster::ClusterOptions o;
  auto endpoints = cluster::ResolveRedisAddresses(config.redis_addresses);
  if (!endpoints.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(
        config.Where("redis.addresses"), ": ", endpoints.status().message()));
  }
  o.redis.endpoints = *std::move(endpoints);
  o.redis.user = config.redis_user;
  if (!config.redis_password_file.empty()) {
    std::ifstream in(config.redis_password_file);
    std::string line;
    if (!in.is_open()) {
      return absl::InvalidArgumentError(
          absl::StrCat(config.Where("redis.password_file"), ": ",
                       CannotReadReason(config.redis_password_file, errno)));
    }
    std::getline(in, line);
    o.redis.password = std::string(absl::StripAsciiWhitespace(line));
    if (o.redis.password.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(
          config.Where("redis.password_file"), ": ", config.redis_password_file,
          " is empty: its first line is the password"));
    }
  }
  if (config.redis_tls) {
    auto tls = tls::ClientContext::Create(config.redis_ca_file);
    if (!tls.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(
          config.Where("redis.tls_ca_file"), ": ", tls.status().message()));
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

}  // namespace peregrine
