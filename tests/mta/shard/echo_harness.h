// Loopback echo over a ShardGroup: a server on shard 0 and clients on the
// last shard (the same shard when there is only one). Used by the shard
// tests, against both backends, and by bench/mta/shard.
#pragma once

#include <cstddef>
#include <cstdint>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "mta/shard/io_backend.h"

namespace peregrine::shard::testing {

struct EchoOptions {
  BackendKind backend = BackendKind::kEpoll;
  int shards = 2;
  int connections = 64;
  size_t message_bytes = 1024;
  // Messages each connection sends (and must get back, byte for byte).
  int rounds = 100;
  // Gives up (error) after this long: every loop here is bounded.
  absl::Duration deadline = absl::Seconds(60);
};

struct EchoResult {
  std::string backend;
  uint64_t messages = 0;  // Echoes completed and verified.
  uint64_t bytes = 0;     // Payload bytes echoed (one direction).
  absl::Duration elapsed;
};

absl::StatusOr<EchoResult> RunEcho(const EchoOptions& options);

}  // namespace peregrine::shard::testing
