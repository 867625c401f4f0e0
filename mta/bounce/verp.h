// VERP: a return path per message and recipient, so a bounce that comes
// back says exactly whose mail failed even when the bounce itself does not.
//
//   PREFIX+ID.INDEX.MAC.LOCAL=DOMAIN@BOUNCE-DOMAIN
//   b+066141EB688B7500.0.3f1c9a0b7d2e4c58.alice=dest.example@bounces.example
//
// ID is the queue id, INDEX the recipient's index in the message, LOCAL and
// DOMAIN the recipient's address, and MAC the first 8 bytes of
// HMAC-SHA256(secret, "ID.INDEX.lower(address)") in hex: without the
// secret nobody can make a token that names an address, so a forged bounce
// suppresses no one. Pure functions; no state.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "queue/types.h"

namespace peregrine::bounce {

struct VerpOptions {
  std::string prefix = "bounces";  // The local part before '+'.
  std::string domain;              // The bounce domain; empty: VERP off.
  std::string secret;              // At least 16 bytes.
};

struct VerpMatch {
  queue::MessageId id = 0;
  uint32_t index = 0;
  std::string recipient;
};

// The return path for recipient `index` (`recipient`) of message `id`.
std::string VerpAddress(const VerpOptions& options, queue::MessageId id,
                        uint32_t index, absl::string_view recipient);

// nullopt: not one of our VERP addresses (another local part or domain).
// PermissionDenied: shaped like ours but its MAC is wrong (forged or
// damaged); InvalidArgument: ours but malformed.
absl::StatusOr<std::optional<VerpMatch>> ParseVerp(const VerpOptions& options,
                                                   absl::string_view address);

// A secret for a new installation: 32 random bytes, hex.
std::string NewVerpSecret();

}  // namespace peregrine::bounce
