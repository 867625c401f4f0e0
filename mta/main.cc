// peregrine: the one binary. See mta/cli.h for its subcommands.
#include <iostream>

#include "absl/synchronization/mutex.h"
#include "mta/cli.h"

int main(int argc, char** argv) {
  // Debian's abseil is built without NDEBUG, so every Mutex lock would
  // also update abseil's global lock-order graph (about 1% of the daemon's
  // CPU under load). The tests keep it: they link their own mains.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  return peregrine::RunCli(argc, argv, std::cout, std::cerr);
}
