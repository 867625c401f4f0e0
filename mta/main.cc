// peregrine: the one binary. See mta/cli.h for its subcommands.
#include <cstring>
#include <iostream>
#include <string>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "mta/cli.h"
#include "mta/sendmail.h"

int main(int argc, char** argv) {
  // Debian's abseil is built without NDEBUG, so every Mutex lock would
  // also update abseil's global lock-order graph (about 1% of the daemon's
  // CPU under load). The tests keep it: they link their own mains.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  // Installed as `sendmail` too (a link): the classic interface.
  const char* slash = std::strrchr(argv[0], '/');
  if (std::strcmp(slash != nullptr ? slash + 1 : argv[0], "sendmail") == 0) {
    return peregrine::Sendmail(std::vector<std::string>(argv + 1, argv + argc),
                               std::cin, std::cout, std::cerr);
  }
  return peregrine::RunCli(argc, argv, std::cout, std::cerr);
}
