// X-Peregrine-Transfer: the header field a queue transfer (transfer.h)
// puts first in each message it relays to another node, for what SMTP's
// envelope has no words for: the tags, when the message was first
// received, its recipients' attempts, and the node it came from.
//   X-Peregrine-Transfer: v=1; attempts=2; received=1795848233;
//       tenant=acme; campaign=spring%20sale; node=mx1
// Values are %-encoded (bytes other than letters, digits and ".-_@+").
// Pure functions; TakeTransferHeader reads what any client sent (the
// receiving side honours it only from a trusted client on the relay
// listener: reception.cc), so it is written for hostile input and fuzzed.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "absl/time/time.h"

namespace peregrine {

struct TransferInfo {
  std::string tenant;
  std::string campaign;
  uint32_t attempts = 0;
  absl::Time received = absl::InfinitePast();
  std::string node;  // Where it came from, for the log.
};

// The header field, CRLF-terminated.
std::string TransferHeader(const TransferInfo& info);

// Removes every X-Peregrine-Transfer field (folded lines included) from
// the header section of `message`; the first one's values when it is well
// formed (at most 4 KiB, version 1, known keys, numbers in range). Work is
// linear in the header's size.
std::optional<TransferInfo> TakeTransferHeader(std::string* message);

}  // namespace peregrine
