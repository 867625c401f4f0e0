// The settings of the queue, the event log, DNS and DKIM:
// [queue] [events] [dns] [dkim].
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "base/files.h"
#include "dns/message.h"
#include "mta/config_schema.h"

namespace peregrine::config_schema {
namespace {

// A list of names as TOML, kept for the life of the process (the schema
// holds plain pointers).
const char* TomlList(const std::vector<std::string>& names) {
  static auto* storage = new std::vector<std::unique_ptr<std::string>>;
  std::string out = "[";
  for (size_t i = 0; i < names.size(); ++i) {
    absl::StrAppend(&out, i ? ", " : "", "\"", names[i], "\"");
  }
  out += "]";
  storage->push_back(std::make_unique<std::string>(std::move(out)));
  return storage->back()->c_str();
}

absl::Status SetDkimKeys(const toml::node& node, Config& c) {
  const char* kWhat =
      "a list of keys: [[dkim.keys]] tables with domain, "
      "selector and key_file";
  const toml::array* array = node.as_array();
  if (array == nullptr) return Expected(kWhat, node);
  c.dkim.keys.clear();
  int index = 0;
  for (const toml::node& item : *array) {
    ++index;
    const toml::table* table = item.as_table();
    if (table == nullptr) return Expected(kWhat, item);
    std::string where =
        absl::StrCat("entry ", index, " (line ", item.source().begin.line, ")");
    dkim::KeySpec spec;
    for (auto&& [key, value] : *table) {
      absl::string_view name = Sv(key.str());
      absl::Status status;
      if (name == "domain" || name == "selector" || name == "key_file" ||
          name == "algorithm") {
        auto text = GetString(value, "a string");
        if (!text.ok()) {
          status = text.status();
        } else if (name == "domain") {
          spec.domain = *text;
        } else if (name == "selector") {
          spec.selector = *text;
        } else if (name == "key_file") {
          spec.key_file = *text;
        } else if (*text != "rsa-sha256" && *text != "ed25519-sha256") {
          status = Expected("\"rsa-sha256\" or \"ed25519-sha256\"", value);
        } else {
          spec.algorithm = *text;
        }
      } else if (name == "match") {
        auto list = GetStringList(value,
                                  "From domains like \"example.com\", "
                                  "\"*.example.com\" or \"*\"");
        if (list.ok()) {
          spec.match = *list;
        } else {
          status = list.status();
        }
      } else {
        status = absl::InvalidArgumentError(absl::StrCat(
            "unknown key '", name,
            "' (keys: domain, selector, key_file, match, algorithm)"));
      }
      if (!status.ok()) {
        return absl::InvalidArgumentError(
            absl::StrCat(where, ": ", name, ": ", status.message()));
      }
    }
    for (auto [name, v] : {std::pair{"domain", &spec.domain},
                           std::pair{"selector", &spec.selector},
                           std::pair{"key_file", &spec.key_file}}) {
      if (v->empty()) {
        return absl::InvalidArgumentError(
            absl::StrCat(where, ": '", name,
                         "' is required (peregrine dkim keygen "
                         "prints a complete entry)"));
      }
    }
    auto names = dkim::Signer::Create({spec.domain, spec.selector}, nullptr);
    if (!names.ok() && !absl::StrContains(names.status().message(), "no key")) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ": ", names.status().message()));
    }
    c.dkim.keys.push_back(std::move(spec));
  }
  return absl::OkStatus();
}

}  // namespace

std::vector<Setting> StorageSettings() {
  return {
      {"queue", "durability", "\"fsync\"",
       "\"fsync\": a message is on stable storage before the 250 reply.\n"
       "\"none\": UNSAFE, the queue is written but not synced; a power\n"
       "failure or kernel crash can lose mail that was acknowledged.",
       [](const toml::node& n, Config& c) {
         auto s = GetString(n, "\"fsync\" or \"none\"");
         if (!s.ok()) return s.status();
         if (*s != "fsync" && *s != "none") {
           return Expected("\"fsync\" or \"none\"", n);
         }
         c.queue_fsync = *s == "fsync";
         return absl::OkStatus();
       }},
      {"queue", "min_free_space", "\"512MiB\"",
       "New mail is refused with 452 (try later) while the queue's file\n"
       "system has less free space; deliveries go on and free it.",
       [](const toml::node& n, Config& c) {
         return GetSize(n, 0, uint64_t{1} << 50, &c.queue_min_free_bytes);
       }},
      {"queue", "keep_finished", "\"3d\"",
       "How long `peregrine queue show ID` can still find a message after\n"
       "it finished (delivered, failed or expired): its envelope and each\n"
       "recipient's outcome and last reply are kept, not the body. \"0s\":\n"
       "none kept.",
       [](const toml::node& n, Config& c) {
         return GetDuration(n, absl::ZeroDuration(), absl::Hours(24 * 365),
                            &c.queue_keep_finished);
       }},
      {"queue", "body_blob_files", "true",
       "Bodies are kept in the spool (<data_dir>/queue/spool), written\n"
       "once. This applies only to bodies a version before the spool left\n"
       "in RocksDB: keep them in blob files, not rewritten by compaction.",
       [](const toml::node& n, Config& c) {
         return GetBool(n, &c.queue_body_blob_files);
       }},
      {"queue", "spool_reserve", "\"256MiB\"",
       "Spool space kept written and ready, in 64 MiB segments (rounded\n"
       "up). Commits into it write no file-system metadata: about 10% more\n"
       "messages/s and lower latency while a burst fits in it. Written at\n"
       "start and when the queue is idle; delivered mail's segments refill\n"
       "it. 0: the spool only grows its files (use 0 on copy-on-write file\n"
       "systems such as btrfs or ZFS, where overwriting saves nothing).",
       [](const toml::node& n, Config& c) {
         return GetSize(n, 0, uint64_t{1} << 40, &c.queue_spool_reserve_bytes);
       }},
      {"queue", "block_cache", "\"32MiB\"",
       "RocksDB block cache for the queue's indexes and records.",
       [](const toml::node& n, Config& c) {
         return GetSize(n, 1 << 20, uint64_t{1} << 40,
                        &c.queue_block_cache_bytes);
       }},
      {"queue", "fresh_cache", "\"16MiB\"",
       "Mail just queued is kept in memory up to this size, so that its\n"
       "delivery reads nothing back from the disk; past it (a backlog),\n"
       "mail is read back from the queue. \"0\": off.",
       [](const toml::node& n, Config& c) {
         return GetSize(n, 0, uint64_t{1} << 40, &c.queue_fresh_cache_bytes);
       }},
      {"events", "path", "\"\"",
       "The JSON event log: one object per line for every message received\n"
       "or refused and every delivery attempt's outcome (delivered,\n"
       "deferred, failed, expired), with the remote reply's code, enhanced\n"
       "status and text kept apart. Empty: none. A relative path is under\n"
       "server.data_dir. SIGHUP reopens it (for logrotate).",
       [](const toml::node& n, Config& c) {
         auto s = GetString(n, "a file path");
         if (!s.ok()) return s.status();
         c.events_path = *s;
         return absl::OkStatus();
       }},
      {"events", "stdout", "false",
       "Write the events to standard output instead (containers); the\n"
       "human log stays on standard error.",
       [](const toml::node& n, Config& c) {
         return GetBool(n, &c.events_stdout);
       }},
      {"events", "max_size", "\"100MiB\"",
       "Rotate the file when it would pass this size: FILE becomes\n"
       "FILE.1, FILE.1 FILE.2, and so on. \"0\": never (leave it to\n"
       "logrotate).",
       [](const toml::node& n, Config& c) {
         return GetSize(n, 0, uint64_t{1} << 50, &c.events_max_bytes);
       }},
      {"events", "keep", "10",
       "Rotated files kept; the oldest beyond this is removed.",
       [](const toml::node& n, Config& c) {
         return GetInt(n, 0, 1000, &c.events_keep);
       }},
      {"dns", "servers", "[]",
       "DNS servers as \"ip\" or \"ip:port\" (\"[ipv6]:port\"). Empty: the\n"
       "ones in /etc/resolv.conf. Use a resolver that validates and does\n"
       "not filter: receivers' MX and blocklists depend on it.",
       [](const toml::node& n, Config& c) {
         auto list = GetStringList(n, "addresses like \"127.0.0.1:53\"");
         if (!list.ok()) return list.status();
         c.dns_servers.clear();
         for (const std::string& text : *list) {
           auto address = shard::SocketAddress::Parse(text);
           if (!address.ok()) {
             // A bare address means port 53.
             auto bare = shard::SocketAddress::Parse(
                 text.find(':') != std::string::npos ? "[" + text + "]:53"
                                                     : text + ":53");
             if (!bare.ok()) {
               return absl::InvalidArgumentError(absl::StrCat(
                   "'", text,
                   "' is not an IP address: DNS servers are \"ip\" or "
                   "\"ip:port\", e.g. \"127.0.0.1:53\" (a name would need DNS "
                   "to be found)"));
             }
             address = bare;
           }
           c.dns_servers.push_back(address->ToString());
         }
         return absl::OkStatus();
       }},
      {"dns", "timeout", "\"5s\"", "How long to wait for an answer, per try.",
       [](const toml::node& n, Config& c) {
         return GetDuration(n, absl::Milliseconds(100), absl::Minutes(1),
                            &c.dns_timeout);
       }},
      {"dns", "tries", "2",
       "Tries per server before a look-up fails (transiently).",
       [](const toml::node& n, Config& c) {
         return GetInt(n, 1, 10, &c.dns_tries);
       }},
      {"dns", "dnssec", "true",
       "Ask the resolver for DNSSEC validation (the AD bit) and, when its\n"
       "answers can be believed, use them for DANE (RFC 7672): TLSA records\n"
       "of MX hosts whose MX and address answers are validated make TLS\n"
       "mandatory and authenticate the certificate. Believed only from a\n"
       "resolver on loopback (127.0.0.0/8, ::1: run a validating resolver\n"
       "such as unbound on this machine), or any with dns.trust_ad.",
       [](const toml::node& n, Config& c) {
         return GetBool(n, &c.dns_dnssec);
       }},
      {"dns", "trust_ad", "false",
       "Believe the AD bit of resolvers that are not on loopback: only when\n"
       "the path to them is as trusted as loopback (Postfix's\n"
       "smtp_dns_support_level = dnssec asks the same of you).",
       [](const toml::node& n, Config& c) {
         return GetBool(n, &c.dns_trust_ad);
       }},
      {"dns", "cache_size", "10000",
       "Answers cached per shard (positive and negative, by TTL); the least\n"
       "recently used go first.",
       [](const toml::node& n, Config& c) {
         return GetInt(n, 0, 10000000, &c.dns_cache_entries);
       }},
      {"dkim", "keys", "[]",
       "Signing keys. Each signs the mail whose From domain its `match`\n"
       "covers (default: its own domain; \"*\" signs everything, e.g. a\n"
       "platform signature). Several matching keys give several signatures.\n"
       "A key that cannot be loaded holds (defers) its mail: never unsigned.\n"
       "`peregrine dkim keygen` makes a key and prints its entry:\n"
       "  [[dkim.keys]]\n"
       "  domain = \"example.com\"\n"
       "  selector = \"s2025\"\n"
       "  key_file = \"/etc/peregrine/dkim/example.com/s2025.key\"\n"
       "  match = [\"example.com\", \"*.example.com\"]   # optional\n"
       "  algorithm = \"ed25519-sha256\"   # optional: checked against the "
       "file",
       SetDkimKeys},
      {"dkim", "headers", TomlList(dkim::DefaultSignedHeaders()),
       "Header fields signed, each as often as it occurs.",
       [](const toml::node& n, Config& c) {
         auto list = GetStringList(n, "header names");
         if (!list.ok()) return list.status();
         c.dkim.headers = *list;
         return absl::OkStatus();
       }},
      {"dkim", "oversign", TomlList(dkim::DefaultOversignedHeaders()),
       "Header fields signed once more than they occur, so that a copy\n"
       "added in transit breaks the signature.",
       [](const toml::node& n, Config& c) {
         auto list = GetStringList(n, "header names");
         if (!list.ok()) return list.status();
         c.dkim.oversign = *list;
         return absl::OkStatus();
       }},
      {"dkim", "canonicalization", "\"relaxed/relaxed\"",
       "HEADER/BODY, each \"relaxed\" (survives common rewrapping) or\n"
       "\"simple\".",
       [](const toml::node& n, Config& c) {
         const char* what =
             "\"relaxed/relaxed\", \"relaxed/simple\", "
             "\"simple/relaxed\" or \"simple/simple\"";
         auto s = GetString(n, what);
         if (!s.ok()) return s.status();
         std::vector<std::string> parts = absl::StrSplit(*s, '/');
         auto canon = [](const std::string& p, dkim::Canon* out) {
           if (p == "relaxed")
             *out = dkim::Canon::kRelaxed;
           else if (p == "simple")
             *out = dkim::Canon::kSimple;
           else
             return false;
           return true;
         };
         if (parts.size() != 2 || !canon(parts[0], &c.dkim.header_canon) ||
             !canon(parts[1], &c.dkim.body_canon)) {
           return Expected(what, n);
         }
         return absl::OkStatus();
       }},
      {"dkim", "expiration", "\"0s\"",
       "Signatures expire this long after signing (x= tag); \"0s\": never.",
       [](const toml::node& n, Config& c) {
         return GetDuration(n, absl::ZeroDuration(), absl::Hours(24 * 3650),
                            &c.dkim.expiration);
       }},
  };
}

}  // namespace peregrine::config_schema
