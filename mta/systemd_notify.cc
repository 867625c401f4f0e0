#include "mta/systemd_notify.h"

#include <systemd/sd-daemon.h>

#include <cstdint>
#include <cstdlib>

#include "absl/strings/str_cat.h"

namespace peregrine {

SystemdNotifier::SystemdNotifier() {
  const char* socket = getenv("NOTIFY_SOCKET");
  active_ = socket != nullptr && *socket != '\0';
  uint64_t usec = 0;
  if (active_ && sd_watchdog_enabled(0, &usec) > 0 && usec > 0) {
    watchdog_ = absl::Microseconds(usec);
  }
}

void SystemdNotifier::Ready(const std::string& status) {
  if (!active_) return;
  sd_notify(0, absl::StrCat("READY=1\nSTATUS=", status).c_str());
}

void SystemdNotifier::Status(const std::string& status) {
  if (!active_) return;
  sd_notify(0, absl::StrCat("STATUS=", status).c_str());
}

void SystemdNotifier::Stopping(const std::string& status) {
  if (!active_) return;
  sd_notify(0, absl::StrCat("STOPPING=1\nSTATUS=", status).c_str());
}

void SystemdNotifier::Tick(absl::Time now) {
  if (!active_ || watchdog_ == absl::ZeroDuration()) return;
  if (now - last_ping_ < watchdog_ / 2) return;
  last_ping_ = now;
  sd_notify(0, "WATCHDOG=1");
}

}  // namespace peregrine
