// libFuzzer target: arbitrary bytes as a configuration file into
// ParseConfig() (toml++ underneath, then every setting's own parser: sizes,
// durations, networks, listeners, site rules, DKIM keys). A configuration
// comes from an operator, not a peer, but it must still never crash the
// daemon or `config check`: a bad file is an error naming what is wrong.
// Invariants: a refusal has a message; an accepted configuration's
// warnings and printed defaults can be computed.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "mta/config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string text(reinterpret_cast<const char*>(data), size);
  auto config = peregrine::ParseConfig(text, "fuzz.toml");
  if (!config.ok()) {
    if (config.status().message().empty()) std::abort();
    return 0;
  }
  (void)peregrine::ConfigWarnings(*config);
  (void)config->Where("server.shards");
  return 0;
}
