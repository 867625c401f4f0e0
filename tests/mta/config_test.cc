#include "mta/config.h"

#include "absl/strings/str_join.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace peregrine {
namespace {

using ::testing::HasSubstr;

std::vector<std::string> Addresses(const Config& c, ListenerKind kind) {
  std::vector<std::string> out;
  for (const auto& l : c.listeners) {
    if (l.kind != kind) continue;
    for (const auto& a : l.addresses) out.push_back(a.ToString());
  }
  return out;
}

TEST(ConfigTest, DefaultsAreTheDocumentedOnes) {
  Config c = DefaultConfig();
  EXPECT_EQ(c.data_dir, "./peregrine-data");
  EXPECT_EQ(c.shards, 0);
  EXPECT_GE(c.EffectiveShards(), 1);
  EXPECT_EQ(c.io_backend, shard::BackendKind::kAuto);
  EXPECT_EQ(c.log_level, log::Level::kInfo);
  EXPECT_EQ(c.drain_timeout, absl::Seconds(30));
  EXPECT_THAT(Addresses(c, ListenerKind::kRelay),
              ::testing::ElementsAre("127.0.0.1:2525"));
  EXPECT_THAT(Addresses(c, ListenerKind::kSubmission),
              ::testing::ElementsAre("127.0.0.1:2587"));
  EXPECT_THAT(Addresses(c, ListenerKind::kSubmissions),
              ::testing::ElementsAre("127.0.0.1:2465"));
  EXPECT_THAT(Addresses(c, ListenerKind::kAdmin),
              ::testing::ElementsAre("127.0.0.1:8025"));
  auto trusted = [&c](const char* address) {
    auto a = shard::SocketAddress::Parse(address);
    for (const auto& cidr : c.trusted_networks) {
      if (cidr.Contains(*a)) return true;
    }
    return false;
  };
  EXPECT_TRUE(trusted("127.0.0.1:1"));
  EXPECT_TRUE(trusted("127.8.9.10:1"));
  EXPECT_TRUE(trusted("[::1]:1"));
  EXPECT_FALSE(trusted("10.0.0.1:1"));
  EXPECT_FALSE(trusted("[::2]:1"));
  EXPECT_FALSE(c.EffectiveHostname().empty());
  EXPECT_TRUE(c.queue_fsync);
  EXPECT_EQ(c.queue_min_free_bytes, 512u << 20);
  EXPECT_TRUE(c.queue_body_blob_files);
  EXPECT_EQ(c.queue_block_cache_bytes, 32u << 20);
  EXPECT_EQ(c.queue_spool_reserve_bytes, 256u << 20);
  EXPECT_FALSE(c.idle_spin.has_value());  // "auto"
}

TEST(ConfigTest, IdleSpin) {
  auto parsed = ParseConfig("[server]\nidle_spin = \"auto\"\n", "s.toml");
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_FALSE(parsed->idle_spin.has_value());
  parsed = ParseConfig("[server]\nidle_spin = \"0s\"\n", "s.toml");
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->idle_spin, absl::ZeroDuration());
  parsed = ParseConfig("[server]\nidle_spin = \"20us\"\n", "s.toml");
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->idle_spin, absl::Microseconds(20));
}

TEST(ConfigTest, DkimSettings) {
  auto parsed = ParseConfig(R"(
[dkim]
canonicalization = "simple/relaxed"
expiration = "7d"
oversign = ["From"]

[[dkim.keys]]
domain = "example.com"
selector = "s1"
key_file = "/etc/peregrine/dkim/s1.key"

[[dkim.keys]]
domain = "platform.test"
selector = "p"
key_file = "p.key"
match = ["*"]
algorithm = "ed25519-sha256"
)",
                            "d.toml");
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  const dkim::Policy& p = parsed->dkim;
  EXPECT_EQ(p.header_canon, dkim::Canon::kSimple);
  EXPECT_EQ(p.body_canon, dkim::Canon::kRelaxed);
  EXPECT_EQ(p.expiration, absl::Hours(24 * 7));
  EXPECT_THAT(p.oversign, ::testing::ElementsAre("From"));
  ASSERT_EQ(p.keys.size(), 2u);
  EXPECT_EQ(p.keys[0].selector, "s1");
  EXPECT_TRUE(p.keys[0].match.empty());
  EXPECT_THAT(p.keys[1].match, ::testing::ElementsAre("*"));
  EXPECT_EQ(p.keys[1].algorithm, "ed25519-sha256");
  EXPECT_TRUE(IsReloadable("dkim.keys"));
  EXPECT_EQ(DefaultConfig().dkim.keys.size(), 0u);
  EXPECT_EQ(DefaultConfig().dkim.headers, dkim::DefaultSignedHeaders());
}

TEST(ConfigTest, DnsSettings) {
  EXPECT_TRUE(DefaultConfig().dns_servers.empty());
  EXPECT_EQ(DefaultConfig().dns_timeout, absl::Seconds(5));
  auto parsed = ParseConfig(
      "[dns]\nservers = [\"127.0.0.1:5353\", \"9.9.9.9\", \"::1\", "
      "\"[2001:db8::1]:53\"]\ntimeout = \"2s\"\ntries = 3\n"
      "cache_size = 500\n",
      "dns.toml");
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_THAT(parsed->dns_servers,
              ::testing::ElementsAre("127.0.0.1:5353", "9.9.9.9:53", "[::1]:53",
                                     "[2001:db8::1]:53"));
  EXPECT_EQ(parsed->dns_timeout, absl::Seconds(2));
  EXPECT_EQ(parsed->dns_tries, 3);
  EXPECT_EQ(parsed->dns_cache_entries, 500);
}

TEST(ConfigTest, RedisSettingsAndSharedSites) {
  Config d = DefaultConfig();
  EXPECT_TRUE(d.redis_addresses.empty());  // Alone by default.
  EXPECT_EQ(d.redis_key_prefix, "peregrine:");
  EXPECT_EQ(d.redis_expected_nodes, 1);
  EXPECT_FALSE(d.delivery.defaults.shared);
  auto parsed = ParseConfig(R"(
[redis]
addresses = ["10.0.0.5:6379", "redis.internal"]
user = "peregrine"
password_file = "/etc/peregrine/redis.pass"
tls = true
key_prefix = "eu:"
command_timeout = "250ms"
node = "mx1"
expected_nodes = 3
[delivery]
shared = true
[[delivery.sites]]
mx_suffixes = [".google.com"]
shared = false
)",
                            "r.toml");
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->redis_addresses.size(), 2u);
  EXPECT_EQ(parsed->redis_user, "peregrine");
  EXPECT_TRUE(parsed->redis_tls);
  EXPECT_EQ(parsed->redis_key_prefix, "eu:");
  EXPECT_EQ(parsed->redis_command_timeout, absl::Milliseconds(250));
  EXPECT_EQ(parsed->redis_node, "mx1");
  EXPECT_EQ(parsed->redis_expected_nodes, 3);
  EXPECT_TRUE(parsed->delivery.defaults.shared);
  ASSERT_EQ(parsed->delivery.rules.size(), 1u);
  EXPECT_EQ(parsed->delivery.rules[0].shared, std::optional<bool>(false));
  for (const char* bad :
       {"[redis]\nexpected_nodes = 0\n", "[redis]\naddresses = \"x:1\"\n",
        "[redis]\ncommand_timeout = \"soon\"\n",
        "[[delivery.sites]]\ndomains = [\"a.test\"]\nshared = \"yes\"\n"}) {
    auto r = ParseConfig(bad, "bad.toml");
    EXPECT_FALSE(r.ok()) << bad;
    EXPECT_THAT(std::string(r.status().message()), HasSubstr("bad.toml:"))
        << r.status();
  }
}

TEST(ConfigTest, QueueSettings) {
  auto parsed = ParseConfig(
      "[queue]\ndurability = \"none\"\nmin_free_space = \"2GB\"\n"
      "body_blob_files = false\nblock_cache = \"1.5GiB\"\n"
      "spool_reserve = \"0\"\n",
      "q.toml");
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_FALSE(parsed->queue_fsync);
  EXPECT_EQ(parsed->queue_min_free_bytes, 2000000000u);
  EXPECT_FALSE(parsed->queue_body_blob_files);
  EXPECT_EQ(parsed->queue_block_cache_bytes, 1610612736u);
  EXPECT_EQ(parsed->queue_spool_reserve_bytes, 0u);
}

TEST(ConfigTest, EventsSettings) {
  Config none = DefaultConfig();
  EXPECT_EQ(none.EventsFilePath(), "");
  EXPECT_FALSE(none.events_stdout);
  auto parsed = ParseConfig(
      "[server]\ndata_dir = \"/var/lib/peregrine\"\n"
      "[events]\npath = \"events.json\"\nmax_size = \"1GiB\"\nkeep = 3\n",
      "e.toml");
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->EventsFilePath(), "/var/lib/peregrine/events.json");
  EXPECT_EQ(parsed->events_max_bytes, 1073741824u);
  EXPECT_EQ(parsed->events_keep, 3);
  parsed = ParseConfig(
      "[events]\npath = \"/var/log/peregrine/events.json\"\n"
      "max_size = \"0\"\nstdout = true\n",
      "e.toml");
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->EventsFilePath(), "/var/log/peregrine/events.json");
  EXPECT_EQ(parsed->events_max_bytes, 0u);
  EXPECT_TRUE(parsed->events_stdout);
  auto bad = ParseConfig("[events]\nkeep = -1\n", "e.toml");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("events.keep"), std::string::npos);
}

TEST(ConfigTest, DeliveryDefaults) {
  const delivery::DeliveryOptions& d = DefaultConfig().delivery;
  EXPECT_TRUE(d.enabled);
  EXPECT_EQ(d.port, 25);
  EXPECT_EQ(d.defaults.tls, delivery::TlsMode::kOpportunistic);
  EXPECT_EQ(d.defaults.max_connections, 20);
  EXPECT_EQ(d.retry.first, absl::Minutes(5));
  EXPECT_EQ(d.retry.max_delay, absl::Hours(4));
  EXPECT_EQ(d.retry.max_age, absl::Hours(24 * 5));
  EXPECT_EQ(d.backoff.size(), 3u);
  EXPECT_TRUE(d.smarthost.host.empty());
  EXPECT_TRUE(d.rules.empty());
}

TEST(ConfigTest, DeliverySitesSourcesAndSmarthost) {
  auto parsed = ParseConfig(
      "[delivery]\nport = 2526\ntls = \"required\"\nmessage_rate = \"100/m\"\n"
      "backoff_pause = \"30s\"\nbackoff_rate_factor = 0.25\n"
      "[[delivery.sites]]\nmx_suffixes = [\".google.com\"]\n"
      "max_connections = 7\nmessage_rate = \"20/s\"\npool = \"warm\"\n"
      "[[delivery.sites]]\ndomains = [\"example.com\"]\ntls = \"verify\"\n"
      "suspended = true\n"
      "[[delivery.sources]]\nname = \"a\"\naddress = \"192.0.2.10\"\n"
      "ehlo = \"mta1.example.net\"\npool = \"warm\"\nweight = 3\n"
      "[smarthost]\nhost = \"smtp.example.net\"\nport = 465\n"
      "tls = \"implicit\"\nuser = \"u\"\npassword = \"p\"\n"
      "domains = [\"*.corp.test\"]\n",
      "d.toml");
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  const delivery::DeliveryOptions& d = parsed->delivery;
  EXPECT_EQ(d.port, 2526);
  EXPECT_EQ(d.defaults.tls, delivery::TlsMode::kRequired);
  EXPECT_EQ(d.defaults.message_rate, "100/m");
  ASSERT_EQ(d.rules.size(), 2u);
  EXPECT_EQ(d.rules[0].max_connections, 7);
  EXPECT_EQ(d.rules[0].pool, "warm");
  EXPECT_EQ(d.rules[0].line, 7);
  EXPECT_EQ(d.rules[1].tls, delivery::TlsMode::kVerify);
  EXPECT_EQ(d.rules[1].suspended, true);
  ASSERT_EQ(d.sources.size(), 1u);
  EXPECT_EQ(d.sources[0].address, "192.0.2.10");
  EXPECT_EQ(d.sources[0].weight, 3);
  EXPECT_EQ(d.smarthost.tls, delivery::SmarthostTls::kImplicit);
  EXPECT_TRUE(d.smarthost.Covers("a.corp.test"));
  EXPECT_FALSE(d.smarthost.Covers("corp.test.evil"));
  for (const auto& rule : d.backoff) {
    EXPECT_EQ(rule.pause, absl::Seconds(30));
    EXPECT_EQ(rule.rate_factor, 0.25);
  }
  EXPECT_EQ(d.on_421.pause, absl::Seconds(30));
}

TEST(ConfigTest, DeliveryMistakesAreNamed) {
  auto error = [](const std::string& text) {
    auto parsed = ParseConfig(text, "bad.toml");
    return parsed.ok() ? std::string("parsed")
                       : std::string(parsed.status().message());
  };
  EXPECT_THAT(error("[delivery]\ntls = \"always\"\n"),
              HasSubstr("\"none\", \"opportunistic\", \"required\" or "
                        "\"verify\""));
  EXPECT_THAT(error("[delivery]\nmessage_rate = \"fast\"\n"),
              HasSubstr("\"20/s\""));
  EXPECT_THAT(error("[[delivery.sites]]\nmax_connections = 3\n"),
              HasSubstr("matches nothing"));
  EXPECT_THAT(error("[[delivery.sites]]\ndomains = [\"a.test\"]\n"
                    "max_conections = 3\n"),
              HasSubstr("entry 1 (line 1): max_conections: unknown key"));
  EXPECT_THAT(error("[[delivery.sites]]\ndomains = [\"a.test\"]\n"
                    "pool = \"nowhere\"\n"),
              HasSubstr("pool 'nowhere' has no [[delivery.sources]]"));
  EXPECT_THAT(error("[[delivery.sources]]\nname = \"x\"\naddress = \"mta1\"\n"),
              HasSubstr("a local IP address"));
  EXPECT_THAT(error("[delivery]\nbackoff_patterns = [\"(unclosed\"]\n"),
              HasSubstr("(unclosed"));
  EXPECT_THAT(error("[smarthost]\ntls = \"ssl\"\n"),
              HasSubstr("\"starttls\", \"implicit\" or \"none\""));
}

TEST(ConfigTest, PrintedDefaultsParseBackToTheDefaults) {
  std::string text = DefaultConfigToml();
  auto parsed = ParseConfig(text, "defaults.toml");
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->values, DefaultConfig().values);
  // Every key is set by the printed file, and every key is commented.
  EXPECT_EQ(parsed->lines.size(), DefaultConfig().values.size());
  for (const auto& [key, line] : parsed->lines) {
    EXPECT_GT(line, 1) << key;
  }
  EXPECT_THAT(text, HasSubstr("# Worker shards"));
}

TEST(ConfigTest, EmptyFileGivesDefaults) {
  auto parsed = ParseConfig("", "empty.toml");
  ASSERT_TRUE(parsed.ok());
  EXPECT_EQ(parsed->values, DefaultConfig().values);
  EXPECT_TRUE(parsed->lines.empty());
}

TEST(ConfigTest, OverridesApplyAndRememberWhereTheyCameFrom) {
  auto parsed = ParseConfig(R"(
[server]
hostname = "mx.example.com"
shards = 3
io_backend = "epoll"
log_level = "debug"
drain_timeout = "1h"

[listen]
relay = ["0.0.0.0:25", "[::]:25"]
submission = "127.0.0.1:587"
submissions = []

[relay]
trusted_networks = ["10.0.0.0/8"]
)",
                            "peregrine.toml");
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->hostname, "mx.example.com");
  EXPECT_EQ(parsed->EffectiveHostname(), "mx.example.com");
  EXPECT_EQ(parsed->shards, 3);
  EXPECT_EQ(parsed->EffectiveShards(), 3);
  EXPECT_EQ(parsed->io_backend, shard::BackendKind::kEpoll);
  EXPECT_EQ(parsed->log_level, log::Level::kDebug);
  EXPECT_EQ(parsed->drain_timeout, absl::Hours(1));
  EXPECT_THAT(Addresses(*parsed, ListenerKind::kRelay),
              ::testing::ElementsAre("0.0.0.0:25", "[::]:25"));
  EXPECT_THAT(Addresses(*parsed, ListenerKind::kSubmission),
              ::testing::ElementsAre("127.0.0.1:587"));
  EXPECT_TRUE(Addresses(*parsed, ListenerKind::kSubmissions).empty());
  ASSERT_EQ(parsed->trusted_networks.size(), 1u);
  EXPECT_EQ(parsed->trusted_networks[0].ToString(), "10.0.0.0/8");
  EXPECT_EQ(parsed->Where("server.shards"), "peregrine.toml:4: server.shards");
  EXPECT_EQ(parsed->Where("server.data_dir"),
            "server.data_dir (built-in default)");
}

struct BadCase {
  const char* name;
  const char* text;
  std::vector<const char*> expected;  // Substrings of the error.
};

class BadConfigTest : public ::testing::TestWithParam<BadCase> {};

TEST_P(BadConfigTest, NamesFileLineKeyAndExpectation) {
  auto parsed = ParseConfig(GetParam().text, "bad.toml");
  ASSERT_FALSE(parsed.ok());
  EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument);
  for (const char* part : GetParam().expected) {
    EXPECT_THAT(std::string(parsed.status().message()), HasSubstr(part));
  }
}

INSTANTIATE_TEST_SUITE_P(
    Cases, BadConfigTest,
    ::testing::Values(
        BadCase{"UnknownKey",
                "[server]\n\nshardz = 4\n",
                {"bad.toml:3:1:", "unknown key 'server.shardz'",
                 "did you mean 'shards'?", "keys in [server]:"}},
        BadCase{"UnknownKeyFarFromAny",
                "[server]\nfrobnicate = 1\n",
                {"bad.toml:2:1:", "unknown key 'server.frobnicate'"}},
        BadCase{
            "UnknownSection",
            "[serverz]\nx = 1\n",
            {"bad.toml:1:", "unknown section [serverz]",
             "sections: server, listen, admin, relay, auth, tls, smtp, queue, "
             "events, dns, dkim"}},
        BadCase{"KeyOutsideSection",
                "shards = 4\n",
                {"bad.toml:1:1:", "unknown section [shards]"}},
        BadCase{"SectionIsNotATable",
                "server = 4\n",
                {"bad.toml:1:1:", "'server' must be a section"}},
        BadCase{"WrongType",
                "[server]\nshards = \"four\"\n",
                {"bad.toml:2:10:", "server.shards",
                 "expected an integer from 0 to 1024", "got string"}},
        BadCase{"OutOfRange",
                "[server]\nshards = 5000\n",
                {"bad.toml:2:", "server.shards",
                 "expected an integer from 0 to 1024", "5000"}},
        BadCase{"NegativeDuration",
                "[server]\ndrain_timeout = \"-5s\"\n",
                {"bad.toml:2:", "server.drain_timeout", "a duration"}},
        BadCase{"DurationInDaysOutOfRange",
                "[server]\ndrain_timeout = \"2d\"\n",
                {"server.drain_timeout", "from 0 to 1h", "'2d'"}},
        BadCase{"DurationNotAString",
                "[server]\ndrain_timeout = 30\n",
                {"server.drain_timeout", "such as \"30s\"", "got integer"}},
        BadCase{"BadBackend",
                "[server]\nio_backend = \"kqueue\"\n",
                {"server.io_backend", "\"io_uring\" or \"epoll\"", "kqueue"}},
        BadCase{"BadLogLevel",
                "[server]\nlog_level = \"loud\"\n",
                {"server.log_level", "\"warning\""}},
        BadCase{"EmptyDataDir",
                "[server]\ndata_dir = \"\"\n",
                {"server.data_dir", "non-empty"}},
        BadCase{"BadPort",
                "[listen]\nrelay = [\"127.0.0.1:70000\"]\n",
                {"bad.toml:2:", "listen.relay", "from 0 to 65535"}},
        BadCase{"HostNameInsteadOfAddress",
                "[listen]\nadmin = \"localhost:8025\"\n",
                {"listen.admin", "not a literal IP address"}},
        BadCase{"AddressListOfNumbers",
                "[listen]\nrelay = [25]\n",
                {"listen.relay", "a list of addresses"}},
        BadCase{"SameAddressTwice",
                "[listen]\nrelay = \"127.0.0.1:2600\"\nsubmission = "
                "\"127.0.0.1:2600\"\n",
                {"127.0.0.1:2600", "each listener needs its own port"}},
        BadCase{"BadDurability",
                "[queue]\ndurability = \"sometimes\"\n",
                {"bad.toml:2:", "queue.durability", "\"fsync\" or \"none\""}},
        BadCase{"BadSizeUnit",
                "[queue]\nmin_free_space = \"5 parsecs\"\n",
                {"queue.min_free_space", "such as \"512MiB\""}},
        BadCase{"SizeNotAString",
                "[queue]\nblock_cache = 64\n",
                {"queue.block_cache", "got integer"}},
        BadCase{"IdleSpinNotADuration",
                "[server]\nidle_spin = \"sometimes\"\n",
                {"bad.toml:2:", "server.idle_spin",
                 "\"auto\" or a duration up to \"10ms\""}},
        BadCase{"IdleSpinTooLong",
                "[server]\nidle_spin = \"1s\"\n",
                {"server.idle_spin", "\"auto\" or a duration"}},
        BadCase{"BoolAsString",
                "[queue]\nbody_blob_files = \"yes\"\n",
                {"queue.body_blob_files", "true or false"}},
        BadCase{"DkimKeyUnknownField",
                "[[dkim.keys]]\ndomain = \"a.test\"\nselector = \"s\"\n"
                "key_file = \"k\"\nkeyfile = \"k\"\n",
                {"dkim.keys", "entry 1 (line 1)", "unknown key 'keyfile'"}},
        BadCase{"DkimKeyMissingSelector",
                "[[dkim.keys]]\ndomain = \"a.test\"\nkey_file = \"k\"\n",
                {"entry 1", "'selector' is required"}},
        BadCase{"DkimKeyBadAlgorithm",
                "[[dkim.keys]]\ndomain = \"a.test\"\nselector = \"s\"\n"
                "key_file = \"k\"\nalgorithm = \"rsa-sha1\"\n",
                {"algorithm", "\"rsa-sha256\" or \"ed25519-sha256\""}},
        BadCase{"DkimKeyBadSelector",
                "[[dkim.keys]]\ndomain = \"a.test\"\nselector = \"s 1\"\n"
                "key_file = \"k\"\n",
                {"DKIM selector 's 1'"}},
        BadCase{"DkimKeysNotAList",
                "[dkim]\nkeys = \"k.pem\"\n",
                {"dkim.keys", "[[dkim.keys]] tables"}},
        BadCase{"DkimBadCanonicalization",
                "[dkim]\ncanonicalization = \"relaxed\"\n",
                {"dkim.canonicalization", "\"relaxed/relaxed\""}},
        BadCase{"DnsServerName",
                "[dns]\nservers = [\"dns.google\"]\n",
                {"dns.servers", "'dns.google' is not an IP address",
                 "\"ip:port\""}},
        BadCase{"DnsTriesOutOfRange",
                "[dns]\ntries = 0\n",
                {"dns.tries", "from 1 to 10"}},
        BadCase{"TlsCertWithoutKey",
                "[tls]\ncert_file = \"/etc/ssl/x.pem\"\n",
                {"tls.cert_file and tls.key_file go together"}},
        BadCase{"BadNetwork",
                "[relay]\ntrusted_networks = [\"10.0.0.0/33\"]\n",
                {"relay.trusted_networks", "prefix length"}},
        BadCase{"OpenRelayEveryIpv4",
                "[relay]\ntrusted_networks = [\"0.0.0.0/0\"]\n",
                {"bad.toml:2:", "relay.trusted_networks", "0.0.0.0/0",
                 "open relay", "relay.allow_open_relay = true"}},
        BadCase{"OpenRelayEveryIpv6",
                "[relay]\ntrusted_networks = [\"127.0.0.1\", \"::/0\"]\n",
                {"::/0", "open relay"}},
        BadCase{"OpenRelayThroughMappedIpv4",
                "[relay]\ntrusted_networks = [\"::ffff:0:0/96\"]\n",
                {"::ffff:0.0.0.0/96", "open relay"}},
        BadCase{"OpenRelayBroaderThanASlash8",
                "[relay]\ntrusted_networks = [\"64.0.0.0/2\"]\n",
                {"64.0.0.0/2", "open relay"}},
        BadCase{"StringWhereAListBelongs",
                "[relay]\ntrusted_networks = \"10.0.0.0/8\"\n",
                {"bad.toml:2:", "relay.trusted_networks", "a list of networks",
                 "[\"10.0.0.0/8\"]"}},
        BadCase{"StringWhereAListBelongsElsewhereToo",
                "[dns]\nservers = \"127.0.0.1:53\"\n",
                {"dns.servers", "[\"127.0.0.1:53\"]"}},
        BadCase{"OpenRelayFlagIsABoolean",
                "[relay]\nallow_open_relay = \"yes\"\n",
                {"relay.allow_open_relay", "true or false"}},
        BadCase{"SyntaxError",
                "[server\nshards = 1\n",
                {"bad.toml:1:", "TOML syntax error"}},
        BadCase{"SeveralProblemsAllReportedInFileOrder",
                "[server]\nshards = -1\n[relay]\nbogus = 1\n",
                {"bad.toml:2:10: server.shards",
                 "\nbad.toml:4:1: unknown key 'relay.bogus'"}}),
    [](const auto& info) { return std::string(info.param.name); });

TEST(ConfigTest, AnOpenRelayOnlyWhenSaidTwice) {
  auto parsed = ParseConfig(
      "[relay]\ntrusted_networks = [\"0.0.0.0/0\"]\nallow_open_relay = true\n",
      "open.toml");
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_TRUE(parsed->allow_open_relay);
  EXPECT_THAT(ConfigWarnings(*parsed),
              ::testing::Contains(HasSubstr("0.0.0.0/0 is not a private")));
}

TEST(ConfigTest, WarnsAboutPublicTrustedNetworksAndShortHostNames) {
  auto parsed = ParseConfig(
      "[server]\nhostname = \"vm\"\n[relay]\ntrusted_networks = "
      "[\"127.0.0.1\", \"10.1.0.0/16\", \"fd00::/8\", \"198.51.100.0/24\"]\n",
      "w.toml");
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  std::vector<std::string> w = ConfigWarnings(*parsed);
  ASSERT_EQ(w.size(), 2u) << absl::StrJoin(w, "\n");
  EXPECT_THAT(w[0], HasSubstr("w.toml:4: relay.trusted_networks: "
                              "198.51.100.0/24 is not a private"));
  EXPECT_THAT(w[1], HasSubstr("w.toml:2: server.hostname: 'vm' is not a "
                              "fully qualified domain name"));
  auto good = ParseConfig("[server]\nhostname = \"mail.example.com\"\n", "g");
  ASSERT_TRUE(good.ok());
  EXPECT_THAT(ConfigWarnings(*good), ::testing::IsEmpty());
}

TEST(ConfigTest, ListenersTakeOneAddressAsAString) {
  auto parsed = ParseConfig("[listen]\nrelay = \"127.0.0.1:2600\"\n", "l");
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_THAT(Addresses(*parsed, ListenerKind::kRelay),
              ::testing::ElementsAre("127.0.0.1:2600"));
}

TEST(ConfigTest, OnlyARegularFileIsAConfiguration) {
  std::string dir = getenv("TEST_TMPDIR");
  auto parsed = LoadConfigFile(dir);
  ASSERT_FALSE(parsed.ok());
  EXPECT_THAT(std::string(parsed.status().message()),
              HasSubstr("is a directory, not a configuration file"));
  parsed = LoadConfigFile("/dev/zero");  // Used to read forever.
  ASSERT_FALSE(parsed.ok());
  EXPECT_THAT(std::string(parsed.status().message()),
              HasSubstr("/dev/zero: is not a regular file"));
}

TEST(ConfigTest, MissingFileIsAnErrorNamingIt) {
  auto parsed = LoadConfigFile("/nonexistent/peregrine.toml");
  ASSERT_FALSE(parsed.ok());
  EXPECT_THAT(std::string(parsed.status().message()),
              HasSubstr("/nonexistent/peregrine.toml: cannot read"));
}

TEST(ConfigTest, WhatSighupMayChange) {
  EXPECT_TRUE(IsReloadable("server.log_level"));
  EXPECT_TRUE(IsReloadable("dkim.canonicalization"));
  EXPECT_TRUE(IsReloadable("delivery.sites"));
  EXPECT_TRUE(IsReloadable("delivery.message_rate"));
  EXPECT_TRUE(IsReloadable("smarthost.host"));
  EXPECT_FALSE(IsReloadable("delivery.enabled"));
  EXPECT_FALSE(IsReloadable("delivery.ca_file"));
  EXPECT_FALSE(IsReloadable("server.shards"));
  EXPECT_FALSE(IsReloadable("listen.relay"));
}

}  // namespace
}  // namespace peregrine
