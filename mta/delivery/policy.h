// Delivery policy: what the configuration says about a destination.
//
// Pure data and pure functions, built from [delivery], [[delivery.sites]],
// [[delivery.sources]] and [smarthost] by config.cc and read by the engine:
//   SiteOptions       the limits and TLS policy one site runs under
//   SiteRule          overrides for domains, or for every domain whose MX
//                     hosts end in a suffix (a provider: ".google.com")
//   Source / pools    egress address and EHLO name, picked by weight
//   Smarthost         relay all mail (or chosen domains) through one host
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "dns/resolver.h"
#include "mta/bounce/verp.h"
#include "mta/delivery/shaping.h"

namespace peregrine::delivery {

// TLS towards a destination: none; opportunistic (STARTTLS when offered,
// any certificate); required (STARTTLS or fail, any certificate); verify
// (required, and the chain must be trusted and name the MX host).
enum class TlsMode { kNone, kOpportunistic, kRequired, kVerify };
bool ParseTlsMode(absl::string_view text, TlsMode* mode);
absl::string_view TlsModeName(TlsMode mode);

// The receiving domain's published policies: kAuto honours DANE (RFC 7672,
// when the resolver's DNSSEC answers are trusted) and MTA-STS (RFC 8461),
// DANE first; kMtaSts honours MTA-STS only; kDane requires DANE (an MX
// host without validated, usable TLSA records is not used); kOff ignores
// both (a receiver whose policy is broken), and the site's `tls` mode
// alone decides.
enum class TlsPolicyUse { kAuto, kMtaSts, kDane, kOff };
bool ParseTlsPolicyUse(absl::string_view text, TlsPolicyUse* use);
absl::string_view TlsPolicyUseName(TlsPolicyUse use);

struct SiteOptions {
  int max_connections = 20;
  int initial_connections = 5;  // Slow start (Postfix: 5).
  int messages_per_connection = 100;
  int recipients_per_transaction = 100;
  std::string message_rate = "unlimited";     // "20/s", "600/m", "10000/h".
  std::string connection_rate = "unlimited";  // New connections.
  TlsMode tls = TlsMode::kOpportunistic;
  TlsPolicyUse tls_policy = TlsPolicyUse::kAuto;
  bool suspended = false;  // Held in the queue until resumed.
  std::string pool;        // Egress pool; empty: the default sources.
  // The rates and max_connections hold across every node of the cluster
  // ([redis]; shared_limits.h), and a back-off seen by one pauses all.
  bool shared = false;
};

// Overrides; unset fields keep what came before. Later rules win.
struct SiteRule {
  std::vector<std::string> domains;      // Exact, or "*.example.com".
  std::vector<std::string> mx_suffixes;  // ".google.com" matches its MXes.
  std::optional<int> max_connections;
  std::optional<int> messages_per_connection;
  std::optional<int> recipients_per_transaction;
  std::optional<std::string> message_rate;
  std::optional<std::string> connection_rate;
  std::optional<TlsMode> tls;
  std::optional<TlsPolicyUse> tls_policy;
  std::optional<bool> suspended;
  std::optional<std::string> pool;
  std::optional<bool> shared;
  int line = 0;  // In the configuration file, for messages.
  bool Matches(absl::string_view domain,
               const std::vector<dns::MxHost>& mx) const;
};

struct Source {
  std::string name;
  std::string address;  // Local IP to send from; empty: the kernel picks.
  std::string ehlo;     // Empty: the delivery EHLO name.
  std::string pool = "default";
  int weight = 1;
};

enum class SmarthostTls { kNone, kStartTls, kImplicit };

struct Smarthost {
  std::string host;  // Empty: no smarthost, deliver by MX.
  int port = 587;
  SmarthostTls tls = SmarthostTls::kStartTls;
  bool verify = true;  // Check the relay's certificate.
  std::string user;
  std::string password;
  std::vector<std::string> domains;  // Empty: all mail.
  bool Covers(absl::string_view domain) const;
};

struct DeliveryOptions {
  bool enabled = true;
  int port = 25;        // Where MX hosts listen.
  std::string helo;     // Empty: the server's host name.
  std::string ca_file;  // Empty: the system trust store.
  // MTA-STS (RFC 8461): look up and honour receivers' policies.
  bool mta_sts = true;
  // DANE (RFC 7672): the resolver's DNSSEC answers are trusted (dns.dnssec,
  // and the resolver on loopback or dns.trust_ad); set by the daemon.
  bool dane = false;
  absl::Duration mta_sts_fetch_timeout = absl::Seconds(30);
  // A domain announces a policy that cannot be fetched: its mail waits
  // (deferred, never sent without the policy) this long from the first
  // failed fetch, then goes as though it had none (RFC 8461 3.3).
  absl::Duration mta_sts_fetch_grace = absl::Hours(1);
  absl::Duration connect_timeout = absl::Seconds(30);
  // RFC 5321 §4.5.3.2 timeouts.
  absl::Duration greeting_timeout = absl::Minutes(5);
  absl::Duration command_timeout = absl::Minutes(5);
  absl::Duration data_timeout = absl::Minutes(10);
  absl::Duration idle_timeout = absl::Seconds(5);  // Reuse window.
  RetryOptions retry;
  SiteOptions defaults;
  std::vector<SiteRule> rules;
  // Campaigns and tenants held through the admin API (suspensions.h): their
  // mail is parked in the queue, unattempted, before it is routed.
  std::vector<std::string> held_campaigns;
  std::vector<std::string> held_tenants;
  std::vector<uint64_t> held_messages;  // Queue ids.
  std::vector<BackoffRule> backoff;
  BackoffRule on_421 = {"", absl::Minutes(5), 0.5};  // No pattern matched.
  std::vector<Source> sources;
  Smarthost smarthost;
  // Recipients a shard holds in memory waiting for a connection.
  int max_pending_per_shard = 20000;
  // Return paths per recipient (mta/bounce/verp.h); null: the sender's.
  std::shared_ptr<const bounce::VerpOptions> verp;
};

// The options of a site: the defaults, then every matching rule in order.
SiteOptions ResolveSite(const DeliveryOptions& options,
                        absl::string_view domain,
                        const std::vector<dns::MxHost>& mx);

// Only the tls_policy ResolveSite would give: what routing asks of every
// job, without copying the rest of the options.
TlsPolicyUse ResolveTlsPolicy(const DeliveryOptions& options,
                              absl::string_view domain,
                              const std::vector<dns::MxHost>& mx);

// Checks what the engine needs and cannot default: rates parse, pools
// named by sites exist, source addresses are IPs, backoff patterns compile.
absl::Status Validate(const DeliveryOptions& options);

// One source of `pool` by weight (nullptr: no sources configured there).
const Source* PickSource(const DeliveryOptions& options, absl::string_view pool,
                         std::mt19937_64& rng);

}  // namespace peregrine::delivery
