// Config: Peregrine's settings, read from one TOML file (toml++).
//
// Every setting has a default, so no file at all gives a working instance on
// unprivileged loopback ports. The schema (config.cc) is one table: each
// entry names its key, type, default, documentation and how to apply it, and
// that one table drives parsing, validation, `peregrine config defaults` and
// what SIGHUP may change. Bad input never aborts: each problem becomes one
// line "FILE:LINE:COL: section.key: what is wrong; what was expected".
//
// Built on the main thread at start and on SIGHUP; shards get copies.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "base/log.h"
#include "dkim/signing_table.h"
#include "mta/delivery/policy.h"
#include "mta/listener.h"
#include "mta/shard/address.h"
#include "mta/shard/io_backend.h"

namespace peregrine {

struct ListenerConfig {
  ListenerKind kind;
  std::string key;  // "listen.relay", for messages.
  std::vector<shard::SocketAddress> addresses;
};

struct Config {
  // [server]
  std::string hostname;  // Empty: the machine's host name.
  std::string data_dir;
  // Run as (after binding, when started as root); empty: no change.
  std::string user;
  std::string group;
  int shards = 0;  // 0: one per core.
  shard::BackendKind io_backend = shard::BackendKind::kAuto;
  log::Level log_level = log::Level::kInfo;
  absl::Duration drain_timeout;
  std::optional<absl::Duration> idle_spin;  // Unset: "auto".

  // [listen]
  std::vector<ListenerConfig> listeners;

  // [admin]
  std::string admin_tokens_file;  // Relative: under data_dir.
  uint64_t admin_inject_memory = 256 << 20;
  bool admin_tls = false;  // HTTPS with the [tls] certificate.
  // [[admin.webhooks]]: events POSTed to these (mta/outcome/webhook.h).
  struct Webhook {
    std::string name;  // Default: the URL's position.
    std::string url;
    std::vector<std::string> events;  // Event types; empty: all.
    std::string secret_file;          // Relative: under data_dir.
    int batch = 100;
    int max_held = 100000;
    absl::Duration timeout = absl::Seconds(10);
    int line = 0;
  };
  std::vector<Webhook> admin_webhooks;

  // [relay]
  std::vector<shard::Cidr> trusted_networks;
  // Trusting networks TooBroad() is refused unless this says so.
  bool allow_open_relay = false;

  // [auth]
  std::string users_file;  // Empty: data_dir/users.
  bool auth_without_tls = false;
  std::string UsersFilePath() const {
    return users_file.empty() ? data_dir + "/users" : users_file;
  }

  // [tls]
  std::string tls_cert_file;  // Empty: a self-signed one in data_dir/tls.
  std::string tls_key_file;

  // [smtp]
  uint64_t smtp_max_message_bytes = 0;
  int smtp_max_recipients = 1000;
  absl::Duration smtp_command_timeout;
  int smtp_max_connections = 1000;
  bool smtp_received_shows_auth_user = false;
  // Add a missing Message-ID and Date (RFC 6409 §8.3).
  bool smtp_submission_adds_missing_fields = true;
  bool smtp_relay_adds_missing_fields = false;
  int smtp_max_connections_per_client = 50;

  // [queue]
  bool queue_fsync = true;  // durability = "fsync"; false: "none".
  uint64_t queue_min_free_bytes = 0;
  bool queue_body_blob_files = true;
  uint64_t queue_block_cache_bytes = 0;
  uint64_t queue_fresh_cache_bytes = 16 << 20;
  uint64_t queue_spool_reserve_bytes = 0;
  absl::Duration queue_keep_finished = absl::Hours(72);

  // [events]
  std::string events_path;  // Empty: no event log (unless events_stdout).
  bool events_stdout = false;
  uint64_t events_max_bytes = 100ull << 20;
  int events_keep = 10;
  // events_path, under data_dir when relative; "" when there is none.
  std::string EventsFilePath() const;

  // [dkim]
  dkim::Policy dkim;

  // [dns]
  std::vector<std::string> dns_servers;  // "ip:port"; empty: resolv.conf.
  absl::Duration dns_timeout;
  int dns_tries = 2;
  int dns_cache_entries = 10000;
  // DNSSEC: ask for the AD bit; believe it from a resolver on loopback, or
  // any with dns_trust_ad (DANE needs it).
  bool dns_dnssec = true;
  bool dns_trust_ad = false;
  // [tls_report]: TLS reporting (RFC 8460), mta/tls_reporter.h.
  bool tls_report = false;
  absl::Duration tls_report_interval = absl::Hours(24);
  std::string tls_report_organization;  // Empty: the host name.
  std::string tls_report_contact;       // Empty: mailto:postmaster@host.
  std::string tls_report_from;          // Empty: tlsrpt-noreply@host.

  // [redis]: many nodes sharing limits, back-off and suppressions
  // (mta/cluster). No addresses: this node is alone.
  std::vector<std::string> redis_addresses;
  std::string redis_user;           // Empty: AUTH with the password alone.
  std::string redis_password_file;  // Empty: no AUTH.
  bool redis_tls = false;
  std::string redis_ca_file;  // Empty: the system trust store.
  bool redis_tls_verify = true;
  std::string redis_key_prefix = "peregrine:";
  absl::Duration redis_connect_timeout = absl::Seconds(1);
  absl::Duration redis_command_timeout = absl::Milliseconds(500);
  std::string redis_node;  // Empty: HOSTNAME-PID.
  int redis_expected_nodes = 1;

  // [bounce]
  std::string bounce_rules_file;  // Empty: the built-in rules only.
  bool bounce_dsn = true;
  std::vector<std::string> bounce_no_dsn_listeners;
  std::vector<std::string> bounce_no_dsn_sender_domains;
  absl::Duration bounce_delay_dsn_after = absl::Hours(4);
  std::vector<std::string> bounce_delay_dsn_listeners = {"submission",
                                                         "submissions"};
  uint64_t bounce_dsn_full_limit = 50000;
  // VERP and the bounce domains Peregrine receives bounces for.
  std::string bounce_verp_domain;  // Empty: VERP off.
  std::string bounce_verp_prefix = "bounces";
  std::string bounce_verp_secret_file;      // Empty: data_dir/verp.secret.
  std::vector<std::string> bounce_domains;  // Besides verp_domain.
  std::string VerpSecretPath() const {
    return bounce_verp_secret_file.empty() ? data_dir + "/verp.secret"
                                           : bounce_verp_secret_file;
  }
  // [suppression]
  bool suppression_enabled = true;
  std::vector<std::string> suppression_categories = {
      "invalid_recipient", "bad_domain", "inactive_mailbox"};
  std::string suppression_scope;  // "", "tenant" or "campaign".
  absl::Duration suppression_expiry = absl::ZeroDuration();  // 0: never.

  // [local]: own domains, forwarded by aliases (mta/local/).
  std::vector<std::string> local_domains;
  std::string local_aliases_dir;  // Empty: data_dir/aliases.
  bool local_srs = true;
  std::string local_srs_domain;       // Empty: the first local domain.
  std::string local_srs_secret_file;  // Empty: data_dir/srs.secret.
  std::string AliasesDir() const {
    return local_aliases_dir.empty() ? data_dir + "/aliases"
                                     : local_aliases_dir;
  }
  std::string SrsDomain() const {
    return !local_srs_domain.empty() ? local_srs_domain
           : local_domains.empty()   ? ""
                                     : local_domains.front();
  }
  std::string SrsSecretPath() const {
    return local_srs_secret_file.empty() ? data_dir + "/srs.secret"
                                         : local_srs_secret_file;
  }

  // [delivery], [smarthost]
  delivery::DeliveryOptions delivery;
  absl::Duration delivery_backoff_pause = absl::Minutes(5);
  double delivery_backoff_factor = 0.5;

  // Where the settings came from: a path, or "built-in defaults".
  std::string source;
  // "section.key" -> line in `source` (only keys the file sets).
  std::map<std::string, int> lines;
  // "section.key" -> the value as TOML text, for every setting: what SIGHUP
  // compares to tell what changed.
  std::map<std::string, std::string> values;

  // "FILE:LINE: section.key" when the file sets it, else
  // "section.key (built-in default)": where to look to change a setting.
  std::string Where(absl::string_view key) const;
  // The number of shards to run: `shards`, or the number of usable cores.
  int EffectiveShards() const;
  // `hostname`, or the machine's name.
  std::string EffectiveHostname() const;
};

// Parses TOML text. `source` names it in error messages.
absl::StatusOr<Config> ParseConfig(absl::string_view text,
                                   absl::string_view source);
// Reads and parses a file; a missing or unreadable file is an error.
absl::StatusOr<Config> LoadConfigFile(const std::string& path);
// The built-in defaults.
Config DefaultConfig();
// The full default configuration as TOML, every key commented.
std::string DefaultConfigToml();

// What is legal but probably a mistake (a trusted network on the public
// internet, a host name that is not fully qualified), each a sentence naming
// the setting and what to do. `config check` prints them and `serve` logs
// them at start.
std::vector<std::string> ConfigWarnings(const Config& config);

// Settings SIGHUP applies without a restart.
bool IsReloadable(absl::string_view key);

}  // namespace peregrine
