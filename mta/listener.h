// Listeners: what each listening socket is for, and the accept loop that
// hands its connections to the driver of that kind.
//
// One enum names the kinds everywhere (the configuration's [listen] keys,
// reception's rules per port, the daemon's log).
//
// AcceptLoop lifetime: it owns itself, on the shard whose socket it
// accepts on. It re-arms after every completion and deletes itself when an
// accept completes with -ECANCELED (the daemon closed the socket to drain)
// or the reactor is stopping. Out of descriptors (EMFILE, ENFILE) it waits
// 100 ms rather than spinning; a pending accept is cancelled by the close,
// so no completion outlives it.
#pragma once

#include <functional>

#include "absl/strings/string_view.h"
#include "mta/shard/reactor.h"

namespace peregrine {

// relay: port 25, STARTTLS offered, trusted networks may relay.
// submission: 587, STARTTLS, then AUTH required.
// submissions: 465, TLS from the first byte, AUTH required.
// admin: the HTTP admin API.
enum class ListenerKind { kRelay, kSubmission, kSubmissions, kAdmin };

// "relay", "submission", "submissions", "admin": the [listen] key, and the
// name in events.
absl::string_view ListenerName(ListenerKind kind);
// "relay (SMTP)", "submissions (SMTP, implicit TLS)": for the start log.
absl::string_view ListenerDescription(ListenerKind kind);

class AcceptLoop {
 public:
  // Each accepted socket (non-blocking, close-on-exec) goes to `accepted`,
  // which owns it from then on.
  using Accepted = std::function<void(int fd)>;
  static void Start(shard::Reactor& reactor, int listen_fd, Accepted accepted);
  // Frees the loops whose last completion never came: a loop frees itself
  // when its accept is cancelled, but a reactor stopped before that
  // cancellation arrived leaves it behind. Call only once every reactor is
  // destroyed (none can call a loop back).
  static void FreeAll();

 private:
  AcceptLoop(shard::Reactor& reactor, int fd, Accepted accepted);
  ~AcceptLoop();
  void Arm();

  shard::Reactor& reactor_;
  const int fd_;
  const Accepted accepted_;
};

}  // namespace peregrine
