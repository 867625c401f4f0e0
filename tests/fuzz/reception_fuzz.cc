// libFuzzer target: whole SMTP connections through the reception driver
// (SmtpConnection), with a fake I/O backend and a fake clock, so that the
// fuzzer chooses when each read and write completes or fails, when the peer
// resets or closes, when time jumps (timers firing at any point, before or
// after a close), and when the queue and the AUTH check answer. Defect 1
// of the hardening issue (a read completing after a failed write re-armed
// the timer of a freed connection) is the kind of bug this finds.
//
// Mail for own.test goes through LocalMail (aliases and SRS).
//
// Input: the first byte picks the listener (relay or submission); then
// each step is one byte, an action (its low 3 bits), some followed by an
// argument; with bit 3 set the reactor turns after it, so completions can
// pile up and run in one batch (a read's data and a write's failure in the
// same poll: defect 1's order of events):
//   0 n BYTES  the client sends the next n bytes (to the pending read)
//   1          the pending write completes whole
//   2          the pending write completes in part
//   3 / 4      the pending read fails with a reset / sees end of stream
//   5          the pending write fails (EPIPE)
//   6 n        the clock moves on n * 20 ms (timers fire)
//   7 k        the oldest queue write or AUTH check answers (k: how)
// After the steps every connection is closed (as at a drain timeout), the
// answers still owed are given, and the connection must be freed: a leak
// aborts, a use after free is an ASan report.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <string>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "mta/reception.h"
#include "mta/shard/io_backend.h"
#include "mta/shard/reactor.h"
#include "tests/queue/null_store.h"

namespace peregrine {
namespace {

absl::Time g_now;
absl::Time FakeNow() { return g_now; }

// Completions only when the harness says so; every callback runs from
// Poll(), never inside the call that started the operation.
class FakeBackend : public shard::IoBackend {
 public:
  absl::string_view name() const override { return "fake"; }
  void Accept(int, shard::IoCallback done) override { Fail(std::move(done)); }
  void Connect(int, const shard::SocketAddress&,
               shard::IoCallback done) override {
    Fail(std::move(done));
  }
  void Recv(int fd, void* buf, size_t len, shard::IoCallback done) override {
    if (read_.done) std::abort();  // One read-side operation at a time.
    read_ = {fd, static_cast<char*>(buf), len, std::move(done)};
  }
  void Send(int fd, const void* buf, size_t len,
            shard::IoCallback done) override {
    if (write_.done) std::abort();
    write_ = {fd, const_cast<char*>(static_cast<const char*>(buf)), len,
              std::move(done)};
  }
  void PollIn(int, shard::IoCallback) override {}  // Never ready.
  void PollOut(int, shard::IoCallback done) override { Fail(std::move(done)); }
  void Close(int fd, absl::AnyInvocable<void()> done) override {
    if (read_.done && read_.fd == fd) Complete(read_, -ECANCELED);
    if (write_.done && write_.fd == fd) Complete(write_, -ECANCELED);
    ::close(fd);
    ready_.push_back([done = std::move(done)](int) mutable { done(); });
  }
  int Poll(absl::Duration, absl::FunctionRef<void()> woke) override {
    woke();
    std::deque<shard::IoCallback> batch;
    batch.swap(ready_);
    for (auto& cb : batch) std::move(cb)(0);
    return static_cast<int>(batch.size());
  }

  // Harness actions.
  void ClientSends(absl::string_view bytes) {
    if (!read_.done || bytes.empty()) return;
    size_t n = std::min(bytes.size(), read_.len);
    std::memcpy(read_.buf, bytes.data(), n);
    Complete(read_, static_cast<int>(n));
  }
  void ReadResult(int result) {
    if (read_.done) Complete(read_, result);
  }
  void WriteResult(bool whole, int error) {
    if (!write_.done) return;
    int n = error != 0 ? error
            : whole    ? static_cast<int>(write_.len)
                       : static_cast<int>(write_.len / 2);
    Complete(write_, n);
  }

 private:
  struct Op {
    int fd = -1;
    char* buf = nullptr;
    size_t len = 0;
    shard::IoCallback done;
  };
  void Complete(Op& op, int result) {
    ready_.push_back([cb = std::move(op.done), result](int) mutable {
      std::move(cb)(result);
    });
    op = Op();
  }
  void Fail(shard::IoCallback done) {
    ready_.push_back(
        [cb = std::move(done)](int) mutable { std::move(cb)(-EOPNOTSUPP); });
  }
  Op read_, write_;
  std::deque<shard::IoCallback> ready_;
};

// Queue writes answered when the harness says so.
class FakeStore : public queue::NullStore {
 public:
  void Enqueue(queue::NewMessage, EnqueueDone done) override {
    pending.push_back(std::move(done));
  }
  std::deque<EnqueueDone> pending;
};

// A real connected socket, so the driver's getpeername() finds 127.0.0.1;
// each run works on a dup of it (the fake backend does no I/O on it).
int PeerSocket() {
  static int fd = [] {
    int l = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(a);
    if (bind(l, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0 ||
        listen(l, 1) != 0 ||
        getsockname(l, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
      std::abort();
    }
    int c = socket(AF_INET, SOCK_STREAM, 0);
    if (connect(c, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0) {
      std::abort();
    }
    return accept(l, nullptr, nullptr);
  }();
  return fd;
}

}  // namespace
}  // namespace peregrine

using namespace peregrine;  // NOLINT: a fuzz target's one function.

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  g_now = absl::FromUnixSeconds(1700000000);
  auto owned = std::make_unique<FakeBackend>();
  FakeBackend* io = owned.get();
  shard::Reactor reactor(0, std::move(owned), absl::ZeroDuration(), &FakeNow);
  FakeStore store;
  std::deque<absl::AnyInvocable<void(AuthAnswer)>> auths;
  ReceptionContext context;
  context.queue = &store;
  context.trusted_networks = {*shard::Cidr::Parse("127.0.0.0/8")};
  context.hostname = "fuzz.test";
  context.max_message_bytes = 4096;
  context.max_recipients = 5;
  context.command_timeout = absl::Seconds(1);
  context.auth_without_tls = true;
  context.has_users = [] { return true; };
  // Own domains (mta/local/): own.test forwards by aliases, with SRS.
  static local::LocalMail* own = [] {
    char dir[] = "/tmp/reception-fuzz-aliases-XXXXXX";
    if (mkdtemp(dir) == nullptr) abort();
    FILE* f = fopen((std::string(dir) + "/own.test").c_str(), "w");
    fputs("a: x@out.test, b\nb: y@out.test\n*: z@out.test\n", f);
    fclose(f);
    local::LocalOptions o;
    o.domains = {"own.test", "two.test"};
    o.aliases_dir = dir;
    o.srs_options.domain = "own.test";
    o.srs_options.secret = "0123456789abcdef0123456789abcdef";
    auto* l = new local::LocalMail(o);
    if (!l->Load().ok()) abort();
    return l;
  }();
  context.local = own;
  context.authenticate = [&auths](std::string, std::string, std::string,
                                  absl::AnyInvocable<void(AuthAnswer)> done) {
    auths.push_back(std::move(done));
  };
  std::atomic<int> open{0};
  ListenerKind mode =
      data[0] & 1 ? ListenerKind::kSubmission : ListenerKind::kRelay;
  SmtpConnection::Start(reactor, dup(PeerSocket()), context, open, mode);
  reactor.RunOnce();

  // Owed answers, oldest first; `how` picks which and what.
  auto answer = [&](uint8_t how) {
    if (!store.pending.empty() && (how & 1 || auths.empty())) {
      auto done = std::move(store.pending.front());
      store.pending.pop_front();
      if (how & 2) {
        done(absl::ResourceExhaustedError("full"));
      } else {
        done(queue::MessageId{42});
      }
    } else if (!auths.empty()) {
      auto done = std::move(auths.front());
      auths.pop_front();
      AuthAnswer a;
      a.verdict = static_cast<smtp::AuthVerdict>(how % 3);
      if (how & 4) a.delay = absl::Milliseconds(200);
      done(std::move(a));
    }
  };

  size_t i = 1;
  auto next = [&]() -> uint8_t { return i < size ? data[i++] : 0; };
  while (i < size) {
    uint8_t step = next();
    switch (step % 8) {
      case 0: {
        size_t n = next();
        n = std::min(n, size - i);
        io->ClientSends(
            absl::string_view(reinterpret_cast<const char*>(data) + i, n));
        i += n;
        break;
      }
      case 1:
        io->WriteResult(true, 0);
        break;
      case 2:
        io->WriteResult(false, 0);
        break;
      case 3:
        io->ReadResult(-ECONNRESET);
        break;
      case 4:
        io->ReadResult(0);
        break;
      case 5:
        io->WriteResult(false, -EPIPE);
        break;
      case 6:
        g_now += absl::Milliseconds(20) * next();
        break;
      case 7:
        answer(next());
        break;
    }
    if (step & 8) {
      reactor.RunOnce();
      reactor.RunOnce();
    }
  }
  reactor.RunOnce();

  // The end, as at a drain timeout: every connection closes; the answers
  // still owed come; then nothing may be left.
  SmtpConnection::CloseAll();
  for (int round = 0; round < 100 && open.load() > 0; ++round) {
    answer(static_cast<uint8_t>(round));
    g_now += absl::Seconds(1);
    reactor.RunOnce();
  }
  if (open.load() != 0) std::abort();  // A connection never freed.
  return 0;
}
