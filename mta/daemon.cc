// Over 800 lines, one concern: the daemon's life, from start (listeners,
// queue, keys, shards) through signals and reloads to the drain; what it
// attaches to the outcome seam and the admin port is in daemon_outcomes.cc.
#include "mta/daemon.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <tuple>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "base/files.h"
#include "base/log.h"
#include "dns/blocking_client.h"
#include "dns/cares_transport.h"
#include "mta/blocking_smtp.h"
#include "mta/bounce/suppression_admin.h"
#include "mta/privileges.h"
#include "mta/shard/connection.h"
#include "mta/shard/socket.h"
#include "mta/version.h"

namespace peregrine {
namespace {

constexpr const char* kLog = "daemon";

}  // namespace

struct Daemon::ShardState {
  struct Listener {
    ListenerKind kind;
    int fd;
    bool loopback;
  };
  std::vector<Listener> listeners;
  // Created and destroyed on the shard's thread.
  std::unique_ptr<dns::CachingResolver> resolver;
  std::atomic<int> open_connections{0};
};

Daemon::Daemon(Config config, std::string config_path,
               std::string data_dir_override)
    : config_(std::move(config)),
      config_path_(std::move(config_path)),
      data_dir_override_(std::move(data_dir_override)) {
  if (!data_dir_override_.empty()) config_.data_dir = data_dir_override_;
}

Daemon::~Daemon() {
  startup_answers_.reset();  // Before the sockets it watches close.
  if (group_) {
    group_->Stop();
    group_->Join();
  }
  // Shards are joined: listeners that were not closed by a drain (or never
  // reached a shard) are ours to close.
  for (auto& state : shards_) {
    for (auto& l : state->listeners) {
      if (l.fd >= 0) ::close(l.fd);
    }
  }
  if (lock_fd_ >= 0) ::close(lock_fd_);
}

absl::Status Daemon::PrepareDataDir() {
  namespace fs = std::filesystem;
  std::string where = data_dir_override_.empty()
                          ? config_.Where("server.data_dir")
                          : std::string("--data-dir");
  std::error_code ec;
  fs::create_directories(config_.data_dir, ec);
  if (ec || !fs::is_directory(config_.data_dir)) {
    return absl::FailedPreconditionError(absl::StrCat(
        where, ": cannot create data directory '", config_.data_dir,
        "': ", ec ? ec.message() : "exists and is not a directory"));
  }
  if (::access(config_.data_dir.c_str(), R_OK | W_OK | X_OK) != 0) {
    return absl::PermissionDeniedError(
        absl::StrCat(where, ": data directory '", config_.data_dir,
                     "' is not writable by this user: ", std::strerror(errno)));
  }
  std::string lock_path = config_.data_dir + "/peregrine.lock";
  lock_fd_ = ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (lock_fd_ < 0) {
    return absl::PermissionDeniedError(absl::StrCat(
        where, ": cannot open ", lock_path, ": ", std::strerror(errno)));
  }
  if (::flock(lock_fd_, LOCK_EX | LOCK_NB) != 0) {
    char pid[32] = {};
    (void)!::pread(lock_fd_, pid, sizeof(pid) - 1, 0);
    return absl::FailedPreconditionError(absl::StrCat(
        where, ": another peregrine (pid ", absl::StripAsciiWhitespace(pid),
        ") already runs on data directory '", config_.data_dir,
        "'; stop it or choose another directory"));
  }
  std::string pid = absl::StrCat(getpid(), "\n");
  (void)!::ftruncate(lock_fd_, 0);
  (void)!::pwrite(lock_fd_, pid.data(), pid.size(), 0);
  return absl::OkStatus();
}

absl::Status Daemon::BindListeners() {
  int n = config_.EffectiveShards();
  shards_.clear();
  for (int i = 0; i < n; ++i) shards_.push_back(std::make_unique<ShardState>());
  for (const ListenerConfig& listener : config_.listeners) {
    for (shard::SocketAddress address : listener.addresses) {
      absl::Status free = address.port() == 0 ? absl::OkStatus()
                                              : shard::CheckPortFree(address);
      if (!free.ok()) {
        return absl::Status(
            free.code(),
            absl::StrCat(config_.Where(listener.key), " = \"",
                         address.ToString(), "\": ", free.message()));
      }
      for (int i = 0; i < n; ++i) {
        auto fd = shard::Listen(address, /*reuse_port=*/true);
        if (!fd.ok()) {
          return absl::Status(
              fd.status().code(),
              absl::StrCat(config_.Where(listener.key), " = \"",
                           address.ToString(), "\": ", fd.status().message()));
        }
        if (i == 0 && address.port() == 0) {
          // Port 0: the kernel picked one; the other shards share it.
          auto local = shard::LocalAddress(*fd);
          if (local.ok()) address = *local;
        }
        shards_[i]->listeners.push_back(
            {listener.kind, *fd, address.IsLoopback()});
      }
      bound_.push_back({listener.kind, address});
    }
  }
  return absl::OkStatus();
}

absl::Status Daemon::BindAndDrop() {
  std::string where = data_dir_override_.empty()
                          ? config_.Where("server.data_dir")
                          : std::string("--data-dir");
  const bool root = ::geteuid() == 0;
  // No user to change to: as before privilege separation.
  auto as_is = [this] {
    if (absl::Status s = PrepareDataDir(); !s.ok()) return s;
    return BindListeners();
  };
  if (config_.user.empty() || config_.user == "root") {
    if (root && config_.user.empty()) {
      // Postfix and OpenSMTPD never keep root either.
      return absl::FailedPreconditionError(absl::StrCat(
          config_.Where("server.user"),
          ": started as root: set server.user = \"peregrine\" (or serve "
          "--user peregrine; a user of its own: useradd --system "
          "--home-dir /var/lib/peregrine --shell /usr/sbin/nologin "
          "peregrine) so that a flaw cannot take the machine; Peregrine "
          "binds its ports first. server.user = \"root\" (--user root) "
          "stays root on purpose"));
    }
    if (root) {
      log::Warn(kLog,
                "running as root (server.user = \"root\"): a flaw would "
                "take the machine");
    }
    return as_is();
  }
  auto who = LookupRunAs(config_.user, config_.group);
  if (!who.ok()) {
    return absl::Status(who.status().code(),
                        absl::StrCat(config_.Where("server.user"), ": ",
                                     who.status().message()));
  }
  if (!root) {
    if (::geteuid() == who->uid) return as_is();  // Already that user.
    return absl::FailedPreconditionError(absl::StrCat(
        config_.Where("server.user"), " = \"", config_.user,
        "\", but Peregrine was started as uid ", ::geteuid(),
        ", not root: start it as root to switch users (systemd's User= "
        "does that itself: then leave server.user empty)"));
  }
  if (absl::Status s = PrepareDataDirFor(config_.data_dir, *who, where);
      !s.ok()) {
    return s;
  }
  if (absl::Status s = BindListeners(); !s.ok()) return s;
  if (absl::Status s = DropTo(*who); !s.ok()) {
    return absl::Status(s.code(), absl::StrCat(config_.Where("server.user"),
                                               ": ", s.message()));
  }
  log::Info(kLog, "listeners bound; running as %s:%s (uid %d, gid %d)",
            who->user, who->group, who->uid, who->gid);
  return PrepareDataDir();
}

absl::Status Daemon::Start() {
  // Signals go to the main thread's sigtimedwait() only: block them before
  // any thread exists (RocksDB starts its own), so every thread inherits the
  // mask. Otherwise the kernel may hand SIGTERM to a thread that has it
  // unblocked, and the default action kills the process without a drain.
  sigset_t set;
  sigemptyset(&set);
  for (int sig : {SIGTERM, SIGINT, SIGHUP, SIGPIPE}) sigaddset(&set, sig);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);

  log::SetLevel(config_.log_level);
  for (const std::string& w : ConfigWarnings(config_)) log::Warn(kLog, "%s", w);
  if (absl::Status s = BindAndDrop(); !s.ok()) return s;
  {
    // Until the shards take over: /livez answers, /readyz says why not.
    std::vector<int> admin;
    for (const auto& state : shards_) {
      for (const ShardState::Listener& l : state->listeners) {
        if (l.kind == ListenerKind::kAdmin) admin.push_back(l.fd);
      }
    }
    startup_answers_ = std::make_unique<StartupAnswers>(
        std::move(admin), "starting: opening and recovering the queue");
  }
  if (absl::Status s = OpenQueue(); !s.ok()) return s;
  if (absl::Status s = CheckFilesReadable(); !s.ok()) return s;
  LoadDkim();
  if (absl::Status s = LoadTls(); !s.ok()) return s;
  {
    std::vector<std::pair<std::string, std::string>> keys = {
        {"tls.key_file", config_.tls_key_file}};
    for (const dkim::KeySpec& k : config_.dkim.keys) {
      keys.push_back({absl::StrCat("the DKIM key of ", k.domain), k.key_file});
    }
    for (const std::string& w : KeyFileWarnings(keys)) log::Warn(kLog, "%s", w);
  }
  limiter_ = std::make_unique<ConnectionLimiter>(
      config_.smtp_max_connections, config_.smtp_max_connections_per_client);
  reception_.limiter = limiter_.get();
  reception_.queue = queue_.get();
  reception_.dkim = [this] { return dkim(); };
  // As many signing threads as shards: on two vCPUs signing still takes
  // its share of them, but a signature in progress no longer stalls the
  // other connections of its shard.
  signer_ = std::make_unique<Signer>(config_.EffectiveShards());
  reception_.signer = signer_.get();
  reception_.tls = [this] { return tls(); };
  LoadUsers();
  reception_.authenticate = [this](std::string client, std::string user,
                                   std::string password,
                                   absl::AnyInvocable<void(AuthAnswer)> done) {
    authenticator_.Check(std::move(client), std::move(user),
                         std::move(password), std::move(done));
  };
  reception_.has_users = [this] { return authenticator_.HasUsers(); };
  reception_.check_sender = [this](absl::string_view user,
                                   absl::string_view sender) {
    return authenticator_.SenderRefusal(user, sender);
  };
  reception_.take_message = [this](absl::string_view user) {
    return authenticator_.TakeMessage(user);
  };
  reception_.resolver = [this](int shard) -> dns::Resolver* {
    return shards_[shard]->resolver.get();
  };
  reception_.trusted_networks = config_.trusted_networks;
  reception_.hostname = config_.EffectiveHostname();
  reception_.shards = static_cast<int>(shards_.size());
  reception_.inject_memory = config_.admin_inject_memory;
  reception_.max_message_bytes = config_.smtp_max_message_bytes;
  reception_.max_recipients = static_cast<size_t>(config_.smtp_max_recipients);
  reception_.command_timeout = config_.smtp_command_timeout;
  reception_.received_shows_auth_user = config_.smtp_received_shows_auth_user;
  reception_.submission_adds_missing_fields =
      config_.smtp_submission_adds_missing_fields;
  reception_.relay_adds_missing_fields = config_.smtp_relay_adds_missing_fields;
  reception_.auth_without_tls = config_.auth_without_tls;
  if (config_.auth_without_tls) {
    log::Warn(kLog,
              "%s: AUTH is offered without TLS; passwords can be read "
              "on the network",
              config_.Where("auth.allow_without_tls"));
  }

  if (absl::Status s = PrepareBounces(); !s.ok()) return s;
  if (absl::Status s = PrepareLocal(); !s.ok()) return s;
  if (absl::Status s = PrepareCluster(); !s.ok()) return s;
  if (absl::Status s = PrepareOutcomes(); !s.ok()) return s;
  reception_.outcomes = &outcomes_;
  if (absl::Status s = PrepareDelivery(); !s.ok()) return s;
  if (absl::Status s = PrepareAdmin(); !s.ok()) return s;

  shard::ShardGroup::Options options;
  options.shards = static_cast<int>(shards_.size());
  options.backend = config_.io_backend;
  options.idle_spin = config_.idle_spin;
  group_ = std::make_unique<shard::ShardGroup>(options);
  if (delivery_ != nullptr) delivery_->group = group_.get();
  if (cluster_ != nullptr) {
    cluster_->Attach(group_.get());
    if (delivery_ != nullptr) {
      delivery_->shared_limits = [this](int shard) {
        return cluster_->Limits(shard);
      };
    }
  }
  startup_answers_.reset();  // The shards take the admin sockets over.
  absl::Status started =
      group_->Start([this](shard::Reactor& reactor) { StartShard(reactor); });
  if (!started.ok()) {
    group_.reset();
    return absl::Status(started.code(),
                        absl::StrCat(config_.Where("server.io_backend"), ": ",
                                     started.message()));
  }

  if (cluster_ != nullptr) cluster_->Start();
  absl::Duration spin =
      config_.idle_spin.value_or(shard::AutoIdleSpin(group_->size()));
  log::Info(kLog,
            "peregrine %s started: %d shards, I/O backend %s%s, idle spin "
            "%s%s",
            kVersion, group_->size(), group_->backend_name(),
            config_.io_backend == shard::BackendKind::kAuto ? " (auto)" : "",
            absl::FormatDuration(spin),
            config_.idle_spin.has_value() ? "" : " (auto)");
  log::Info(
      kLog, "configuration: %s; data directory: %s", config_.source,
      std::filesystem::absolute(config_.data_dir).lexically_normal().string());
  log::Info(kLog, "host name: %s", config_.EffectiveHostname());
  log::Info(
      kLog, "dns: %s, timeout %s x %d tries, cache %d answers per shard",
      config_.dns_servers.empty()
          ? std::string("servers of /etc/resolv.conf")
          : absl::StrCat("servers ", absl::StrJoin(config_.dns_servers, ", ")),
      absl::FormatDuration(config_.dns_timeout), config_.dns_tries,
      config_.dns_cache_entries);
  for (const Bound& b : bound_) {
    log::Info(kLog, "listening on %s: %s", b.address.ToString(),
              ListenerDescription(b.kind));
  }
  if (bound_.empty()) log::Warn(kLog, "no listeners configured ([listen])");
  return absl::OkStatus();
}

void Daemon::StartShard(shard::Reactor& reactor) {
  dns::CaresOptions cares;
  cares.servers = config_.dns_servers;
  cares.timeout = config_.dns_timeout;
  cares.tries = config_.dns_tries;
  cares.ad = config_.dns_dnssec;
  dns::CachingResolverOptions cache;
  cache.cache_entries = static_cast<size_t>(config_.dns_cache_entries);
  cache.trust_ad = ad_trusted_;
  cache.seed =
      static_cast<uint64_t>(absl::ToUnixNanos(absl::Now())) + reactor.id();
  auto resolver = dns::MakeCaresResolver(reactor, cares, cache);
  if (resolver.ok()) {
    shards_[reactor.id()]->resolver = *std::move(resolver);
  } else {
    log::Error(kLog, "shard %d: DNS resolver: %s", reactor.id(),
               resolver.status().message());
  }
  if (delivery_ != nullptr) {
    auto& engine = delivery_->engines[reactor.id()];
    engine = std::make_unique<delivery::DeliveryShard>(reactor, *delivery_);
    engine->Start();
  }
  StartAccepting(reactor.id());
}

namespace {

// The servers c-ares uses: the configured ones, else /etc/resolv.conf's.
std::vector<std::string> DnsServersInUse(const Config& config) {
  return config.dns_servers.empty() ? dns::ResolvConfServers()
                                    : config.dns_servers;
}

bool OnLoopback(absl::string_view server) {
  absl::ConsumePrefix(&server, "[");
  return absl::StartsWith(server, "127.") || absl::StartsWith(server, "::1");
}

}  // namespace

void Daemon::StartTlsReports() {
  TlsReporterOptions o;
  const std::string host = config_.EffectiveHostname();
  o.submitter = host;
  o.organization = config_.tls_report_organization.empty()
                       ? host
                       : config_.tls_report_organization;
  o.contact = config_.tls_report_contact.empty()
                  ? absl::StrCat("mailto:postmaster@", host)
                  : config_.tls_report_contact;
  o.from = config_.tls_report_from.empty()
               ? absl::StrCat("tlsrpt-noreply@", host)
               : config_.tls_report_from;
  o.interval = config_.tls_report_interval;
  o.state_file = config_.data_dir + "/tls-report.json";
  o.dns.servers = config_.dns_servers;
  o.ca_file = config_.delivery.ca_file;
  o.sts = sts_cache_.get();
  absl::StatusOr<shard::SocketAddress> relay =
      ListenerAddress(config_, ListenerKind::kRelay);
  if (!relay.ok()) {
    log::Warn(kLog, "tls_report: %s: reports to mailto: addresses cannot go",
              relay.status().message());
  } else {
    o.send_mail = [address = *relay, host](const std::string& from,
                                           const std::string& to,
                                           const std::string& message) {
      return SubmitMail(address, host, from, to, message);
    };
  }
  tls_reporter_ = std::make_unique<TlsReporter>(std::move(o));
  outcomes_.Attach(tls_reporter_.get());
  log::Info(kLog, "tls_report: TLS reports every %s to the domains that ask",
            absl::FormatDuration(config_.tls_report_interval));
}

absl::Status Daemon::PrepareDelivery() {
  if (config_.dns_dnssec) {
    std::vector<std::string> servers = DnsServersInUse(config_);
    bool loopback = !servers.empty() &&
                    std::all_of(servers.begin(), servers.end(), OnLoopback);
    ad_trusted_ = loopback || config_.dns_trust_ad;
    if (ad_trusted_) {
      log::Info(kLog, "dns: DNSSEC answers of %s are believed (%s): DANE is on",
                absl::StrJoin(servers, ", "),
                loopback ? "on loopback" : "dns.trust_ad");
    } else {
      log::Info(kLog,
                "dns: DANE is off: the resolver %s is not on loopback, so its "
                "DNSSEC answers cannot be believed (run a validating "
                "resolver such as unbound here, or set dns.trust_ad = true "
                "if the path to it is trusted)",
                servers.empty() ? "(none)" : absl::StrJoin(servers, ", "));
    }
  }
  config_.delivery.dane = ad_trusted_;
  const delivery::DeliveryOptions& d = config_.delivery;
  if (!d.enabled) {
    log::Warn(kLog, "%s: delivery is off; mail stays in the queue",
              config_.Where("delivery.enabled"));
    return absl::OkStatus();
  }
  auto tls = tls::ClientContext::Create(d.ca_file);
  if (!tls.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(
        config_.Where("delivery.ca_file"), ": ", tls.status().message()));
  }
  suspensions_ = std::make_unique<delivery::Suspensions>(config_.data_dir +
                                                         "/suspensions.json");
  if (absl::Status s = suspensions_->Load(); !s.ok()) return s;
  for (const delivery::Suspension& s : suspensions_->List()) {
    log::Info(kLog, "suspended through the API: %s%s%s",
              s.domain.empty() ? s.mx_suffix : s.domain,
              s.reason.empty() ? "" : ": ", s.reason);
  }
  delivery_ = std::make_unique<delivery::EngineContext>();
  delivery_->queue = queue_.get();
  delivery_->outcomes = &outcomes_;
  delivery_->options = *DeliveryInForce();
  delivery_->helo = d.helo.empty() ? config_.EffectiveHostname() : d.helo;
  delivery_->tls = *tls;
  delivery_->classifier = Classifier();
  log::Info(kLog, "bounce: %d classification rules%s",
            delivery_->classifier->rules(),
            config_.bounce_rules_file.empty()
                ? ""
                : absl::StrCat(" (", config_.bounce_rules_file,
                               " before the built-in ones)"));
  delivery_->resolver = [this](int shard) -> dns::Resolver* {
    return shards_[shard]->resolver.get();
  };
  delivery_->engines.resize(shards_.size());
  if (d.mta_sts) {
    sts_cache_ = std::make_unique<delivery::StsCache>(queue_->SideTable());
    absl::StatusOr<size_t> kept = sts_cache_->Load(absl::Now());
    if (!kept.ok()) {
      log::Warn(kLog,
                "mta-sts: the kept policies could not be read (%s); "
                "they are fetched again",
                kept.status().message());
    } else if (*kept > 0) {
      log::Info(kLog, "mta-sts: %d policies kept from before", *kept);
    }
    delivery::StsFetcherOptions f;
    f.timeout = d.mta_sts_fetch_timeout;
    f.ca_file = d.ca_file;
    sts_fetcher_ = std::make_unique<delivery::StsFetcher>(f, sts_cache_.get());
    delivery_->sts_cache = sts_cache_.get();
    delivery_->sts_fetcher = sts_fetcher_.get();
  }
  if (config_.tls_report) StartTlsReports();
  if (d.smarthost.host.empty()) {
    log::Info(kLog, "delivery: by MX on port %d as %s, TLS %s", d.port,
              delivery_->helo, delivery::TlsModeName(d.defaults.tls));
  } else {
    const delivery::Smarthost& s = d.smarthost;
    log::Info(kLog, "delivery: %s through smarthost %s:%d (TLS %s%s%s)",
              s.domains.empty()
                  ? "all mail"
                  : absl::StrCat("mail for ", absl::StrJoin(s.domains, ", ")),
              s.host, s.port,
              s.tls == delivery::SmarthostTls::kImplicit   ? "implicit"
              : s.tls == delivery::SmarthostTls::kStartTls ? "STARTTLS"
                                                           : "off",
              s.user.empty() ? "" : ", AUTH as ", s.user);
    if (s.port == 465 && s.tls != delivery::SmarthostTls::kImplicit) {
      log::Warn(kLog,
                "%s: port 465 expects implicit TLS; you probably want "
                "smarthost.tls = \"implicit\"",
                config_.Where("smarthost.tls"));
    }
    if (s.port == 587 && s.tls == delivery::SmarthostTls::kImplicit) {
      log::Warn(kLog,
                "%s: port 587 speaks plain SMTP first; you probably want "
                "smarthost.tls = \"starttls\"",
                config_.Where("smarthost.tls"));
    }
    if (!s.user.empty() && s.tls == delivery::SmarthostTls::kNone) {
      log::Warn(kLog,
                "%s: the smarthost password would cross the network "
                "in the clear",
                config_.Where("smarthost.tls"));
    }
  }
  return absl::OkStatus();
}

void Daemon::StartAccepting(int shard) {
  ShardState& state = *shards_[shard];
  shard::Reactor& reactor = group_->reactor(shard);
  for (const ShardState::Listener& listener : state.listeners) {
    std::atomic<int>& open = state.open_connections;
    AcceptLoop::Accepted accepted;
    if (listener.kind == ListenerKind::kAdmin) {
      accepted = [this, &reactor, &open, api = admin_.get(),
                  loopback = listener.loopback](int fd) {
        AdminConnection::Start(reactor, fd, *api, loopback, open,
                               config_.admin_tls ? tls() : nullptr);
      };
    } else {
      accepted = [&reactor, &open, context = &reception_,
                  kind = listener.kind](int fd) {
        SmtpConnection::Start(reactor, fd, *context, open, kind);
      };
    }
    AcceptLoop::Start(reactor, listener.fd, std::move(accepted));
  }
}

absl::Status Daemon::OpenQueue() {
  queue::RocksStoreOptions options;
  options.path = config_.data_dir + "/queue";
  options.sync = config_.queue_fsync;
  options.min_free_bytes = config_.queue_min_free_bytes;
  options.body_blob_files = config_.queue_body_blob_files;
  options.block_cache_bytes = config_.queue_block_cache_bytes;
  options.fresh_bytes = static_cast<size_t>(config_.queue_fresh_cache_bytes);
  options.keep_finished = config_.queue_keep_finished;
  options.spool_reserve_segments = static_cast<int>(
      (config_.queue_spool_reserve_bytes + options.spool_segment_bytes - 1) /
      options.spool_segment_bytes);
  options.shards = static_cast<int>(shards_.size());
  queue::RecoveryStats stats;
  auto store = queue::RocksStore::Open(options, &stats);
  if (!store.ok()) return store.status();
  queue_ = *std::move(store);
  log::Info(kLog,
            "queue %s: recovered %d messages (%d recipients to deliver, %d "
            "done) in %s%s%s",
            options.path, stats.messages, stats.pending_recipients,
            stats.final_recipients, absl::FormatDuration(stats.took),
            stats.rescheduled > 0 ? absl::StrCat("; ", stats.rescheduled,
                                                 " moved to other shards")
                                  : "",
            stats.replayed > 0 ? absl::StrCat("; ", stats.replayed,
                                              " groups replayed from the spool")
                               : "");
  if (!config_.queue_fsync) {
    log::Warn(kLog,
              "queue.durability = \"none\": acknowledged mail can be lost "
              "on power failure");
  }
  if (!queue_->AcceptingNewMail()) {
    log::Warn(kLog,
              "%s: free disk space is under the floor; new mail is "
              "refused until space is freed",
              config_.Where("queue.min_free_space"));
  }
  return absl::OkStatus();
}

absl::Status Daemon::CheckFilesReadable() const {
  // At start only: a file the service user cannot read would leave AUTH
  // off or a domain's mail held, silently, until someone reads the log.
  std::vector<std::string> errors;
  auto check = [&](const std::string& path, const std::string& what,
                   absl::string_view key) {
    absl::Status s = CheckReadable(path, what);
    if (s.ok() || absl::IsNotFound(s)) return;  // Missing: said elsewhere.
    errors.push_back(absl::StrCat(config_.Where(key), ": ", s.message()));
  };
  check(config_.UsersFilePath(), "users file", "auth.users_file");
  if (!config_.tls_cert_file.empty()) {
    check(config_.tls_cert_file, "TLS certificate", "tls.cert_file");
    check(config_.tls_key_file, "TLS key", "tls.key_file");
  }
  for (const dkim::KeySpec& k : config_.dkim.keys) {
    check(k.key_file, "DKIM key", "dkim.keys");
  }
  if (errors.empty()) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrJoin(errors, "\n"));
}

void Daemon::LoadDkim() {
  auto table = dkim::SigningTable::Load(config_.dkim);
  for (const auto& e : table->entries()) {
    std::string match = e.spec.match.empty()
                            ? e.spec.domain
                            : absl::StrJoin(e.spec.match, ", ");
    if (e.signer.ok()) {
      log::Info(kLog, "dkim: d=%s s=%s (%s) signs mail from %s", e.spec.domain,
                e.spec.selector, e.signer->key().algorithm(), match);
    } else {
      log::Error(
          kLog,
          "dkim: d=%s s=%s unusable: %s; mail from %s is held (deferred) "
          "until the key is fixed and peregrine reloaded (SIGHUP)",
          e.spec.domain, e.spec.selector, e.signer.status().message(), match);
    }
  }
  if (table->entries().empty()) {
    log::Info(kLog,
              "dkim: no keys configured; mail is sent unsigned "
              "(receivers expect DKIM: see peregrine dkim keygen)");
  }
  absl::MutexLock lock(&dkim_mu_);
  dkim_ = std::move(table);
}

void Daemon::LoadUsers() {
  std::string path = config_.UsersFilePath();
  auto users = UsersFile::Load(path);
  if (!users.ok()) {
    log::Error(kLog, "auth: %s; AUTH is not offered", users.status().message());
    authenticator_.SetUsers(nullptr);
    return;
  }
  size_t n = users->Names().size();
  authenticator_.SetUsers(std::make_shared<const UsersFile>(*std::move(users)));
  authenticator_.WatchFile(path);  // `user add` takes effect by itself.
  if (n == 0) {
    log::Warn(kLog,
              "auth: no users in %s: submission refuses everyone (add one: "
              "peregrine user add NAME; it takes effect at once)",
              path);
  } else {
    log::Info(kLog, "auth: %d users from %s", n, path);
  }
}

absl::Status Daemon::LoadTls() {
  std::string cert = config_.tls_cert_file, key = config_.tls_key_file;
  if (cert.empty()) {
    auto made =
        tls::EnsureSelfSigned(config_.data_dir, config_.EffectiveHostname());
    if (!made.ok()) return made.status();
    std::tie(cert, key) = *made;
    log::Warn(kLog,
              "tls: no certificate configured ([tls] cert_file); using the "
              "self-signed %s (STARTTLS works; clients that verify will not "
              "trust it)",
              cert);
  }
  auto context = tls::ServerContext::FromFiles(cert, key);
  if (!context.ok()) {
    return absl::Status(context.status().code(),
                        absl::StrCat(config_.Where("tls.cert_file"), ": ",
                                     context.status().message()));
  }
  log::Info(kLog, "tls: certificate %s", cert);
  absl::MutexLock lock(&dkim_mu_);
  tls_ = *std::move(context);
  return absl::OkStatus();
}

std::shared_ptr<const tls::ServerContext> Daemon::tls() const {
  absl::MutexLock lock(&dkim_mu_);
  return tls_;
}

std::shared_ptr<const dkim::SigningTable> Daemon::dkim() const {
  absl::MutexLock lock(&dkim_mu_);
  return dkim_;
}

int Daemon::InboundConnections() const {
  int total = 0;
  for (const auto& state : shards_) {
    total += state->open_connections.load(std::memory_order_relaxed);
  }
  return total;
}

int Daemon::OutboundConnections() const {
  int total = 0;
  if (delivery_ != nullptr) {
    for (const auto& engine : delivery_->engines) {
      if (engine != nullptr) total += engine->open_connections();
    }
  }
  return total;
}

int Daemon::OpenConnections() const {
  return InboundConnections() + OutboundConnections();
}

void Daemon::CloseConnections() {
  // Checks still queued are answered at once, then every shard closes what
  // it has; a connection waiting for a queue write closes when it comes.
  // The reactors stop only after that (bounded), so no connection outlives
  // its shard.
  authenticator_.AnswerQueued();
  for (int i = 0; i < group_->size(); ++i) {
    group_->SubmitTo(i, [] { SmtpConnection::CloseAll(); });
  }
  auto received = [this] {
    int n = 0;
    for (const auto& state : shards_) {
      n += state->open_connections.load(std::memory_order_relaxed);
    }
    return n;
  };
  absl::Time until = absl::Now() + absl::Seconds(2);
  while (received() > 0 && absl::Now() < until) {
    absl::SleepFor(absl::Milliseconds(10));
  }
}

void Daemon::BeginDrain() {
  for (int i = 0; i < group_->size(); ++i) {
    group_->SubmitTo(i, [this, i] {
      for (auto& l : shards_[i]->listeners) {
        group_->reactor(i).io().Close(l.fd, [] {});
        l.fd = -1;
      }
      SmtpConnection::ShutdownAll();
      AdminConnection::CloseAll();
      if (delivery_ != nullptr && delivery_->engines[i] != nullptr) {
        delivery_->engines[i]->BeginDrain();
      }
    });
  }
}

void Daemon::Reload() {
  if (config_path_.empty()) {
    log::Info(kLog,
              "SIGHUP: running on built-in defaults; nothing to reload "
              "(start with --config FILE to use a file)");
    return;
  }
  auto fresh = LoadConfigFile(config_path_);
  if (!fresh.ok()) {
    log::Error(kLog,
               "SIGHUP: %s is not valid, keeping the running "
               "configuration:\n%s",
               config_path_, fresh.status().message());
    return;
  }
  if (!data_dir_override_.empty()) {
    fresh->data_dir = data_dir_override_;
    fresh->values["server.data_dir"] = config_.values["server.data_dir"];
  }
  std::vector<std::string> applied, need_restart;
  for (const auto& [key, value] : fresh->values) {
    if (config_.values[key] == value) continue;
    (IsReloadable(key) ? applied : need_restart).push_back(key);
  }
  // Said before the new level applies, so that a quieter level does not
  // hide what the reload did.
  log::Info(kLog, "SIGHUP: reloaded %s; applied: %s", config_path_,
            applied.empty() ? "nothing changed" : absl::StrJoin(applied, ", "));
  if (!need_restart.empty()) {
    log::Warn(kLog, "SIGHUP: these changes take effect after a restart: %s",
              absl::StrJoin(need_restart, ", "));
  }
  log::SetLevel(fresh->log_level);
  config_.log_level = fresh->log_level;
  config_.values["server.log_level"] = fresh->values["server.log_level"];
  // Key files are read again even when the settings did not change: an
  // operator rotates a key by replacing its file and sending SIGHUP.
  config_.dkim = fresh->dkim;
  config_.tls_cert_file = fresh->tls_cert_file;
  config_.tls_key_file = fresh->tls_key_file;
  for (const auto& [key, value] : fresh->values) {
    if (absl::StartsWith(key, "dkim.") || absl::StartsWith(key, "tls.") ||
        absl::StartsWith(key, "auth.")) {
      config_.values[key] = value;
    }
  }
  LoadDkim();
  config_.users_file = fresh->users_file;
  LoadUsers();
  bool delivery_changed = false;
  for (const auto& [key, value] : fresh->values) {
    if ((absl::StartsWith(key, "delivery.") ||
         absl::StartsWith(key, "smarthost.")) &&
        IsReloadable(key) && config_.values[key] != value) {
      config_.values[key] = value;
      delivery_changed = true;
    }
  }
  if (delivery_changed && delivery_ != nullptr) {
    // The parts that need a restart (enabled, ca_file) stay as they were.
    delivery::DeliveryOptions options = fresh->delivery;
    options.enabled = config_.delivery.enabled;
    options.ca_file = config_.delivery.ca_file;
    options.dane = config_.delivery.dane;  // Set at start.
    options.verp = config_.delivery.verp;  // Set at start (PrepareBounces).
    {
      absl::MutexLock lock(&delivery_mu_);
      config_.delivery = options;
    }
    PushDelivery();
  }
  // The classification rules are read again (an operator edits the file);
  // a broken file keeps the rules in force.
  if (delivery_ != nullptr) {
    auto classifier = bounce::Classifier::Create(fresh->bounce_rules_file);
    if (!classifier.ok()) {
      log::Error(kLog,
                 "SIGHUP: bounce rules not reloaded, keeping those in "
                 "force: %s",
                 classifier.status().message());
    } else {
      config_.bounce_rules_file = fresh->bounce_rules_file;
      std::shared_ptr<const bounce::Classifier> shared = *classifier;
      {
        absl::MutexLock lock(&classifier_mu_);
        classifier_ = shared;
      }
      for (int i = 0; i < group_->size(); ++i) {
        group_->SubmitTo(i, [this, i, shared] {
          if (delivery_->engines[i] != nullptr) {
            delivery_->engines[i]->SetClassifier(shared);
          }
        });
      }
    }
  }
  // Certificates too are read again (renewed by certbot, say); a bad one
  // keeps the old context in force.
  if (absl::Status s = LoadTls(); !s.ok()) {
    log::Error(kLog,
               "SIGHUP: TLS not reloaded, keeping the old certificate: %s",
               s.message());
  }
}

int Daemon::Run() {
  sigset_t set;
  sigemptyset(&set);
  for (int sig : {SIGTERM, SIGINT, SIGHUP}) sigaddset(&set, sig);
  bool draining = false;
  absl::Time deadline;
  int ticks = 0;
  counter_ = std::thread([this] { CountQueue(); });
  systemd_.Ready(
      absl::StrCat("accepting mail on ", bound_.size(), " listeners"));
  while (true) {
    timespec tick{0, 100 * 1000 * 1000};
    int sig = sigtimedwait(&set, nullptr, &tick);
    systemd_.Tick(absl::Now());
    if (ticks % 100 == 0 && systemd_.active()) {
      absl::MutexLock lock(&counted_mu_);
      if (counted_.has_value()) {
        systemd_.Status(absl::StrCat(
            draining ? "draining; " : "", "queue: ", counted_->messages,
            " messages, ", counted_->all.recipients, " recipients waiting"));
      }
    }
    // Changes to the suppression list from the CLI (suppression_admin.h).
    ++ticks;
    // Suspensions through the API that reached their end.
    if (suspensions_ != nullptr && ticks % 10 == 0 &&
        suspensions_->Expire(absl::Now())) {
      log::Info(kLog, "a suspension through the API ended: resumed");
      PushDelivery();
    }
    ApplySharedSuppressions();
    if (suppression_ != nullptr && ticks % 3 == 0) {
      bounce::ServeRequests(bounce::RequestDir(config_.data_dir),
                            *suppression_);
    }
    if (sig == SIGHUP) {
      if (events_ != nullptr) events_->Reopen();
      Reload();
    } else if (sig == SIGTERM || sig == SIGINT) {
      if (draining) {
        log::Warn(kLog, "second %s: stopping now with %d connections open",
                  sig == SIGTERM ? "SIGTERM" : "SIGINT", OpenConnections());
        break;
      }
      draining = true;
      draining_.store(true);
      deadline = absl::Now() + config_.drain_timeout;
      log::Info(kLog,
                "%s: no longer accepting; draining %d open connections "
                "(up to %s)",
                sig == SIGTERM ? "SIGTERM" : "SIGINT", OpenConnections(),
                absl::FormatDuration(config_.drain_timeout));
      systemd_.Stopping(
          absl::StrCat("draining ", OpenConnections(), " connections"));
      BeginDrain();
    }
    if (draining) {
      if (OpenConnections() == 0) break;
      if (absl::Now() >= deadline) {
        log::Warn(kLog, "drain timeout: closing %d connections",
                  OpenConnections());
        CloseConnections();
        break;
      }
    }
  }
  // Signatures in progress finish and post to their shards, still running;
  // so does the admin API's background work (a queue summary).
  if (signer_ != nullptr) signer_->Stop();
  if (admin_ != nullptr) admin_->Stop();
  {
    absl::MutexLock lock(&counted_mu_);
    counter_stop_ = true;
  }
  if (counter_.joinable()) counter_.join();
  // Redis clients too; the sites' shares fall back to their local part.
  if (cluster_ != nullptr) cluster_->Stop();
  // Resolvers hold sockets in their shard's backend: close them there.
  for (int i = 0; i < group_->size(); ++i) {
    absl::Notification closed;
    group_->SubmitTo(i, [this, i, &closed] {
      shards_[i]->resolver.reset();
      closed.Notify();
    });
    closed.WaitForNotificationWithTimeout(absl::Seconds(5));
  }
  // Fetches in progress are cut; their answers are not delivered.
  sts_fetcher_.reset();
  group_->Stop();
  group_->Join();
  // Connections still open at a drain timeout are dropped with the
  // process; what they carried stays queued and is tried again.
  if (delivery_ != nullptr) delivery_->engines.clear();
  // The queue's answers to reception post to the shards' reactors: every
  // one must be in (a stopped reactor just keeps it) before they go. A
  // queue stuck past the wait keeps them alive rather than let a late
  // answer reach freed memory.
  if (queue_ != nullptr && !queue_->WaitAnswered(absl::Seconds(10))) {
    log::Warn(kLog,
              "queue: writes still unanswered after 10s at shutdown; "
              "stopping without waiting (their clients got no answer and "
              "send again)");
    (void)group_.release();
  } else {
    group_.reset();
    // No reactor is left to call an accept loop back: free those whose
    // cancellation the stopped reactors never delivered.
    AcceptLoop::FreeAll();
  }
  group_.reset();
  // Bounces being read are finished; failures still waiting for their
  // DSNs are written with them.
  if (inbox_ != nullptr) inbox_->Stop();
  if (notifier_ != nullptr) notifier_->Stop();
  if (events_ != nullptr) events_->Flush();  // Every outcome so far.
  queue_.reset();  // Writes what is pending, then closes.
  log::Info(kLog, "stopped");
  return 0;
}

std::shared_ptr<const delivery::DeliveryOptions> Daemon::DeliveryInForce() {
  absl::MutexLock lock(&delivery_mu_);
  auto options = std::make_shared<delivery::DeliveryOptions>(config_.delivery);
  if (suspensions_ != nullptr) {
    for (delivery::SiteRule& r : suspensions_->Rules()) {
      options->rules.push_back(std::move(r));
    }
    options->held_campaigns = suspensions_->Campaigns();
    options->held_tenants = suspensions_->Tenants();
    options->held_messages = suspensions_->Messages();
  }
  return options;
}

void Daemon::PushDelivery() {
  if (delivery_ == nullptr || group_ == nullptr) return;
  std::shared_ptr<const delivery::DeliveryOptions> shared = DeliveryInForce();
  for (int i = 0; i < group_->size(); ++i) {
    group_->SubmitTo(i, [this, i, shared] {
      if (delivery_->engines[i] != nullptr) {
        delivery_->engines[i]->Reload(shared);
      }
    });
  }
}

}  // namespace peregrine
