// Daemon: what `peregrine serve` runs.
//
// Owned by the main thread. Start() prepares the data directory (created if
// missing, locked so that two daemons never share a queue), binds every
// listener on every shard (SO_REUSEPORT: the kernel spreads connections) and
// opens the queue (recovery: everything not yet final is scheduled again)
// and starts the shards. Everything that can fail because of the configuration
// fails there, before any shard runs, with the config key to change.
// Run() then waits for signals on the main thread:
//   SIGTERM, SIGINT  stop accepting, let open connections finish (up to
//                    server.drain_timeout), exit 0; a second one exits now.
//   SIGHUP           re-read the configuration file; apply what can change
//                    at run time, name what needs a restart.
#pragma once

#include <atomic>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "dkim/signing_table.h"
#include "dns/caching_resolver.h"
#include "mta/admin.h"
#include "mta/auth.h"
#include "mta/bounce/classifier.h"
#include "mta/bounce/inbox.h"
#include "mta/bounce/notifier.h"
#include "mta/bounce/suppression.h"
#include "mta/cluster/cluster.h"
#include "mta/config.h"
#include "mta/delivery/engine.h"
#include "mta/local/local_mail.h"
#include "mta/outcome/consumers.h"
#include "mta/outcome/event_log.h"
#include "mta/outcome/metrics.h"
#include "mta/outcome/outcome.h"
#include "mta/outcome/webhook.h"
#include "mta/reception.h"
#include "mta/shard/shard_group.h"
#include "mta/signer.h"
#include "mta/startup_answers.h"
#include "mta/systemd_notify.h"
#include "mta/tls_reporter.h"
#include "queue/rocksdb_store.h"

namespace peregrine {

class Daemon {
 public:
  // `config_path` is empty when running on the built-in defaults;
  // `data_dir_override` (from --data-dir) wins over server.data_dir.
  Daemon(Config config, std::string config_path, std::string data_dir_override);
  ~Daemon();

  // Errors are for the operator: they name the key and what to do.
  absl::Status Start();
  // Blocks until drained; returns the process exit code.
  int Run();

  // A listener socket of one shard, after Start().
  struct Bound {
    ListenerKind kind;
    shard::SocketAddress address;  // With the real port when 0 was asked.
  };
  const std::vector<Bound>& bound() const { return bound_; }

  // The DKIM signing table in force (replaced whole on SIGHUP); reception
  // signs each message once with it before queueing.
  std::shared_ptr<const dkim::SigningTable> dkim() const;

 private:
  struct ShardState;

  absl::Status PrepareDataDir();
  // Binds the listeners, and as root with server.user set, makes or checks
  // the data directory for that user and becomes it before PrepareDataDir.
  absl::Status BindAndDrop();
  absl::Status BindListeners();
  absl::Status OpenQueue();
  void StartAccepting(int shard);
  // Per shard: its resolver, on its own thread.
  void StartShard(shard::Reactor& reactor);
  // The outcome seam: the queue update, the log, the event log.
  absl::Status PrepareBounces();
  // A key in `path` (`key` names its setting), made when missing.
  absl::StatusOr<std::string> LoadSecret(const std::string& path,
                                         absl::string_view key,
                                         absl::string_view what);
  // Own domains and their aliases (mta/local/).
  absl::Status PrepareLocal();
  std::shared_ptr<const bounce::Classifier> Classifier();
  absl::Status PrepareOutcomes();
  // The admin port's answers: tokens (admin.tokens_file), readiness, the
  // metrics and the gauges it renders.
  absl::Status PrepareAdmin();
  // The configuration's delivery options with the API's suspensions after
  // its rules, to every delivery shard.
  void PushDelivery();
  std::shared_ptr<const delivery::DeliveryOptions> DeliveryInForce();
  // Bounce or delete of what the delivery shards hold (admin API): every
  // shard takes what it has of `wanted`; how many were taken.
  size_t TakeFromDelivery(absl::flat_hash_set<RecipientKey> wanted,
                          bool deleted);
  std::string Gauges() const;
  // The queue counted by state and age now and then for /metrics, on a
  // thread of its own: every minute, or 30 times as long as a count takes
  // (a big queue costs at most ~3% of a core). The first count comes 5 s
  // after start, or a minute after it when the queue holds 10,000
  // messages or more.
  void CountQueue();
  std::thread counter_;
  mutable absl::Mutex counted_mu_;
  bool counter_stop_ ABSL_GUARDED_BY(counted_mu_) = false;
  std::optional<queue::QueueCounts> counted_ ABSL_GUARDED_BY(counted_mu_);
  absl::Time counted_at_ ABSL_GUARDED_BY(counted_mu_);
  // The RCPT check: a suppressed address's refusal, or "".
  std::string CheckSuppressed(absl::string_view sender,
                              absl::string_view recipient);
  // [redis] (daemon_cluster.cc): this node's part in a cluster, made
  // before the outcomes (the suppression list tells it its changes).
  absl::Status PrepareCluster();
  // On the main loop: what other nodes changed in the suppression list.
  void ApplySharedSuppressions();
  // The outbound engine's shared context (none when delivery is off).
  absl::Status PrepareDelivery();
  // [tls_report]: the reporter, attached to the outcome bus.
  void StartTlsReports();
  void BeginDrain();
  // At the drain timeout: closes every connection now (bounded wait).
  void CloseConnections();
  void Reload();
  // (Re)reads every DKIM key file and logs what each key will do.
  // Every file the configuration names can be read (exact fix if not).
  absl::Status CheckFilesReadable() const;
  void LoadDkim();
  // (Re)loads the users file for AUTH.
  void LoadUsers();
  // (Re)loads the TLS certificate; a self-signed one when none is set.
  absl::Status LoadTls();
  std::shared_ptr<const tls::ServerContext> tls() const;
  int OpenConnections() const;
  int InboundConnections() const;
  int OutboundConnections() const;

  Config config_;
  std::string config_path_;
  std::string data_dir_override_;
  int lock_fd_ = -1;
  std::unique_ptr<queue::RocksStore> queue_;
  // Outcomes: attached in this order before the shards start.
  // After the queue: destroyed (and stopped) before it.
  std::unique_ptr<bounce::SuppressionList> suppression_;
  std::unique_ptr<bounce::Notifier> notifier_;
  std::optional<bounce::InboxOptions> inbox_options_;
  std::unique_ptr<bounce::BounceInbox> inbox_;
  std::unique_ptr<local::LocalMail> local_;
  SystemdNotifier systemd_;
  // The classification rules in force (SIGHUP replaces them).
  absl::Mutex classifier_mu_;
  std::shared_ptr<const bounce::Classifier> classifier_
      ABSL_GUARDED_BY(classifier_mu_);
  std::unique_ptr<outcome::QueueRecorder> recorder_;
  outcome::HumanLog human_log_;
  std::unique_ptr<StartupAnswers> startup_answers_;
  std::unique_ptr<outcome::EventLog> events_;
  // After the shards stop, each gets its grace to deliver what it holds.
  std::vector<std::unique_ptr<outcome::Webhook>> webhooks_;
  outcome::Metrics metrics_;
  outcome::Bus outcomes_;
  std::unique_ptr<AdminApi> admin_;
  // Sites suspended through the admin API (data_dir/suspensions.json).
  std::unique_ptr<delivery::Suspensions> suspensions_;
  // MTA-STS policies (kept in the queue's side table) and their fetches;
  // the fetcher stops before the shards do.
  // DNSSEC answers (AD) believed: dns.dnssec, and the resolver on loopback
  // or dns.trust_ad. Set before the shards start.
  bool ad_trusted_ = false;
  std::unique_ptr<delivery::StsCache> sts_cache_;
  std::unique_ptr<delivery::StsFetcher> sts_fetcher_;
  // TLS reporting ([tls_report]), an outcome consumer; null when off.
  std::unique_ptr<TlsReporter> tls_reporter_;
  // config_.delivery: SIGHUP (main thread) and the admin API (shards).
  absl::Mutex delivery_mu_;
  std::atomic<bool> draining_{false};
  Authenticator authenticator_;
  std::unique_ptr<ConnectionLimiter> limiter_;
  ReceptionContext reception_;
  // [redis]: null when this node is alone. Stopped before the shards, freed
  // after the delivery engines (their sites hold shares of it).
  std::unique_ptr<cluster::Cluster> cluster_;
  absl::Mutex shared_mu_;
  std::vector<std::pair<bounce::SuppressionEntry, bool>> shared_in_
      ABSL_GUARDED_BY(shared_mu_);
  absl::Time reshare_since_ ABSL_GUARDED_BY(shared_mu_) =
      absl::InfiniteFuture();
  std::unique_ptr<delivery::EngineContext> delivery_;
  std::unique_ptr<shard::ShardGroup> group_;
  std::vector<std::unique_ptr<ShardState>> shards_;
  // DKIM signatures, off the shards; stopped before they are.
  std::unique_ptr<Signer> signer_;
  std::vector<Bound> bound_;
  mutable absl::Mutex dkim_mu_;
  std::shared_ptr<const dkim::SigningTable> dkim_ ABSL_GUARDED_BY(dkim_mu_);
  std::shared_ptr<const tls::ServerContext> tls_ ABSL_GUARDED_BY(dkim_mu_);
};

}  // namespace peregrine
