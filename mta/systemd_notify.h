// SystemdNotifier: what the daemon tells systemd (Type=notify) through
// libsystemd's sd_notify(): READY=1 once the queue is recovered and the
// listeners accept, STATUS= lines (the queue's size), STOPPING=1 when a
// drain begins, and WATCHDOG=1 at half the unit's WatchdogSec=. Outside
// systemd (no $NOTIFY_SOCKET) every call does nothing.
//
// Threads: the daemon's main thread only. No callbacks; nothing to free.
#pragma once

#include <string>

#include "absl/time/time.h"

namespace peregrine {

class SystemdNotifier {
 public:
  SystemdNotifier();
  bool active() const { return active_; }
  void Ready(const std::string& status);
  void Status(const std::string& status);
  void Stopping(const std::string& status);
  // Pings the watchdog when half its interval has passed since the last
  // ping; call it often (the main loop's tick).
  void Tick(absl::Time now);

 private:
  bool active_ = false;
  absl::Duration watchdog_ = absl::ZeroDuration();  // Zero: off.
  absl::Time last_ping_ = absl::InfinitePast();
};

}  // namespace peregrine
