#include "mta/cluster/cluster.h"

#include <openssl/sha.h>
#include <string.h>

#include <algorithm>
#include <map>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "base/log.h"
#include "mta/cluster/events.h"
#include "mta/cluster/shared_rate.h"
#include "mta/cluster/shared_slots.h"

namespace peregrine::cluster {
namespace {

constexpr char kLog[] = "cluster";
constexpr size_t kFlushBatch = 200;
constexpr int kReadCount = 1000;

struct Script {
  const char* text;
  std::string sha;
  explicit Script(const char* t) : text(t) {
    unsigned char digest[SHA_DIGEST_LENGTH];
    SHA1(reinterpret_cast<const unsigned char*>(text), strlen(text), digest);
    sha = absl::BytesToHexString(absl::string_view(
        reinterpret_cast<const char*>(digest), sizeof(digest)));
  }
};

const Script& Gcra() {
  static const Script* s = new Script(kGcraScript);
  return *s;
}
const Script& Lease() {
  static const Script* s = new Script(kLeaseScript);
  return *s;
}

// The shares of one site: the rates' tokens and the connection leases.
class SiteShareImpl : public delivery::SiteShare {
 public:
  std::unique_ptr<SharedRate> messages;
  std::unique_ptr<SharedRate> connections;
  std::unique_ptr<SharedSlots> slots;

  bool TakeMessage(absl::Time now, absl::Time* wake) override {
    return Take(messages.get(), now, wake);
  }
  bool TakeConnection(absl::Time now, absl::Time* wake) override {
    return Take(connections.get(), now, wake);
  }
  int ConnectionSlots(int wanted, absl::Time now, absl::Time* wake) override {
    return slots->Slots(wanted, now, wake);
  }

 private:
  static bool Take(SharedRate* rate, absl::Time now, absl::Time* wake) {
    if (rate == nullptr || rate->TryTake(now)) return true;
    *wake = std::min(*wake, rate->NextTry(now));
    return false;
  }
};

std::string Field(const bounce::SuppressionEntry& e) {
  return absl::StrCat(e.scope, "\t", absl::AsciiStrToLower(e.address));
}

}  // namespace

// One shard's: its Redis connection, and the stores the shares ask.
class Cluster::ShardLimits : public delivery::SharedLimits,
                             public RateStore,
                             public SlotStore {
 public:
  ShardLimits(Cluster& cluster, int shard, shard::Reactor& reactor)
      : cluster_(cluster),
        holder_(absl::StrCat(cluster.options_.node, "/", shard)),
        client_(std::make_unique<RedisClient>(reactor, cluster.options_.redis,
                                              &cluster.counters_)) {}
  ~ShardLimits() override { *alive_ = false; }

  RedisClient* client() { return client_.get(); }
  // Requests fail from now on; shares fall back to their local part.
  void Close() { client_.reset(); }

  std::unique_ptr<delivery::SiteShare> ForSite(
      const std::string& key, const delivery::SiteOptions& o) override {
    auto share = std::make_unique<SiteShareImpl>();
    int nodes = cluster_.options_.expected_nodes;
    auto m = delivery::TokenBucket::Parse(o.message_rate);
    if (m.ok() && !m->unlimited()) {
      share->messages = std::make_unique<SharedRate>(
          cluster_.Key(absl::StrCat("rate:", key)), m->per_second(), m->burst(),
          nodes, this);
    }
    auto c = delivery::TokenBucket::Parse(o.connection_rate);
    if (c.ok() && !c->unlimited()) {
      share->connections = std::make_unique<SharedRate>(
          cluster_.Key(absl::StrCat("connection-rate:", key)), c->per_second(),
          c->burst(), nodes, this);
    }
    share->slots = std::make_unique<SharedSlots>(
        cluster_.Key(absl::StrCat("connections:", key)), holder_,
        o.max_connections, nodes, this);
    return share;
  }

  void BackedOff(const std::string& key, const delivery::Backoff& b) override {
    if (client_ == nullptr) return;
    std::vector<std::string> command = {
        "XADD", cluster_.Key("events"),      "MAXLEN",
        "~",    absl::StrCat(kStreamLength), "*"};
    for (std::string& f :
         PauseFields(cluster_.options_.node, key, b, absl::Now() + b.pause)) {
      command.push_back(std::move(f));
    }
    client_->Command(std::move(command), [key](absl::StatusOr<RedisValue> r) {
      if (!r.ok()) {
        log::Warn(kLog, "site %s: back-off not shared: %s", key,
                  r.status().message());
      }
    });
  }

  void Reserve(const std::string& key, absl::Duration interval,
               absl::Duration tolerance, int64_t want,
               RateStore::Done done) override {
    Eval(Gcra(), {key},
         {absl::StrCat(absl::ToInt64Microseconds(interval)),
          absl::StrCat(absl::ToInt64Microseconds(tolerance)),
          absl::StrCat(want)},
         [done = std::move(done)](absl::StatusOr<RedisValue> v) mutable {
           if (!v.ok()) return done(v.status());
           if (v->type != RedisValue::Type::kArray || v->elements.size() != 2) {
             return done(absl::InternalError("redis: an unexpected answer"));
           }
           done(Reservation{v->elements[0].integer,
                            absl::Microseconds(v->elements[1].integer)});
         });
  }

  void Hold(const std::string& key, const std::string& holder, int64_t want,
            int64_t max, absl::Duration ttl, SlotStore::Done done) override {
    Eval(Lease(),
         {absl::StrCat(key, ":expiry"), absl::StrCat(key, ":held"),
          absl::StrCat(key, ":wanted")},
         {holder, absl::StrCat(want), absl::StrCat(max),
          absl::StrCat(absl::ToInt64Milliseconds(ttl))},
         [done = std::move(done)](absl::StatusOr<RedisValue> v) mutable {
           if (!v.ok()) return done(v.status());
           done(static_cast<int64_t>(v->integer));
         });
  }

 private:
  // EVALSHA, and EVAL once when Redis does not have the script yet.
  void Eval(const Script& script, std::vector<std::string> keys,
            std::vector<std::string> args, RedisClient::Done done) {
    if (client_ == nullptr) {
      return done(absl::UnavailableError("redis: stopped"));
    }
    std::vector<std::string> command = {"EVALSHA", script.sha,
                                        absl::StrCat(keys.size())};
    for (std::string& k : keys) command.push_back(std::move(k));
    for (std::string& a : args) command.push_back(std::move(a));
    client_->Command(command, [this, alive = alive_, &script, command,
                               done = std::move(done)](
                                  absl::StatusOr<RedisValue> v) mutable {
      if (*alive && !v.ok() &&
          absl::StrContains(v.status().message(), "NOSCRIPT") &&
          client_ != nullptr) {
        command[0] = "EVAL";
        command[1] = script.text;
        return client_->Command(std::move(command), std::move(done));
      }
      done(std::move(v));
    });
  }

  Cluster& cluster_;
  const std::string holder_;
  std::unique_ptr<RedisClient> client_;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

Cluster::Cluster(ClusterOptions options, int shards, ClusterHooks hooks)
    : options_(std::move(options)), hooks_(std::move(hooks)), shards_(shards) {}

Cluster::~Cluster() { *alive_ = false; }

std::string Cluster::Key(absl::string_view name) const {
  return absl::StrCat(options_.prefix, name);
}

delivery::SharedLimits* Cluster::Limits(int shard) {
  Shard& s = shards_[shard];
  if (s.limits == nullptr) {
    s.limits =
        std::make_unique<ShardLimits>(*this, shard, group_->reactor(shard));
  }
  return s.limits.get();
}

RedisClient* Cluster::Client(int shard) {
  Limits(shard);
  return shards_[shard].limits->client();
}

void Cluster::Start() {
  group_->SubmitTo(0, [this] {
    log::Info(kLog,
              "sharing limits, back-off and suppressions through Redis as "
              "node \"%s\" of %d expected (keys \"%s*\")",
              options_.node, options_.expected_nodes, options_.prefix);
    Tick();
  });
}

void Cluster::Stop() {
  for (int i = 0; i < static_cast<int>(shards_.size()); ++i) {
    absl::Notification closed;
    group_->SubmitTo(i, [this, i, &closed] {
      if (i == 0) {
        stopped_ = true;
        if (timer_ != 0) group_->reactor(0).CancelTimer(timer_);
        timer_ = 0;
      }
      if (shards_[i].limits != nullptr) shards_[i].limits->Close();
      closed.Notify();
    });
    closed.WaitForNotificationWithTimeout(absl::Seconds(5));
  }
}

void Cluster::Tick() {
  if (stopped_) return;
  timer_ = group_->reactor(0).AddTimer(options_.poll, [this] {
    timer_ = 0;
    Tick();
  });
  absl::Time now = group_->reactor(0).Now();
  if (!up() && now - logged_ >= absl::Minutes(1)) {
    logged_ = now;
    size_t waiting;
    {
      absl::MutexLock lock(&mu_);
      waiting = outbox_.size();
    }
    log::Warn(
        kLog,
        "redis: unreachable for %s (%s): each shared limit holds "
        "its local share (limit / %d nodes), suppressions are "
        "checked against this node's list; %d suppression changes "
        "wait to be shared",
        absl::FormatDuration(absl::Trunc(now - DownSince(), absl::Seconds(1))),
        Client(0)->last_error(), options_.expected_nodes, waiting);
  }
  if (reading_) return;
  // Entries from other nodes wait to be written here: read no more now.
  bool full = hooks_.backlog && hooks_.backlog() > kMaxBacklog;
  if (!sync_cursor_.empty()) {
    if (!full) SyncPage(sync_cursor_, sync_last_id_);
    return;
  }
  if (last_id_.empty()) return Sync();
  Flush();
  if (!full) Read();
}

void Cluster::Sync() {
  reading_ = true;
  Client(0)->Command(
      {"XREVRANGE", Key("events"), "+", "-", "COUNT", "1"},
      [this, alive = alive_](absl::StatusOr<RedisValue> v) {
        if (!*alive) return;
        if (!v.ok()) {
          reading_ = false;
          return Down(v.status());
        }
        std::string last = "0-0";
        if (!v->elements.empty() && !v->elements[0].elements.empty()) {
          last = v->elements[0].elements[0].str;
        }
        SyncPage("0", last);
      });
}

void Cluster::SyncPage(std::string cursor, std::string last_id) {
  reading_ = true;
  Client(0)->Command(
      {"HSCAN", Key("suppression"), cursor, "COUNT", "1000"},
      [this, alive = alive_, last_id](absl::StatusOr<RedisValue> v) {
        if (!*alive) return;
        if (!v.ok() || v->elements.size() != 2) {
          reading_ = false;
          return Down(v.ok() ? absl::InternalError("HSCAN: unexpected answer")
                             : v.status());
        }
        std::vector<bounce::SuppressionEntry> entries;
        const auto& pairs = v->elements[1].elements;
        for (size_t i = 0; i + 1 < pairs.size(); i += 2) {
          auto e = bounce::ParseCsvLine(pairs[i + 1].str, {});
          if (e.ok() && e->has_value()) entries.push_back(**e);
        }
        if (!entries.empty() && hooks_.suppressions) {
          shared_in_ += entries.size();
          hooks_.suppressions(std::move(entries), false);
        }
        const std::string& next = v->elements[0].str;
        if (next != "0") {
          if (!hooks_.backlog || hooks_.backlog() <= kMaxBacklog) {
            return SyncPage(next, last_id);
          }
          // The next page when the node has written these (Tick).
          reading_ = false;
          sync_cursor_ = next;
          sync_last_id_ = last_id;
          return;
        }
        reading_ = false;
        sync_cursor_.clear();
        last_id_ = last_id;
        Up();
        Flush();
      });
}

void Cluster::Read() {
  reading_ = true;
  Client(0)->Command({"XREAD", "COUNT", absl::StrCat(kReadCount), "STREAMS",
                      Key("events"), last_id_},
                     [this, alive = alive_](absl::StatusOr<RedisValue> v) {
                       if (!*alive) return;
                       reading_ = false;
                       if (!v.ok()) return Down(v.status());
                       Up();
                       EventBatch batch = ParseEvents(*v, absl::Now());
                       if (!batch.last_id.empty()) last_id_ = batch.last_id;
                       std::vector<bounce::SuppressionEntry> added, removed;
                       for (ClusterEvent& e : batch.events) {
                         if (e.node == options_.node) continue;  // Our own.
                         switch (e.type) {
                           case ClusterEvent::Type::kPause:
                             if (hooks_.paused)
                               hooks_.paused(e.site, e.backoff, e.until);
                             break;
                           case ClusterEvent::Type::kSuppress:
                             added.push_back(std::move(e.entry));
                             break;
                           case ClusterEvent::Type::kUnsuppress:
                             removed.push_back(std::move(e.entry));
                             break;
                         }
                       }
                       if (!hooks_.suppressions) return;
                       shared_in_ += added.size() + removed.size();
                       if (!added.empty())
                         hooks_.suppressions(std::move(added), false);
                       if (!removed.empty())
                         hooks_.suppressions(std::move(removed), true);
                     });
}

void Cluster::ShareSuppression(const bounce::SuppressionEntry& entry,
                               bool removed) {
  absl::MutexLock lock(&mu_);
  if (outbox_.size() >= kMaxOutbox) {
    dropped_since_ = std::min(dropped_since_, outbox_.front().entry.added);
    outbox_.pop_front();
  }
  outbox_.push_back({entry, removed});
}

void Cluster::Flush() {
  if (flushing_ || !up()) return;
  std::vector<Change> batch;
  {
    absl::MutexLock lock(&mu_);
    while (!outbox_.empty() && batch.size() < kFlushBatch) {
      batch.push_back(std::move(outbox_.front()));
      outbox_.pop_front();
    }
  }
  if (batch.empty()) return;
  flushing_ = true;
  struct Round {
    std::vector<Change> batch;
    size_t answers = 0;
    absl::Status failure;
  };
  auto round = std::make_shared<Round>();
  round->batch = std::move(batch);
  size_t expected = round->batch.size() * 2;
  auto answered = [this, alive = alive_, round,
                   expected](absl::StatusOr<RedisValue> v) {
    if (!*alive) return;
    if (!v.ok() && round->failure.ok()) round->failure = v.status();
    if (++round->answers < expected) return;
    flushing_ = false;
    if (!round->failure.ok()) {
      {
        absl::MutexLock lock(&mu_);
        for (auto it = round->batch.rbegin(); it != round->batch.rend(); ++it) {
          outbox_.push_front(std::move(*it));
        }
      }
      return Down(round->failure);
    }
    shared_out_ += round->batch.size();
    Flush();
  };
  for (const Change& c : round->batch) {
    std::string csv = bounce::ToCsv(c.entry);
    if (c.removed) {
      Client(0)->Command({"HDEL", Key("suppression"), Field(c.entry)},
                         answered);
    } else {
      Client(0)->Command({"HSET", Key("suppression"), Field(c.entry), csv},
                         answered);
    }
    Client(0)->Command(
        {"XADD", Key("events"), "MAXLEN", "~", absl::StrCat(kStreamLength), "*",
         "t", c.removed ? "unsuppress" : "suppress", "n", options_.node, "v",
         csv},
        answered);
  }
}

absl::Time Cluster::DownSince() const {
  return absl::FromUnixNanos(down_since_ns_.load());
}

void Cluster::Down(const absl::Status& why) {
  last_id_.clear();  // Read the shared list again when it is back.
  sync_cursor_.clear();
  if (!up()) return;
  absl::Time now = group_->reactor(0).Now();
  up_ = false;
  down_since_ns_ = absl::ToUnixNanos(now);
  logged_ = now;
  log::Warn(kLog,
            "redis: unreachable (%s): each shared limit holds its local "
            "share (limit / %d nodes) until it answers again",
            why.message(), options_.expected_nodes);
}

void Cluster::Up() {
  if (up()) return;
  absl::Time now = group_->reactor(0).Now();
  outage_ns_ += absl::ToInt64Nanoseconds(now - DownSince());
  up_ = true;
  log::Info(kLog, "redis: reachable again after %s; sharing resumed",
            absl::FormatDuration(
                absl::Trunc(now - DownSince(), absl::Milliseconds(1))));
  absl::Time since;
  {
    absl::MutexLock lock(&mu_);
    since = dropped_since_;
    dropped_since_ = absl::InfiniteFuture();
  }
  if (since != absl::InfiniteFuture() && hooks_.reshare) hooks_.reshare(since);
}

double Cluster::outage_seconds() const {
  int64_t ns = outage_ns_.load();
  if (!up()) ns += absl::ToUnixNanos(absl::Now()) - down_since_ns_.load();
  return static_cast<double>(ns) / 1e9;
}

}  // namespace peregrine::cluster
