// The delivery engine on a real shard against a fake queue, a fake
// resolver and a scripted SMTP server on loopback: every recipient's
// outcome, structured, through the outcome bus and into the queue. Waits
// are for a condition with a deadline, never a fixed sleep.
#include "mta/delivery/engine.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "mta/outcome/consumers.h"
#include "mta/shard/shard_group.h"
#include "mta/shard/socket.h"
#include "tests/queue/null_store.h"

namespace peregrine::delivery {
namespace {

// Hands out its recipients once; keeps every update.
class FakeStore : public queue::NullStore {
 public:
  void Add(queue::MessageId id, std::vector<std::string> recipients,
           absl::Duration age = absl::Seconds(1)) {
    std::lock_guard<std::mutex> lock(mu_);
    received_[id] = absl::Now() - age;
    for (size_t i = 0; i < recipients.size(); ++i) {
      queue::RecipientRecord r;
      r.message = id;
      r.index = static_cast<uint32_t>(i);
      r.spec.address = recipients[i];
      due_.push_back(r);
    }
  }
  absl::StatusOr<std::vector<queue::RecipientRecord>> Claim(
      int, absl::Time, size_t limit) override {
    std::lock_guard<std::mutex> lock(mu_);
    std::vector<queue::RecipientRecord> out;
    while (!due_.empty() && out.size() < limit) {
      out.push_back(due_.front());
      due_.erase(due_.begin());
    }
    return out;
  }
  absl::StatusOr<queue::StoredMessage> Read(queue::MessageId id,
                                            bool with_body) override {
    std::lock_guard<std::mutex> lock(mu_);
    queue::StoredMessage m;
    m.id = id;
    m.envelope.sender = "news@src.test";
    m.envelope.campaign = "c1";
    m.envelope.received = received_[id];
    m.envelope.body_bytes = 26;
    if (with_body) m.body = "Subject: hi\r\n\r\nhello\r\n";
    return m;
  }
  void Update(queue::RecipientUpdate u, Done done) override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      updates_.push_back(u);
    }
    done(absl::OkStatus());
  }
  size_t updates() {
    std::lock_guard<std::mutex> lock(mu_);
    return updates_.size();
  }

 private:
  std::mutex mu_;
  std::vector<queue::RecipientRecord> due_;
  std::map<queue::MessageId, absl::Time> received_;
  std::vector<queue::RecipientUpdate> updates_;
};

class Collect : public outcome::Consumer {
 public:
  void OnOutcome(const outcome::Outcome& o) override {
    std::lock_guard<std::mutex> lock(mu_);
    all_.push_back(o);
  }
  std::vector<outcome::Outcome> all() {
    std::lock_guard<std::mutex> lock(mu_);
    return all_;
  }
  // Waits (up to 10 s) until there are `n`.
  std::vector<outcome::Outcome> WaitFor(size_t n) {
    absl::Time deadline = absl::Now() + absl::Seconds(10);
    while (absl::Now() < deadline) {
      if (all().size() >= n) break;
      absl::SleepFor(absl::Milliseconds(5));
    }
    return all();
  }

 private:
  std::mutex mu_;
  std::vector<outcome::Outcome> all_;
};

// MX and addresses from a table; answers come later on the shard, as
// c-ares' do.
class FakeResolver : public dns::Resolver {
 public:
  // `txt`: TXT records by name (the rest: none); outlives the resolver.
  FakeResolver(shard::Reactor& reactor,
               const std::map<std::string, std::vector<std::string>>* txt)
      : reactor_(reactor), txt_(txt) {}
  void Mx(std::string domain,
          Callback<std::vector<dns::MxHost>> done) override {
    absl::StatusOr<std::vector<dns::MxHost>> answer;
    if (domain == "nullmx.test") {
      answer = absl::FailedPreconditionError("null MX");
    } else if (domain == "nx.test") {
      answer = absl::NotFoundError("NXDOMAIN");
    } else if (domain == "servfail.test") {
      answer = absl::UnavailableError("SERVFAIL");
    } else {
      answer = std::vector<dns::MxHost>{{"mx." + domain, 10, false}};
    }
    reactor_.Defer(
        [done = std::move(done), answer]() mutable { done(answer); });
  }
  void Addresses(std::string, Callback<dns::HostAddresses> done) override {
    dns::HostAddresses a;
    a.v4.push_back(*dns::IpAddress::Parse("127.0.0.1"));
    reactor_.Defer([done = std::move(done), a]() mutable { done(a); });
  }
  void Ptr(dns::IpAddress, Callback<std::vector<std::string>> done) override {
    done(absl::NotFoundError("none"));
  }
  void Txt(std::string name, Callback<std::vector<std::string>> done) override {
    auto it = txt_->find(name);
    if (it == txt_->end()) return done(absl::NotFoundError("none"));
    reactor_.Defer([done = std::move(done), records = it->second]() mutable {
      done(records);
    });
  }
  void Tlsa(std::string, Callback<dns::TlsaAnswer> done) override {
    done(dns::TlsaAnswer{});
  }

 private:
  shard::Reactor& reactor_;
  const std::map<std::string, std::vector<std::string>>* txt_;
};

// One thread; each connection gets `greeting`, then a reply per command
// line: RCPT replies by recipient (default 250), the rest fixed. `silent`:
// nothing after the greeting.
class ScriptedServer {
 public:
  ScriptedServer(std::string greeting, std::map<std::string, std::string> rcpt,
                 bool silent = false)
      : greeting_(std::move(greeting)),
        rcpt_(std::move(rcpt)),
        silent_(silent) {
    auto fd = shard::Listen(*shard::SocketAddress::Parse("127.0.0.1:0"), false);
    fd_ = *fd;
    ::fcntl(fd_, F_SETFL,
            ::fcntl(fd_, F_GETFL) & ~O_NONBLOCK);  // accept() waits.
    port_ = shard::LocalAddress(fd_)->port();
    thread_ = std::thread([this] { Run(); });
  }
  ~ScriptedServer() {
    ::shutdown(fd_, SHUT_RDWR);
    thread_.join();
    ::close(fd_);
  }
  int port() const { return port_; }

 private:
  void Run() {
    for (;;) {
      int c = ::accept(fd_, nullptr, nullptr);
      if (c < 0) return;
      Serve(c);
      ::close(c);
    }
  }
  static bool Send(int c, const std::string& s) {
    return ::send(c, s.data(), s.size(), MSG_NOSIGNAL) ==
           static_cast<ssize_t>(s.size());
  }
  void Serve(int c) {
    timeval tv{5, 0};
    ::setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    if (!Send(c, greeting_ + "\r\n")) return;
    std::string buffer;
    bool data = false;
    char chunk[4096];
    for (;;) {
      size_t eol;
      while ((eol = buffer.find("\r\n")) == std::string::npos) {
        ssize_t n = ::recv(c, chunk, sizeof(chunk), 0);
        if (n <= 0) return;
        buffer.append(chunk, static_cast<size_t>(n));
      }
      std::string line = buffer.substr(0, eol);
      buffer.erase(0, eol + 2);
      if (silent_) continue;
      std::string reply;
      if (data) {
        if (line != ".") continue;
        data = false;
        reply = "250 2.0.0 Ok: queued as X1";
      } else if (absl::StartsWith(line, "EHLO")) {
        reply = "250 mx.test";
      } else if (absl::StartsWith(line, "MAIL")) {
        reply = "250 2.1.0 Ok";
      } else if (absl::StartsWith(line, "RCPT")) {
        reply = "250 2.1.5 Ok";
        for (const auto& [who, said] : rcpt_) {
          if (absl::StrContains(line, who)) reply = said;
        }
      } else if (line == "DATA") {
        data = true;
        reply = "354 go ahead";
      } else if (line == "QUIT") {
        Send(c, "221 2.0.0 Bye\r\n");
        return;
      } else {
        reply = "250 Ok";
      }
      if (!Send(c, reply + "\r\n")) return;
    }
  }

  std::string greeting_;
  std::map<std::string, std::string> rcpt_;
  bool silent_;
  int fd_ = -1;
  int port_ = 0;
  std::thread thread_;
};

class EngineTest : public ::testing::Test {
 protected:
  // Starts one shard delivering to `port`.
  void Start(int port, absl::Duration timeout = absl::Seconds(5)) {
    recorder_ = std::make_unique<outcome::QueueRecorder>(&store_);
    bus_.Attach(recorder_.get());
    bus_.Attach(&outcomes_);
    shard::ShardGroup::Options options;
    options.shards = 1;
    group_ = std::make_unique<shard::ShardGroup>(options);
    context_.queue = &store_;
    context_.group = group_.get();
    context_.outcomes = &bus_;
    context_.helo = "sender.test";
    context_.options.port = port;
    context_.options.connect_timeout = timeout;
    context_.options.greeting_timeout = timeout;
    context_.options.command_timeout = timeout;
    context_.options.idle_timeout = absl::Milliseconds(100);
    context_.options.retry.first = absl::Minutes(1);
    context_.options.retry.max_age = absl::Hours(1);
    context_.poll_interval = absl::Milliseconds(10);
    context_.engines.resize(1);
    context_.classifier = *bounce::Classifier::Create();
    context_.resolver = [this](int) -> dns::Resolver* {
      return resolver_.get();
    };
    ASSERT_TRUE(group_
                    ->Start([this](shard::Reactor& reactor) {
                      resolver_ =
                          std::make_unique<FakeResolver>(reactor, &txt_);
                      context_.engines[0] =
                          std::make_unique<DeliveryShard>(reactor, context_);
                      context_.engines[0]->Start();
                    })
                    .ok());
  }
  void TearDown() override {
    if (group_ == nullptr) return;
    // As the daemon drains: connections say QUIT or finish, and free
    // themselves, before the shard stops (LeakSanitizer checks).
    if (context_.engines[0] != nullptr) {
      context_.engines[0]->BeginDrain();
      absl::Time deadline = absl::Now() + absl::Seconds(10);
      while (context_.engines[0]->open_connections() > 0 &&
             absl::Now() < deadline) {
        absl::SleepFor(absl::Milliseconds(5));
      }
      // The last one frees itself from a deferred task: one more turn.
      absl::Notification turned;
      group_->SubmitTo(0, [&turned] { turned.Notify(); });
      turned.WaitForNotification();
    }
    group_->Stop();
    group_->Join();
    context_.engines.clear();
    group_.reset();
  }
  const outcome::Outcome* For(const std::vector<outcome::Outcome>& all,
                              const std::string& recipient) {
    for (const auto& o : all) {
      if (o.recipient == recipient) return &o;
    }
    return nullptr;
  }

  // MTA-STS with `policy` already kept for `domain` (no fetch happens:
  // the fake resolver has no TXT records, so a refresh finds none).
  void KeepStsPolicy(const std::string& domain, StsMode mode,
                     std::vector<std::string> mx,
                     absl::Time checked = absl::Now()) {
    StsCacheEntry e;
    e.policy.mode = mode;
    e.policy.mx = std::move(mx);
    e.policy.max_age = 86400;
    e.id = "1";
    e.fetched = absl::Now();
    e.checked = checked;
    ASSERT_TRUE(sts_cache_.Put(domain, e).ok());
    sts_fetcher_ = std::make_unique<StsFetcher>(StsFetcherOptions{}, nullptr);
    context_.sts_cache = &sts_cache_;
    context_.sts_fetcher = sts_fetcher_.get();
  }

  // TXT records the fake resolver answers (set before Start()).
  std::map<std::string, std::vector<std::string>> txt_;
  // Routes and tries a@sts.test against a server with no STARTTLS; its
  // one outcome.
  outcome::Outcome OneStsOutcome() {
    ScriptedServer server("220 mx.sts.test ESMTP", {});
    store_.Add(1, {"a@sts.test"});
    Start(server.port());
    auto all = outcomes_.WaitFor(1);
    EXPECT_EQ(all.size(), 1u);
    return all.empty() ? outcome::Outcome{} : all[0];
  }

  StsCache sts_cache_{nullptr};
  std::unique_ptr<StsFetcher> sts_fetcher_;
  FakeStore store_;
  Collect outcomes_;
  std::unique_ptr<outcome::QueueRecorder> recorder_;
  outcome::Bus bus_;
  EngineContext context_;
  std::unique_ptr<FakeResolver> resolver_;
  std::unique_ptr<shard::ShardGroup> group_;
};

TEST_F(EngineTest, DeliversAndPublishesWhereAndWhatWasSaid) {
  ScriptedServer server("220 mx.ok.test ESMTP", {});
  store_.Add(1, {"a@ok.test", "b@ok.test"});
  Start(server.port());
  auto all = outcomes_.WaitFor(2);
  ASSERT_EQ(all.size(), 2u);
  for (const outcome::Outcome& o : all) {
    EXPECT_EQ(o.kind, outcome::Kind::kDelivered);
    EXPECT_EQ(o.reply, (Reply{250, "2.0.0", "Ok: queued as X1"}));
    EXPECT_EQ(o.id, 1u);
    EXPECT_EQ(o.sender, "news@src.test");
    EXPECT_EQ(o.campaign, "c1");
    EXPECT_EQ(o.site, "mx.ok.test");
    EXPECT_EQ(o.mx, "mx.ok.test");
    EXPECT_EQ(o.ip, "127.0.0.1");
    EXPECT_FALSE(o.tls.has_value());
    EXPECT_EQ(o.attempt, 1u);
    EXPECT_EQ(o.size, 26u);
    EXPECT_GE(o.queue_time, absl::Seconds(1));
    EXPECT_EQ(o.shard, 0);
  }
  EXPECT_EQ(store_.updates(), 2u);
  EXPECT_EQ(context_.engines[0]->outstanding(), 0);
}

TEST_F(EngineTest, AnOperatorBouncesWhatASuspendedSiteHolds) {
  ScriptedServer server("220 mx.ok.test ESMTP", {});
  SiteRule hold;
  hold.domains = {"ok.test"};
  hold.suspended = true;
  context_.options.rules.push_back(hold);
  store_.Add(1, {"a@ok.test", "b@ok.test", "c@ok.test"});
  Start(server.port());
  // Routed and held at the site: claimed, no outcome. (Asked on the shard:
  // the engine is made there.)
  auto outstanding = [this] {
    int n = 0;
    absl::Notification asked;
    group_->SubmitTo(0, [&] {
      n = context_.engines[0]->outstanding();
      asked.Notify();
    });
    asked.WaitForNotification();
    return n;
  };
  absl::Time deadline = absl::Now() + absl::Seconds(10);
  while (outstanding() < 3 && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(5));
  }
  ASSERT_EQ(outstanding(), 3);
  // Taken once at the site (routing may still be on its way there).
  size_t taken = 0;
  deadline = absl::Now() + absl::Seconds(10);
  while (taken < 2 && absl::Now() < deadline) {
    absl::Notification done;
    group_->SubmitTo(0, [&] {
      taken += context_.engines[0]->TakeForOperator({{1, 0}, {1, 2}, {9, 0}},
                                                    /*deleted=*/false);
      done.Notify();
    });
    done.WaitForNotification();
    if (taken < 2) absl::SleepFor(absl::Milliseconds(5));
  }
  EXPECT_EQ(taken, 2u);
  auto all = outcomes_.WaitFor(2);
  ASSERT_EQ(all.size(), 2u);
  for (const outcome::Outcome& o : all) {
    EXPECT_EQ(o.kind, outcome::Kind::kFailed);
    EXPECT_EQ(o.operator_action, "bounce");
    EXPECT_EQ(o.sender, "news@src.test");  // The envelope was read.
    EXPECT_EQ(o.site, "domain:ok.test");
    EXPECT_NE(o.recipient, "b@ok.test");
  }
  EXPECT_EQ(outstanding(), 1);  // b still held.
}

TEST_F(EngineTest, EachRecipientItsOwnReply) {
  ScriptedServer server(
      "220 mx.ok.test ESMTP",
      {{"bad@", "550 5.1.1 no such user"}, {"later@", "451 4.7.1 greylisted"}});
  store_.Add(1, {"bad@ok.test", "later@ok.test", "good@ok.test"});
  Start(server.port());
  auto all = outcomes_.WaitFor(3);
  ASSERT_EQ(all.size(), 3u);
  const outcome::Outcome* bad = For(all, "bad@ok.test");
  const outcome::Outcome* later = For(all, "later@ok.test");
  const outcome::Outcome* good = For(all, "good@ok.test");
  ASSERT_TRUE(bad && later && good);
  EXPECT_EQ(bad->kind, outcome::Kind::kFailed);
  EXPECT_EQ(bad->reply, (Reply{550, "5.1.1", "no such user"}));
  EXPECT_EQ(bad->category, bounce::Category::kInvalidRecipient);
  EXPECT_FALSE(bad->category_rule.empty());
  EXPECT_EQ(later->kind, outcome::Kind::kDeferred);
  EXPECT_EQ(later->reply, (Reply{451, "4.7.1", "greylisted"}));
  EXPECT_EQ(later->category, bounce::Category::kRateLimited);
  EXPECT_FALSE(good->category.has_value());
  EXPECT_GT(later->next_attempt, absl::Now());
  EXPECT_EQ(later->record.index, 1u);
  EXPECT_EQ(good->kind, outcome::Kind::kDelivered);
}

TEST_F(EngineTest, DnsAnswersBecomeRepliesWithTheirOwnCodes) {
  store_.Add(1, {"a@nullmx.test"});
  store_.Add(2, {"a@nx.test"});
  store_.Add(3, {"a@servfail.test"});
  store_.Add(4, {"nodomain"});
  Start(1);
  auto all = outcomes_.WaitFor(4);
  ASSERT_EQ(all.size(), 4u);
  const outcome::Outcome* null_mx = For(all, "a@nullmx.test");
  const outcome::Outcome* nx = For(all, "a@nx.test");
  const outcome::Outcome* servfail = For(all, "a@servfail.test");
  const outcome::Outcome* no_domain = For(all, "nodomain");
  ASSERT_TRUE(null_mx && nx && servfail && no_domain);
  EXPECT_EQ(null_mx->kind, outcome::Kind::kFailed);
  EXPECT_EQ(null_mx->reply.enhanced, "5.1.10");
  EXPECT_EQ(null_mx->reply.code, 556);
  EXPECT_EQ(nx->kind, outcome::Kind::kFailed);
  EXPECT_EQ(nx->reply.enhanced, "5.1.2");
  EXPECT_EQ(servfail->kind, outcome::Kind::kDeferred);
  EXPECT_EQ(servfail->reply.code, 451);
  EXPECT_EQ(servfail->reply.enhanced, "4.4.3");
  EXPECT_EQ(no_domain->reply.enhanced, "5.1.3");
  EXPECT_EQ(null_mx->category, bounce::Category::kBadDomain);
  EXPECT_EQ(nx->category, bounce::Category::kBadDomain);
  EXPECT_EQ(servfail->category, bounce::Category::kDnsFailure);
}

TEST_F(EngineTest, ARefusedGreetingDefersWithATransientCode) {
  ScriptedServer server("554 5.7.1 go away", {});
  store_.Add(1, {"a@ok.test"});
  Start(server.port());
  auto all = outcomes_.WaitFor(1);
  ASSERT_EQ(all.size(), 1u);
  EXPECT_EQ(all[0].kind, outcome::Kind::kDeferred);
  EXPECT_EQ(all[0].reply.code, 451);
  EXPECT_EQ(all[0].reply.enhanced, "4.7.1");
  EXPECT_TRUE(absl::StrContains(all[0].reply.text, "554 5.7.1 go away"))
      << all[0].reply.text;
  EXPECT_EQ(all[0].site, "mx.ok.test");
}

TEST_F(EngineTest, NobodyListeningDefersNoAnswerFromHost) {
  int port;
  {
    auto fd = shard::Listen(*shard::SocketAddress::Parse("127.0.0.1:0"), false);
    port = shard::LocalAddress(*fd)->port();
    ::close(*fd);
  }
  store_.Add(1, {"a@ok.test"});
  Start(port);
  auto all = outcomes_.WaitFor(1);
  ASSERT_EQ(all.size(), 1u);
  EXPECT_EQ(all[0].kind, outcome::Kind::kDeferred);
  EXPECT_EQ(all[0].reply.code, 451);
  EXPECT_EQ(all[0].reply.enhanced, "4.4.1");
  EXPECT_EQ(all[0].category, bounce::Category::kConnection);
  EXPECT_TRUE(absl::StrContains(all[0].reply.text, "connect"))
      << all[0].reply.text;
}

TEST_F(EngineTest, ASilentServerTimesOut) {
  ScriptedServer server("220 mx.ok.test ESMTP", {}, /*silent=*/true);
  store_.Add(1, {"a@ok.test"});
  Start(server.port(), absl::Milliseconds(300));
  auto all = outcomes_.WaitFor(1);
  ASSERT_EQ(all.size(), 1u);
  EXPECT_EQ(all[0].kind, outcome::Kind::kDeferred);
  EXPECT_EQ(all[0].reply.code, 451);
  EXPECT_TRUE(absl::StrContains(all[0].reply.text, "timed out"))
      << all[0].reply.ToString();
}

TEST_F(EngineTest, PastTheMaximumAgeATransientFailureExpires) {
  ScriptedServer server("220 mx.ok.test ESMTP",
                        {{"later@", "451 4.7.1 greylisted"}});
  store_.Add(1, {"later@ok.test"}, /*age=*/absl::Hours(2));
  Start(server.port());
  auto all = outcomes_.WaitFor(1);
  ASSERT_EQ(all.size(), 1u);
  EXPECT_EQ(all[0].kind, outcome::Kind::kExpired);
  EXPECT_EQ(all[0].category, bounce::Category::kExpired);
  EXPECT_EQ(all[0].reply, (Reply{451, "4.7.1", "greylisted"}));
  EXPECT_TRUE(absl::StartsWith(all[0].reason, "expired after 1 attempts"))
      << all[0].reason;
  EXPECT_EQ(store_.updates(), 1u);
}

TEST_F(EngineTest, AThrottlingReplyPausesTheSite) {
  // One connection at a time; the first message is deferred with words
  // that classify as rate_limited (no 421, no back-off pattern): the site
  // pauses, so the second message waits, unattempted, while the connection
  // idles out.
  ScriptedServer server("220 mx.ok.test ESMTP",
                        {{"first@",
                          "450 4.2.1 rate limit exceeded, slow "
                          "down"}});
  context_.options.defaults.initial_connections = 1;
  context_.options.defaults.max_connections = 1;
  context_.options.on_421.pause = absl::Hours(1);
  store_.Add(1, {"first@ok.test"});
  store_.Add(2, {"second@ok.test"});
  Start(server.port());
  auto all = outcomes_.WaitFor(1);
  ASSERT_GE(all.size(), 1u);
  EXPECT_EQ(all[0].recipient, "first@ok.test");
  EXPECT_EQ(all[0].category, bounce::Category::kRateLimited);
  // The connection leaves after its idle time; nothing else was tried.
  absl::Time deadline = absl::Now() + absl::Seconds(10);
  while (context_.engines[0]->open_connections() > 0 &&
         absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(5));
  }
  EXPECT_EQ(context_.engines[0]->open_connections(), 0);
  EXPECT_EQ(outcomes_.all().size(), 1u);
  EXPECT_EQ(context_.engines[0]->outstanding(), 1);
}

TEST_F(EngineTest, WithoutAThrottlingReplyTheNextMessageGoesOn) {
  // The same, with a plain 4xx: no pause, both are tried.
  ScriptedServer server("220 mx.ok.test ESMTP",
                        {{"first@", "450 4.2.0 mailbox busy"}});
  context_.options.defaults.initial_connections = 1;
  context_.options.defaults.max_connections = 1;
  store_.Add(1, {"first@ok.test"});
  store_.Add(2, {"second@ok.test"});
  Start(server.port());
  auto all = outcomes_.WaitFor(2);
  ASSERT_EQ(all.size(), 2u);
  EXPECT_EQ(For(all, "second@ok.test")->kind, outcome::Kind::kDelivered);
}

TEST_F(EngineTest, StsEnforceNamingNoneOfTheMxDefersWithTheReason) {
  KeepStsPolicy("sts.test", StsMode::kEnforce, {"other.sts.test"});
  outcome::Outcome o = OneStsOutcome();
  EXPECT_EQ(o.kind, outcome::Kind::kDeferred);
  EXPECT_EQ(o.reply.code, 451);
  EXPECT_TRUE(absl::StrContains(
      o.reply.text,
      "MTA-STS policy of sts.test (enforce) allows none of its MX hosts "
      "(mx.sts.test); it names other.sts.test"))
      << o.reply.text;
}

TEST_F(EngineTest, StsEnforceWithoutStartTlsDefersNamingThePolicy) {
  KeepStsPolicy("sts.test", StsMode::kEnforce, {"*.sts.test"});
  outcome::Outcome o = OneStsOutcome();
  EXPECT_EQ(o.kind, outcome::Kind::kDeferred);
  EXPECT_EQ(o.site, "mx.sts.test|mta-sts");
  EXPECT_TRUE(absl::StartsWith(o.reply.text, "MTA-STS policy (enforce): "))
      << o.reply.text;
  EXPECT_TRUE(absl::StrContains(o.reply.text, "STARTTLS"));
}

TEST_F(EngineTest, StsTestingDeliversAndSaysWhatWouldFail) {
  // Looked at long ago: the TXT record is asked again (none now), and the
  // kept policy stays in force until its max_age (RFC 8461 3.3).
  KeepStsPolicy("sts.test", StsMode::kTesting, {"mx.sts.test"},
                absl::Now() - absl::Hours(2));
  outcome::Outcome o = OneStsOutcome();
  EXPECT_EQ(o.kind, outcome::Kind::kDelivered);
  EXPECT_EQ(o.tls_policy, "mta-sts-testing");
  EXPECT_TRUE(absl::StrContains(o.reason, "starttls-not-supported"))
      << o.reason;
  EXPECT_FALSE(absl::StrContains(o.reason, "not in it"));
  EXPECT_TRUE(sts_cache_.Get("sts.test", absl::Now()).has_value());
}

TEST_F(EngineTest, StsPolicyOffForASiteIsIgnored) {
  KeepStsPolicy("sts.test", StsMode::kEnforce, {"other.sts.test"});
  SiteRule off;
  off.domains = {"sts.test"};
  off.tls_policy = TlsPolicyUse::kOff;
  context_.options.rules.push_back(off);
  outcome::Outcome o = OneStsOutcome();
  EXPECT_EQ(o.kind, outcome::Kind::kDelivered);
  EXPECT_EQ(o.tls_policy, "opportunistic");
}

TEST_F(EngineTest, StsANewIdFetchesThePolicyAgainAndTheOldStaysMeanwhile) {
  // Looked at long ago; the record now says another id: a fetch goes
  // (to 127.0.0.1:443, where nothing answers), the kept policy applies.
  KeepStsPolicy("sts.test", StsMode::kTesting, {"mx.sts.test"},
                absl::Now() - absl::Hours(2));
  txt_["_mta-sts.sts.test"] = {"v=STSv1; id=2;"};
  outcome::Outcome o = OneStsOutcome();
  EXPECT_EQ(o.kind, outcome::Kind::kDelivered);
  EXPECT_EQ(o.tls_policy, "mta-sts-testing");
  absl::Time deadline = absl::Now() + absl::Seconds(20);
  while (sts_fetcher_->failed() == 0 && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(10));
  }
  EXPECT_EQ(sts_fetcher_->failed(), 1u);
  EXPECT_TRUE(sts_cache_.Get("sts.test", absl::Now()).has_value());
}

TEST_F(EngineTest, StsTheSameIdFetchesNothing) {
  KeepStsPolicy("sts.test", StsMode::kTesting, {"mx.sts.test"},
                absl::Now() - absl::Hours(2));
  txt_["_mta-sts.sts.test"] = {"v=STSv1; id=1;"};
  outcome::Outcome o = OneStsOutcome();
  absl::SleepFor(absl::Milliseconds(200));
  EXPECT_EQ(sts_fetcher_->fetched() + sts_fetcher_->failed(), 0u);
}

}  // namespace
}  // namespace peregrine::delivery
