#include "mta/listener.h"

#include <cerrno>
#include <cstring>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/synchronization/mutex.h"
#include "base/log.h"

namespace peregrine {

absl::string_view ListenerName(ListenerKind kind) {
  switch (kind) {
    case ListenerKind::kRelay:
      return "relay";
    case ListenerKind::kSubmission:
      return "submission";
    case ListenerKind::kSubmissions:
      return "submissions";
    case ListenerKind::kAdmin:
      return "admin";
  }
  return "?";
}

absl::string_view ListenerDescription(ListenerKind kind) {
  switch (kind) {
    case ListenerKind::kRelay:
      return "relay (SMTP)";
    case ListenerKind::kSubmission:
      return "submission (SMTP, STARTTLS)";
    case ListenerKind::kSubmissions:
      return "submissions (SMTP, implicit TLS)";
    case ListenerKind::kAdmin:
      return "admin (HTTP)";
  }
  return "?";
}

namespace {

absl::Mutex loops_mu;
absl::flat_hash_set<AcceptLoop*>& Loops() {
  static auto* loops = new absl::flat_hash_set<AcceptLoop*>();
  return *loops;
}

}  // namespace

AcceptLoop::AcceptLoop(shard::Reactor& reactor, int fd, Accepted accepted)
    : reactor_(reactor), fd_(fd), accepted_(std::move(accepted)) {
  absl::MutexLock lock(&loops_mu);
  Loops().insert(this);
}

AcceptLoop::~AcceptLoop() {
  absl::MutexLock lock(&loops_mu);
  Loops().erase(this);
}

void AcceptLoop::FreeAll() {
  std::vector<AcceptLoop*> left;
  {
    absl::MutexLock lock(&loops_mu);
    left.assign(Loops().begin(), Loops().end());
  }
  for (AcceptLoop* loop : left) delete loop;
}

void AcceptLoop::Start(shard::Reactor& reactor, int listen_fd,
                       Accepted accepted) {
  (new AcceptLoop(reactor, listen_fd, std::move(accepted)))->Arm();
}

void AcceptLoop::Arm() {
  reactor_.io().Accept(fd_, [this](int client) {
    if (client == -ECANCELED || reactor_.stopping()) {
      delete this;
      return;
    }
    if (client >= 0) {
      accepted_(client);
    } else if (client != -EAGAIN && client != -ECONNABORTED) {
      log::Warn("daemon", "accept: %s", std::strerror(-client));
      if (client == -EMFILE || client == -ENFILE) {
        // Out of descriptors: back off instead of spinning.
        reactor_.AddTimer(absl::Milliseconds(100), [this] { Arm(); });
        return;
      }
    }
    Arm();
  });
}

}  // namespace peregrine
