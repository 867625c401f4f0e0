#include "mta/doctor/cluster_checks.h"

#include <string>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "mta/cluster/redis_blocking.h"
#include "mta/cluster_config.h"

namespace peregrine::doctor {

std::vector<Finding> ClusterChecks(const Config& config) {
  std::vector<Finding> out;
  if (config.redis_addresses.empty()) return out;
  auto options = ClusterOptionsFrom(config);
  if (!options.ok()) {
    out.push_back({"redis", Status::kFailed,
                   std::string(options.status().message()),
                   "fix [redis] in the configuration"});
    return out;
  }
  for (const cluster::RedisEndpoint& e : options->redis.endpoints) {
    std::string check = absl::StrCat("redis ", e.address.ToString());
    if (e.host != e.address.HostString())
      absl::StrAppend(&check, " (", e.host, ")");
    const std::string key = absl::StrCat(options->prefix, "doctor");
    absl::Time start = absl::Now();
    auto replies =
        cluster::BlockingRedis(e, options->redis,
                               {{"PING"},
                                {"INFO", "server"},
                                {"EVAL", "return redis.call('TIME')", "0"},
                                {"SET", key, "1", "PX", "1000"}});
    absl::Duration took = absl::Now() - start;
    if (!replies.ok()) {
      out.push_back(
          {check, Status::kFailed, std::string(replies.status().message()),
           absl::StrCat("is redis-server running there, and reachable? "
                        "redis-cli -h ",
                        e.address.HostString(), " -p ", e.address.port(),
                        options->redis.tls ? " --tls" : "", " ping")});
      continue;
    }
    const auto& r = *replies;
    std::string version = "?";
    if (r[1].ok()) {
      for (absl::string_view line : absl::StrSplit(r[1]->str, "\r\n")) {
        if (absl::ConsumePrefix(&line, "redis_version:")) {
          version = std::string(line);
        }
      }
    }
    if (!r[0].ok() || r[0]->str != "PONG") {
      out.push_back(
          {check, Status::kFailed,
           absl::StrCat("PING: ",
                        r[0].ok() ? r[0]->str : r[0].status().message()),
           "check redis.user and redis.password_file"});
      continue;
    }
    if (!r[2].ok()) {
      out.push_back({check, Status::kFailed,
                     absl::StrCat("Redis ", version, " does not run scripts: ",
                                  r[2].status().message()),
                     "the shared limits run Lua scripts (EVAL, EVALSHA): "
                     "allow +@scripting for this user"});
      continue;
    }
    if (!r[3].ok()) {
      out.push_back(
          {check, Status::kFailed,
           absl::StrCat("cannot write ", key, ": ", r[3].status().message()),
           absl::StrCat("allow this user the keys ~", options->prefix, "*")});
      continue;
    }
    int major = 0;
    absl::SimpleAtoi(version.substr(0, version.find('.')), &major);
    if (major > 0 && major < 6 && !options->redis.user.empty()) {
      out.push_back(
          {check, Status::kFailed,
           absl::StrCat("Redis ", version, " has no ACL users (redis.user)"),
           "use Redis 6 or later, or leave redis.user empty"});
      continue;
    }
    out.push_back(
        {check, Status::kOk,
         absl::StrCat(
             "Redis ", version, " answers in ",
             absl::FormatDuration(absl::Trunc(took, absl::Microseconds(100))),
             options->redis.tls ? " over TLS" : "",
             ", runs scripts, takes writes under ", options->prefix),
         ""});
  }
  if (config.redis_expected_nodes <= 1) {
    out.push_back(
        {"redis expected_nodes", Status::kWarning,
         "expected_nodes = 1: while Redis is down this node alone sends at "
         "each shared site's whole limit, and so does every other node",
         "set redis.expected_nodes to the number of nodes that run"});
  }
  return out;
}

}  // namespace peregrine::doctor
