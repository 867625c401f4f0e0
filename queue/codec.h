// Byte layouts of the queue's keys and values.
//
// Keys are big-endian so that RocksDB's byte order is numeric order:
//   bodies, envelopes:  [message u64]
//   recipients:         [message u64][index u32]
//   schedule:           [shard u16][next_attempt µs u64][message u64][index
//   u32]
// Values start with a version byte, then varints and length-prefixed
// strings. Decoding never trusts the bytes: a short or garbled value is an
// error, not a crash.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "queue/types.h"

namespace peregrine::queue::codec {

std::string MessageKey(MessageId id);
std::string RecipientKey(MessageId id, uint32_t index);
std::string ScheduleKey(uint16_t shard, absl::Time when, MessageId id,
                        uint32_t index);
// The first key of `shard` at or after `when`.
std::string ScheduleSeek(uint16_t shard, absl::Time when);

bool ParseMessageKey(absl::string_view key, MessageId* id);
bool ParseRecipientKey(absl::string_view key, MessageId* id, uint32_t* index);
bool ParseScheduleKey(absl::string_view key, uint16_t* shard, absl::Time* when,
                      MessageId* id, uint32_t* index);

std::string EncodeEnvelope(const Envelope& envelope);
absl::StatusOr<Envelope> DecodeEnvelope(absl::string_view value);

// The record's message and index live in its key, not in the value.
std::string EncodeRecipient(const RecipientRecord& record);
absl::StatusOr<RecipientRecord> DecodeRecipient(MessageId id, uint32_t index,
                                                absl::string_view value);

}  // namespace peregrine::queue::codec
