// The daemon's outcome seam and bounce handling: the consumers attached to
// the bus (queue recorder, human log, event log, notifier), the
// classification rules, VERP and its key, the bounce inbox, and the RCPT
// check against the suppression list. Split from daemon.cc, which starts
// and stops everything else.

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "base/files.h"
#include "base/log.h"
#include "mta/daemon.h"
#include "mta/transfer.h"
#include "mta/version.h"

namespace peregrine {
namespace {

constexpr const char* kLog = "daemon";

}  // namespace

std::shared_ptr<const bounce::Classifier> Daemon::Classifier() {
  absl::MutexLock lock(&classifier_mu_);
  return classifier_;
}

absl::Status Daemon::PrepareBounces() {
  auto classifier = bounce::Classifier::Create(config_.bounce_rules_file);
  if (!classifier.ok()) {
    return absl::Status(classifier.status().code(),
                        absl::StrCat(config_.Where("bounce.rules_file"), ": ",
                                     classifier.status().message()));
  }
  {
    absl::MutexLock lock(&classifier_mu_);
    classifier_ = *classifier;
  }
  if (config_.bounce_verp_domain.empty() && config_.bounce_domains.empty()) {
    return absl::OkStatus();
  }
  bounce::InboxOptions in;
  in.verp.domain = config_.bounce_verp_domain;
  in.verp.prefix = config_.bounce_verp_prefix;
  if (!in.verp.domain.empty()) {
    auto secret =
        LoadSecret(config_.VerpSecretPath(), "bounce.verp_secret_file", "VERP");
    if (!secret.ok()) return secret.status();
    in.verp.secret = *secret;
    config_.delivery.verp =
        std::make_shared<const bounce::VerpOptions>(in.verp);
    log::Info(kLog,
              "bounce: VERP return paths %s+TOKEN@%s (one recipient per "
              "transaction)",
              in.verp.prefix, in.verp.domain);
  }
  in.domains = config_.bounce_domains;
  for (const std::string& c : config_.suppression_categories) {
    if (auto category = bounce::ParseCategory(c))
      in.suppress.push_back(*category);
  }
  in.suppress_for = config_.suppression_expiry;
  in.classifier = [this] { return Classifier(); };
  std::vector<std::string> domains = config_.bounce_domains;
  if (!in.verp.domain.empty()) domains.insert(domains.begin(), in.verp.domain);
  // The suppression list is made in PrepareOutcomes; the inbox reads it
  // through this pointer once it exists.
  inbox_options_ = std::move(in);
  log::Info(kLog, "bounce: reading bounces and complaints sent to %s",
            absl::StrJoin(domains, ", "));
  return absl::OkStatus();
}

absl::StatusOr<std::string> Daemon::LoadSecret(const std::string& path,
                                               absl::string_view key,
                                               absl::string_view what) {
  std::string where = config_.Where(key);
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    if (std::filesystem::exists(path)) {
      return absl::PermissionDeniedError(
          absl::StrCat(where, ": cannot read ", path,
                       ": let the user peregrine runs as read it"));
    }
    std::string secret = bounce::NewVerpSecret();
    int fd =
        ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0 ||
        ::write(fd, secret.data(), secret.size()) !=
            static_cast<ssize_t>(secret.size()) ||
        ::fsync(fd) != 0) {
      if (fd >= 0) ::close(fd);
      return absl::PermissionDeniedError(
          absl::StrCat(where, ": cannot create ", path, ": ", strerror(errno)));
    }
    ::close(fd);
    log::Info(kLog,
              "made a new %s key in %s (keep it; nodes that share the "
              "domain need the same one)",
              what, path);
    return secret;
  }
  std::stringstream text;
  text << in.rdbuf();
  std::string secret(absl::StripAsciiWhitespace(text.str()));
  if (secret.size() < 16) {
    return absl::InvalidArgumentError(absl::StrCat(
        where, ": ", path, " holds less than 16 characters; a ", what,
        " key needs more (delete it "
        "to have a new one made)"));
  }
  return secret;
}

absl::Status Daemon::PrepareLocal() {
  if (config_.local_domains.empty()) return absl::OkStatus();
  for (const std::string& d : config_.local_domains) {
    bool bounce = d == config_.bounce_verp_domain;
    for (const std::string& b : config_.bounce_domains) bounce |= d == b;
    if (bounce) {
      return absl::InvalidArgumentError(absl::StrCat(
          config_.Where("local.domains"), ": ", d,
          " is a bounce domain too (bounce.verp_domain or bounce.domains); "
          "its mail would be read as bounces: keep it in one list"));
    }
  }
  local::LocalOptions o;
  o.domains = config_.local_domains;
  o.aliases_dir = config_.AliasesDir();
  o.srs = config_.local_srs;
  if (o.srs) {
    auto secret =
        LoadSecret(config_.SrsSecretPath(), "local.srs_secret_file", "SRS");
    if (!secret.ok()) return secret.status();
    o.srs_options.domain = config_.SrsDomain();
    o.srs_options.secret = *secret;
  }
  local_ = std::make_unique<local::LocalMail>(o);
  if (absl::Status s = local_->Load(); !s.ok()) {
    return absl::Status(
        s.code(),
        absl::StrCat(config_.Where("local.aliases_dir"), ": ", s.message()));
  }
  reception_.local = local_.get();
  log::Info(kLog, "local: mail for %s is forwarded by the aliases in %s%s",
            absl::StrJoin(config_.local_domains, ", "), o.aliases_dir,
            o.srs ? absl::StrCat(", return paths rewritten by SRS at ",
                                 o.srs_options.domain)
                  : "");
  return absl::OkStatus();
}

absl::Status Daemon::PrepareOutcomes() {
  if (config_.suppression_enabled) {
    suppression_ =
        std::make_unique<bounce::SuppressionList>(queue_->SideTable());
    if (cluster_ != nullptr) {
      suppression_->SetObserver(
          [this](const bounce::SuppressionEntry& e, bool removed) {
            cluster_->ShareSuppression(e, removed);
          });
    }
    reception_.check_recipient = [this](absl::string_view sender,
                                        absl::string_view recipient) {
      return CheckSuppressed(sender, recipient);
    };
  }
  bounce::NotifierOptions n;
  n.hostname = config_.EffectiveHostname();
  n.dsn = config_.bounce_dsn;
  n.no_dsn_listeners = config_.bounce_no_dsn_listeners;
  n.no_dsn_sender_domains = config_.bounce_no_dsn_sender_domains;
  n.delay_after = config_.bounce_delay_dsn_after;
  n.delay_listeners = config_.bounce_delay_dsn_listeners;
  n.full_limit = config_.bounce_dsn_full_limit;
  n.shard_for_domain =
      [shards = static_cast<int>(shards_.size())](absl::string_view domain) {
        return static_cast<uint16_t>(ShardForDomain(domain, shards));
      };
  for (const std::string& c : config_.suppression_categories) {
    if (auto category = bounce::ParseCategory(c))
      n.suppress.push_back(*category);
  }
  n.suppress_scope = config_.suppression_scope;
  n.suppress_for = config_.suppression_expiry;
  notifier_ = std::make_unique<bounce::Notifier>(queue_.get(), &outcomes_,
                                                 suppression_.get(), n);
  if (inbox_options_.has_value()) {
    inbox_ = std::make_unique<bounce::BounceInbox>(*inbox_options_, &outcomes_,
                                                   suppression_.get());
    reception_.bounce_domain = [this](absl::string_view domain) {
      return inbox_->IsBounceDomain(domain);
    };
    reception_.read_bounce =
        [this](std::string message, std::vector<std::string> recipients,
               std::string client,
               absl::AnyInvocable<void(absl::Status, std::string)> done) {
          inbox_->Submit(std::move(message), std::move(recipients),
                         std::move(client), std::move(done));
        };
  }
  recorder_ =
      std::make_unique<outcome::QueueRecorder>(queue_.get(), notifier_.get());
  outcomes_.Attach(recorder_.get());
  outcomes_.Attach(&human_log_);
  outcomes_.Attach(&metrics_);
  log::Info(kLog, "bounces: DSNs %s; suppression list %s",
            !config_.bounce_dsn ? "off"
            : config_.bounce_delay_dsn_after > absl::ZeroDuration()
                ? absl::StrCat(
                      "on (delay notices after ",
                      absl::FormatDuration(config_.bounce_delay_dsn_after), ")")
                : std::string("on (no delay notices)"),
            config_.suppression_enabled
                ? absl::StrCat(
                      "on (",
                      absl::StrJoin(config_.suppression_categories, ", "), ")")
                : std::string("off"));
  for (const Config::Webhook& w : config_.admin_webhooks) {
    std::string where = config_.Where("admin.webhooks");
    std::string key_path =
        w.secret_file[0] == '/'
            ? w.secret_file
            : absl::StrCat(config_.data_dir, "/", w.secret_file);
    std::ifstream in(key_path, std::ios::binary);
    if (!in) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ": webhook ", w.name, ": cannot read ", key_path,
                       ": ", CannotReadReason(key_path, errno)));
    }
    std::stringstream text;
    text << in.rdbuf();
    std::string secret(absl::StripAsciiWhitespace(text.str()));
    if (secret.size() < 16) {
      return absl::InvalidArgumentError(absl::StrCat(
          where, ": webhook ", w.name, ": ", key_path,
          " holds less than 16 characters; a signing key needs more (`openssl "
          "rand -hex 32 > ",
          key_path, "`)"));
    }
    outcome::WebhookOptions o;
    o.name = w.name;
    o.url = w.url;
    o.secret = std::move(secret);
    for (const std::string& e : w.events) {
      if (auto kind = outcome::ParseKind(e)) o.kinds.push_back(*kind);
    }
    o.batch = static_cast<size_t>(w.batch);
    o.max_held = static_cast<size_t>(w.max_held);
    o.timeout = w.timeout;
    auto hook = outcome::Webhook::Create(std::move(o));
    if (!hook.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(
          where, ": webhook ", w.name, ": ", hook.status().message()));
    }
    outcomes_.Attach(hook->get());
    log::Info(
        kLog, "webhook %s: events %s to %s", w.name,
        w.events.empty() ? "of every type" : absl::StrJoin(w.events, ", "),
        w.url);
    webhooks_.push_back(*std::move(hook));
  }
  std::string path = config_.EventsFilePath();
  if (path.empty() && !config_.events_stdout) {
    outcomes_.Attach(notifier_.get());
    return absl::OkStatus();
  }
  outcome::EventLogOptions o;
  o.path = path;
  o.to_stdout = config_.events_stdout;
  o.max_size = config_.events_max_bytes;
  o.keep = config_.events_keep;
  o.shards = static_cast<int>(shards_.size());
  auto events = outcome::EventLog::Open(o);
  if (!events.ok()) {
    return absl::Status(events.status().code(),
                        absl::StrCat(config_.Where("events.path"), ": ",
                                     events.status().message()));
  }
  events_ = *std::move(events);
  outcomes_.Attach(events_.get());
  outcomes_.Attach(notifier_.get());
  log::Info(kLog, "events: writing to %s",
            config_.events_stdout ? "standard output" : path);
  return absl::OkStatus();
}

std::string Daemon::CheckSuppressed(absl::string_view sender,
                                    absl::string_view recipient) {
  auto found = suppression_->Find(recipient, "", "", absl::Now());
  if (!found.ok()) {
    // The list cannot be read: the mail goes (as it would without one).
    log::Warn(kLog, "suppression list: %s", found.status().message());
    return "";
  }
  if (!found->has_value()) return "";
  outcome::Outcome o;
  o.kind = outcome::Kind::kSuppressionHit;
  o.time = absl::Now();
  o.sender = std::string(sender);
  o.recipient = std::string(recipient);
  o.reason = absl::StrCat(
      "refused at RCPT: suppressed since ",
      absl::FormatTime("%Y-%m-%d", (*found)->added, absl::UTCTimeZone()), " (",
      (*found)->category, ", ", (*found)->source,
      (*found)->scope.empty() ? "" : ", ", (*found)->scope, ")");
  std::string refusal = bounce::SuppressedReply(recipient, **found);
  o.reply = Reply::Parse(refusal);
  outcomes_.Publish(o);
  return refusal;
}

absl::Status Daemon::PrepareAdmin() {
  AdminOptions options;
  for (const ListenerConfig& l : config_.listeners) {
    if (l.kind != ListenerKind::kAdmin || config_.admin_tls) continue;
    for (const auto& a : l.addresses) {
      if (a.IsLoopback()) continue;
      log::Warn(kLog,
                "%s: %s is not loopback and admin.tls is off: bearer tokens "
                "and queue data cross the network in the clear (set "
                "admin.tls = true)",
                config_.Where(l.key), a.ToString());
    }
  }
  if (!config_.admin_tokens_file.empty()) {
    std::string path = config_.admin_tokens_file;
    if (path[0] != '/') path = absl::StrCat(config_.data_dir, "/", path);
    std::ifstream in(path);
    if (!in) {
      return absl::InvalidArgumentError(
          absl::StrCat(config_.Where("admin.tokens_file"), ": cannot read ",
                       path, ": ", CannotReadReason(path, errno)));
    }
    std::string line;
    for (int n = 1; std::getline(in, line); ++n) {
      absl::string_view token = absl::StripAsciiWhitespace(line);
      if (token.empty() || token[0] == '#') continue;
      if (token.size() < 16 || absl::StrContains(token, ' ')) {
        return absl::InvalidArgumentError(absl::StrCat(
            path, ":", n,
            ": a token needs at least 16 characters and no spaces (make one "
            "with `openssl rand -hex 32`)"));
      }
      options.tokens.emplace_back(token);
    }
    if (options.tokens.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(
          config_.Where("admin.tokens_file"), ": ", path,
          " has no tokens; add one per line (`openssl rand -hex 32`)"));
    }
  }
  options.ready = [this](std::string* why) {
    if (draining_.load()) {
      *why = "draining: the daemon is stopping";
      return false;
    }
    if (!queue_->AcceptingNewMail()) {
      *why =
          "the queue refuses new mail: the disk is below queue.min_free "
          "(see the log)";
      return false;
    }
    return true;
  };
  options.gauges = [this] { return Gauges(); };
  options.metrics = &metrics_;
  options.reception = &reception_;
  options.outcomes = &outcomes_;
  const absl::Time started = absl::Now();
  options.status = [this, started] {
    nlohmann::json s = metrics_.Status();
    s["version"] = kVersion;
    s["uptime_s"] = absl::ToDoubleSeconds(absl::Now() - started);
    s["queue"] = {{"messages", queue_->LiveMessages()},
                  {"accepting", queue_->AcceptingNewMail()}};
    s["connections"] = std::max(0, OpenConnections());
    return s;
  };
  options.summary = [this]() -> absl::StatusOr<nlohmann::json> {
    absl::StatusOr<queue::QueueCounts> c = queue_->Counts();
    if (!c.ok()) return c.status();
    nlohmann::json by_state = nlohmann::json::object();
    for (int i = 0; i < 5; ++i) {
      by_state[std::string(queue::StateName(
          static_cast<queue::RecipientState>(i)))] = c->by_state[i];
    }
    // Age buckets like qshape's: "0" (under 5 minutes), "5", ... "1280+".
    auto ages = [](const queue::QueueCounts::Group& g) {
      nlohmann::json out = nlohmann::json::object();
      for (int b = 0; b < queue::kAgeBuckets; ++b) {
        out[absl::StrCat(queue::kAgeBucketStart[b],
                         b + 1 == queue::kAgeBuckets ? "+" : "")] = g.ages[b];
      }
      return out;
    };
    // The busiest first, at most 100 of each.
    auto top =
        [&ages](
            std::vector<std::pair<std::string, queue::QueueCounts::Group>> v,
            const char* key) {
          std::sort(v.begin(), v.end(), [](const auto& a, const auto& b) {
            return a.second.recipients != b.second.recipients
                       ? a.second.recipients > b.second.recipients
                       : a.first < b.first;
          });
          if (v.size() > 100) v.resize(100);
          nlohmann::json out = nlohmann::json::array();
          for (const auto& [name, g] : v) {
            out.push_back(
                {{key, name}, {"recipients", g.recipients}, {"ages", ages(g)}});
          }
          return out;
        };
    using queue::RecipientState;
    return nlohmann::json{
        {"messages", c->messages},
        {"recipients", c->recipients},
        {"by_state", by_state},
        {"age_minutes", ages(c->all)},
        {"by_site", top(c->by_site, "site")},
        {"by_domain", top(c->by_domain, "domain")},
        {"by_campaign", top(c->by_campaign, "campaign")},
        {"by_tenant", top(c->by_tenant, "tenant")},
        {"finished",
         {{"delivered",
           c->totals[static_cast<int>(RecipientState::kDelivered)]},
          {"failed", c->totals[static_cast<int>(RecipientState::kFailed)]},
          {"expired", c->totals[static_cast<int>(RecipientState::kExpired)]}}}};
  };
  options.message =
      [this](queue::MessageId id) -> absl::StatusOr<nlohmann::json> {
    absl::StatusOr<queue::StoredMessage> m = queue_->Lookup(id);
    if (!m.ok()) return m.status();
    auto time = [](absl::Time t) {
      return absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", t, absl::UTCTimeZone());
    };
    const queue::Envelope& e = m->envelope;
    nlohmann::json recipients = nlohmann::json::array();
    for (const queue::RecipientRecord& r : m->recipients) {
      nlohmann::json j = {
          {"index", r.index},
          {"recipient", r.spec.address},
          {"site", r.spec.site},
          {"state", queue::StateName(r.state)},
          {"attempts", r.attempts},
          {"last_reply", r.last_reply.code == 0
                             ? nlohmann::json(nullptr)
                             : nlohmann::json(r.last_reply.ToString())}};
      if (!queue::IsFinal(r.state)) j["next_attempt"] = time(r.next_attempt);
      if (r.held > absl::ZeroDuration()) {
        j["held_s"] = absl::ToInt64Seconds(r.held);
      }
      recipients.push_back(std::move(j));
    }
    return nlohmann::json{{"id", queue::FormatMessageId(m->id)},
                          {"finished", m->finished},
                          {"sender", e.sender},
                          {"received", time(e.received)},
                          {"size", e.body_bytes},
                          {"campaign", e.campaign},
                          {"tenant", e.tenant},
                          {"listener", e.listener},
                          {"client", e.client_address},
                          {"auth_user", e.auth_user},
                          {"tls", e.tls},
                          {"recipients", recipients}};
  };
  if (delivery_ != nullptr) {
    options.suspensions = suspensions_.get();
    options.apply_suspensions = [this] { PushDelivery(); };
    options.queue_action = [this](QueueAction action,
                                  const QueueSelection& selection,
                                  std::function<bool()> cancelled) {
      QueueActionContext c;
      c.cancelled = std::move(cancelled);
      c.store = queue_.get();
      c.outcomes = &outcomes_;
      c.dsn_backlog = [this] {
        return notifier_ != nullptr ? notifier_->waiting() : size_t{0};
      };
      c.take_from_delivery = [this](absl::flat_hash_set<RecipientKey> wanted,
                                    bool deleted) {
        return TakeFromDelivery(std::move(wanted), deleted);
      };
      c.relay_to = [this](const std::string& to) -> RelayFn {
        auto t = std::make_shared<Transferor>(
            to, config_.EffectiveHostname(),
            cluster_ != nullptr ? cluster_->options().node
                                : config_.EffectiveHostname());
        return [t](const queue::StoredMessage& m,
                   const std::vector<queue::RecipientRecord>& rs) {
          return t->Relay(m, rs);
        };
      };
      return RunQueueAction(c, action, selection);
    };
  }
  admin_ = std::make_unique<AdminApi>(std::move(options));
  return absl::OkStatus();
}

size_t Daemon::TakeFromDelivery(absl::flat_hash_set<RecipientKey> wanted,
                                bool deleted) {
  if (delivery_ == nullptr || group_ == nullptr) return 0;
  // Shared with the shards' closures: one that runs after the wait gave up
  // (a shard stuck, the daemon stopping) still finds it.
  struct Tally {
    absl::flat_hash_set<RecipientKey> wanted;
    absl::Mutex mu;
    size_t taken ABSL_GUARDED_BY(mu) = 0;
    int answered ABSL_GUARDED_BY(mu) = 0;
  };
  auto tally = std::make_shared<Tally>();
  tally->wanted = std::move(wanted);
  const int shards = group_->size();
  for (int i = 0; i < shards; ++i) {
    group_->SubmitTo(i, [this, i, tally, deleted] {
      size_t n =
          delivery_->engines[i] != nullptr
              ? delivery_->engines[i]->TakeForOperator(tally->wanted, deleted)
              : 0;
      absl::MutexLock lock(&tally->mu);
      tally->taken += n;
      ++tally->answered;
    });
  }
  absl::MutexLock lock(&tally->mu);
  auto all = [&tally, shards]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(tally->mu) {
    return tally->answered == shards;
  };
  tally->mu.AwaitWithTimeout(absl::Condition(&all), absl::Seconds(30));
  return tally->taken;
}

void Daemon::CountQueue() {
  // The first count soon after start while the queue is small; a big one
  // (a scan reads every waiting message's envelope) waits a minute, so
  // that a restart under load is not slowed by it.
  absl::Duration wait = absl::Seconds(5);
  bool first = true;
  for (;;) {
    {
      absl::MutexLock lock(&counted_mu_);
      auto stop = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(counted_mu_) {
        return counter_stop_;
      };
      if (counted_mu_.AwaitWithTimeout(absl::Condition(&stop), wait)) return;
    }
    if (first && queue_->LiveMessages() >= 10000) {
      first = false;
      wait = absl::Seconds(55);
      continue;
    }
    first = false;
    absl::Time began = absl::Now();
    absl::StatusOr<queue::QueueCounts> c = queue_->Counts();
    absl::Duration took = absl::Now() - began;
    wait = std::max(absl::Minutes(1), took * 30);
    if (!c.ok()) continue;
    absl::MutexLock lock(&counted_mu_);
    counted_ = *std::move(c);
    counted_at_ = absl::Now();
  }
}

std::string Daemon::Gauges() const {
  std::string out;
  auto metric = [&out](absl::string_view name, absl::string_view type,
                       absl::string_view help, uint64_t value) {
    absl::StrAppend(&out, "# HELP ", name, " ", help, "\n# TYPE ", name, " ",
                    type, "\n", name, " ", value, "\n");
  };
  metric("peregrine_queue_messages", "gauge",
         "Messages in the queue (any recipient not yet final).",
         queue_->LiveMessages());
  metric("peregrine_queue_accepting", "gauge",
         "1 while the queue takes new mail; 0 below the free-space floor.",
         queue_->AcceptingNewMail() ? 1 : 0);
  metric("peregrine_queue_commits_total", "counter",
         "Group commits written to the queue.", queue_->commits());
  metric("peregrine_connections_open", "gauge",
         "Connections open, inbound and outbound.",
         static_cast<uint64_t>(std::max(0, OpenConnections())));
  {
    uint64_t in = static_cast<uint64_t>(std::max(0, InboundConnections()));
    uint64_t out_conns =
        static_cast<uint64_t>(std::max(0, OutboundConnections()));
    absl::StrAppend(&out,
                    "# HELP peregrine_connections Connections open now, by "
                    "direction.\n# TYPE peregrine_connections gauge\n"
                    "peregrine_connections{direction=\"in\"} ",
                    in, "\nperegrine_connections{direction=\"out\"} ",
                    out_conns, "\n");
  }
  absl::StrAppend(&out, queue_->commit_seconds().Render(
                            "peregrine_queue_commit_seconds",
                            "Group commits: time to disk (spool write and "
                            "sync, RocksDB write)."));
  absl::StrAppend(&out, queue_->commit_writes().Render(
                            "peregrine_queue_commit_writes",
                            "Group commits: writes (enqueues, updates) each "
                            "carried."));
  if (signer_ != nullptr) {
    absl::StrAppend(
        &out,
        "# HELP peregrine_dkim_messages_total Messages DKIM-signed, and "
        "those no signature could be made for.\n# TYPE "
        "peregrine_dkim_messages_total counter\n"
        "peregrine_dkim_messages_total{result=\"signed\"} ",
        signer_->signed_messages(),
        "\nperegrine_dkim_messages_total{result=\"failed\"} ",
        signer_->failed(), "\n");
  }
  if (group_ != nullptr) {
    absl::StrAppend(&out,
                    "# HELP peregrine_shard_busy_seconds_total Time each "
                    "shard's loop spent working (its rate: the loop's "
                    "utilisation, 0 to 1).\n# TYPE "
                    "peregrine_shard_busy_seconds_total counter\n");
    for (int i = 0; i < group_->size(); ++i) {
      absl::StrAppend(&out, "peregrine_shard_busy_seconds_total{shard=\"", i,
                      "\"} ", absl::ToDoubleSeconds(group_->reactor(i).busy()),
                      "\n");
    }
  }
  queue::Spool::DiskUse spool = queue_->SpoolUsage();
  metric("peregrine_spool_bytes", "gauge",
         "Bytes of spool segment files on disk, spares included.", spool.bytes);
  metric("peregrine_spool_segments", "gauge",
         "Spool segment files on disk, spares included.",
         spool.segments + spool.spares);
  {
    absl::MutexLock lock(&counted_mu_);
    if (counted_.has_value()) {
      absl::StrAppend(
          &out,
          "# HELP peregrine_queue_recipients Recipients in the queue by "
          "state, as last counted (peregrine_queue_counted_timestamp_"
          "seconds).\n# TYPE peregrine_queue_recipients gauge\n");
      for (int i = 0; i < 2; ++i) {  // queued, deferred: not final.
        absl::StrAppend(&out, "peregrine_queue_recipients{state=\"",
                        queue::StateName(static_cast<queue::RecipientState>(i)),
                        "\"} ", counted_->by_state[i], "\n");
      }
      absl::StrAppend(
          &out,
          "# HELP peregrine_queue_recipients_by_age Recipients not yet final "
          "by their message's age, qshape's buckets (minutes: at least "
          "`minutes`, less than the next bucket's).\n# TYPE "
          "peregrine_queue_recipients_by_age gauge\n");
      for (int b = 0; b < queue::kAgeBuckets; ++b) {
        absl::StrAppend(&out, "peregrine_queue_recipients_by_age{minutes=\"",
                        queue::kAgeBucketStart[b], "\"} ",
                        counted_->all.ages[b], "\n");
      }
      absl::StrAppend(
          &out,
          "# HELP peregrine_queue_counted_timestamp_seconds When the queue "
          "was last counted.\n# TYPE peregrine_queue_counted_timestamp_"
          "seconds gauge\nperegrine_queue_counted_timestamp_seconds ",
          absl::ToUnixSeconds(counted_at_), "\n");
    }
  }
  metric("peregrine_events_dropped_total", "counter",
         "Event log lines dropped (the file could not be written).",
         events_ != nullptr ? events_->dropped() : 0);
  if (!webhooks_.empty()) {
    auto each = [&](absl::string_view name, absl::string_view type,
                    absl::string_view help, auto value) {
      absl::StrAppend(&out, "# HELP ", name, " ", help, "\n# TYPE ", name, " ",
                      type, "\n");
      for (const auto& w : webhooks_) {
        absl::StrAppend(&out, name, "{webhook=\"", w->options().name, "\"} ",
                        value(*w), "\n");
      }
    };
    each("peregrine_webhook_events_sent_total", "counter",
         "Events a webhook's receiver took (2xx).",
         [](const outcome::Webhook& w) { return w.sent(); });
    each("peregrine_webhook_events_dropped_total", "counter",
         "Events dropped: more than max_held waited, or held at the stop.",
         [](const outcome::Webhook& w) { return w.dropped(); });
    each("peregrine_webhook_failures_total", "counter",
         "POSTs the receiver refused or that failed (each sent again).",
         [](const outcome::Webhook& w) { return w.failures(); });
    each("peregrine_webhook_events_held", "gauge",
         "Events waiting for the receiver.",
         [](const outcome::Webhook& w) { return w.held(); });
  }
  if (cluster_ != nullptr) {
    metric("peregrine_redis_up", "gauge",
           "1 while Redis answers ([redis]); 0: each shared limit holds its "
           "local share.",
           cluster_->up() ? 1 : 0);
    metric("peregrine_redis_commands_total", "counter",
           "Commands sent to Redis, every shard.", cluster_->commands());
    metric("peregrine_redis_failures_total", "counter",
           "Commands that failed or were not sent (Redis down, slow, an "
           "error).",
           cluster_->failures());
    absl::StrAppend(
        &out,
        "# HELP peregrine_redis_outage_seconds_total Time Redis was "
        "unreachable.\n# TYPE peregrine_redis_outage_seconds_total "
        "counter\nperegrine_redis_outage_seconds_total ",
        cluster_->outage_seconds(), "\n");
    absl::StrAppend(
        &out,
        "# HELP peregrine_suppressions_shared_total Suppression list "
        "changes sent to and received from the other nodes.\n# TYPE "
        "peregrine_suppressions_shared_total counter\n"
        "peregrine_suppressions_shared_total{direction=\"out\"} ",
        cluster_->shared_out(),
        "\nperegrine_suppressions_shared_total{direction=\"in\"} ",
        cluster_->shared_in(), "\n");
  }
  return out;
}

}  // namespace peregrine
