// [redis]: the rows of the schema for many nodes (mta/cluster).
#include "mta/config_schema.h"

namespace peregrine::config_schema {

std::vector<Setting> ClusterSettings() {
  return {
      {"redis", "addresses", "[]",
       "Redis servers that nodes share per-site limits, back-off and the\n"
       "suppression list through (\"10.0.0.5:6379\", \"redis.internal\",\n"
       "\"[fd00::5]:6379\"): the first, then the next when it fails (a\n"
       "replica promoted by Sentinel behind another address). Empty: this\n"
       "node is alone. Sites share with shared = true ([[delivery.sites]]\n"
       "or delivery.shared).",
       [](const toml::node& n, Config& c) {
         auto l = GetStringList(n, "addresses such as \"127.0.0.1:6379\"");
         if (l.ok()) c.redis_addresses = *l;
         return l.status();
       }},
      {"redis", "user", "\"\"",
       "The Redis 6 ACL user to AUTH as; empty: the password alone (the\n"
       "default user).",
       [](const toml::node& n, Config& c) {
         auto s = GetString(n, "a user name");
         if (s.ok()) c.redis_user = *s;
         return s.status();
       }},
      {"redis", "password_file", "\"\"",
       "A file whose first line is the password; empty: no AUTH.",
       [](const toml::node& n, Config& c) {
         auto s = GetString(n, "a file name");
         if (s.ok()) c.redis_password_file = *s;
         return s.status();
       }},
      {"redis", "tls", "false",
       "Speak TLS to Redis (its tls-port), verifying its certificate\n"
       "against tls_ca_file and the address's host name.",
       [](const toml::node& n, Config& c) { return GetBool(n, &c.redis_tls); }},
      {"redis", "tls_ca_file", "\"\"",
       "PEM certificates to trust for Redis; empty: the system's.",
       [](const toml::node& n, Config& c) {
         auto s = GetString(n, "a file name");
         if (s.ok()) c.redis_ca_file = *s;
         return s.status();
       }},
      {"redis", "tls_verify", "true",
       "Check Redis's certificate (false: encrypted, not authenticated).",
       [](const toml::node& n, Config& c) {
         return GetBool(n, &c.redis_tls_verify);
       }},
      {"redis", "key_prefix", "\"peregrine:\"",
       "Of every key Peregrine writes: clusters sharing one Redis need\n"
       "prefixes of their own.",
       [](const toml::node& n, Config& c) {
         auto s = GetString(n, "a prefix");
         if (s.ok()) c.redis_key_prefix = *s;
         return s.status();
       }},
      {"redis", "connect_timeout", "\"1s\"", "Connecting, TLS and AUTH.",
       [](const toml::node& n, Config& c) {
         return GetDuration(n, absl::Milliseconds(10), absl::Seconds(60),
                            &c.redis_connect_timeout);
       }},
      {"redis", "command_timeout", "\"500ms\"",
       "A reply later than this counts as Redis down: the limits fall back\n"
       "to this node's share until it answers again.",
       [](const toml::node& n, Config& c) {
         return GetDuration(n, absl::Milliseconds(10), absl::Seconds(60),
                            &c.redis_command_timeout);
       }},
      {"redis", "node", "\"\"",
       "This node's name in the cluster (unique); empty: HOSTNAME-PID.",
       [](const toml::node& n, Config& c) {
         auto s = GetString(n, "a name");
         if (s.ok()) c.redis_node = *s;
         return s.status();
       }},
      {"redis", "expected_nodes", "1",
       "How many nodes usually run: while Redis is down each keeps to\n"
       "limit / expected_nodes of every shared limit.",
       [](const toml::node& n, Config& c) {
         return GetInt(n, 1, 10000, &c.redis_expected_nodes);
       }},
  };
}

}  // namespace peregrine::config_schema
