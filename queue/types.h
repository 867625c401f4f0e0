// Value types of the durable queue: messages, recipients, their states.
//
// Plain data, used on any thread. A message is written once (envelope and
// body); each recipient has its own small record that changes with every
// delivery attempt. See store.h for the operations.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "base/reply.h"

namespace peregrine::queue {

// Unique per queue, increasing; printed as 16 hex digits.
using MessageId = uint64_t;
std::string FormatMessageId(MessageId id);
bool ParseMessageId(absl::string_view text, MessageId* id);

// RFC 3461 DSN parameters.
enum class DsnRet : uint8_t { kUnspecified = 0, kFull = 1, kHeaders = 2 };
enum DsnNotify : uint8_t {
  kNotifyDefault = 0,  // No NOTIFY: failures only (RFC 3461 §4.1).
  kNotifyNever = 1,
  kNotifySuccess = 2,
  kNotifyFailure = 4,
  kNotifyDelay = 8,
};

struct Envelope {
  std::string sender;  // MAIL FROM; empty for the null sender <>.
  std::string envid;   // DSN ENVID.
  DsnRet ret = DsnRet::kUnspecified;
  std::string tenant;
  std::string campaign;
  // Reception metadata.
  std::string client_address;
  std::string helo;
  std::string auth_user;
  std::string tls;  // "TLSv1.3 TLS_AES_256_GCM_SHA384", or empty.
  // The listener it came in on ("relay", "submission", ...; "dsn" for a
  // notice Peregrine made), for per-listener DSN settings.
  std::string listener;
  absl::Time received = absl::UnixEpoch();
  uint32_t recipient_count = 0;  // Set by the store.
  uint64_t body_bytes = 0;       // Set by the store.
};

enum class RecipientState : uint8_t {
  kQueued = 0,     // Not tried yet.
  kDeferred = 1,   // Tried, transient failure; next_attempt says when again.
  kDelivered = 2,  // Final.
  kFailed = 3,     // Final: permanent failure.
  kExpired = 4,    // Final: too old, gave up.
};
inline bool IsFinal(RecipientState s) {
  return s >= RecipientState::kDelivered;
}
absl::string_view StateName(RecipientState s);
bool ParseStateName(absl::string_view text, RecipientState* s);

struct RecipientSpec {
  std::string address;  // RCPT TO, e.g. "user@example.com".
  std::string orcpt;    // DSN ORCPT, as received.
  uint8_t notify = kNotifyDefault;
  // Routing: the site (MX rollup key) and the shard that owns it. The queue
  // stores them; it does not decide them.
  std::string site;
  uint16_t shard = 0;
};

struct RecipientRecord {
  MessageId message = 0;
  uint32_t index = 0;  // 0 .. recipient_count-1 within the message.
  RecipientSpec spec;
  RecipientState state = RecipientState::kQueued;
  uint32_t attempts = 0;
  absl::Time next_attempt = absl::UnixEpoch();
  Reply last_reply;  // Of the last attempt (stored as one line).
  // Time held back by a suspended site: it does not count toward the
  // maximum age (whole seconds on disk).
  absl::Duration held = absl::ZeroDuration();
  // A "delayed" DSN was sent for it (sent at most once).
  bool delay_notified = false;

  absl::string_view domain() const;
};

struct NewMessage {
  Envelope envelope;
  std::string body;  // The message as received (headers and body).
  std::vector<RecipientSpec> recipients;
  // Attempts made before, by another node (a queue transfer): every
  // recipient starts with this count.
  uint32_t attempts = 0;
};

struct StoredMessage {
  MessageId id = 0;
  Envelope envelope;
  std::string body;  // Empty unless asked for.
  std::vector<RecipientRecord> recipients;
  // A message no longer in the queue, from the short record kept of it
  // (RocksStoreOptions::keep_finished): every recipient is final and there
  // is no body.
  bool finished = false;
};

// What delivery sends: the envelope and the body. The body may be shared
// with the store's memory of mail just queued (no copy).
struct OutgoingMessage {
  MessageId id = 0;
  Envelope envelope;
  std::shared_ptr<const std::string> body;
};

// The outcome of one delivery attempt for one recipient.
struct RecipientUpdate {
  // The record as Due() returned it: its next_attempt locates the schedule
  // entry to remove.
  RecipientRecord before;
  RecipientState state = RecipientState::kDeferred;
  absl::Time next_attempt;  // For kDeferred.
  Reply reply;              // The remote reply, or Peregrine's reason.
  // False for a recipient put back unattempted (its site is suspended): the
  // attempt count stays as it was.
  bool attempted = true;
  // Added to the record's `held`.
  absl::Duration held_more = absl::ZeroDuration();
  // Sets the record's delay_notified (a "delayed" DSN goes with this).
  bool delay_notified = false;
};

// Ages of queued mail, like Postfix's qshape: recipients not yet final by
// the age of their message, in minutes: under 5, 5-10, 10-20, ... 640-1280,
// 1280 and over.
inline constexpr int kAgeBuckets = 10;
// Minutes where each bucket starts.
inline constexpr int kAgeBucketStart[kAgeBuckets] = {0,  5,   10,  20,  40,
                                                     80, 160, 320, 640, 1280};
int AgeBucket(absl::Duration age);

struct QueueCounts {
  uint64_t messages = 0;
  uint64_t recipients = 0;
  uint64_t by_state[5] = {};
  // Recipients that reached each final state since the queue was made
  // (delivered, failed, expired; by RecipientState).
  uint64_t totals[5] = {};
  // Non-final recipients, by site, recipient domain, the message's
  // campaign and tenant (untagged mail under ""), and by age.
  struct Group {
    uint64_t recipients = 0;
    uint64_t ages[kAgeBuckets] = {};
  };
  std::vector<std::pair<std::string, Group>> by_site;
  std::vector<std::pair<std::string, Group>> by_domain;
  std::vector<std::pair<std::string, Group>> by_campaign;
  std::vector<std::pair<std::string, Group>> by_tenant;
  Group all;
};

// Which mail: every field given must match (an empty one matches all).
struct ListFilter {
  bool has_state = false;
  RecipientState state = RecipientState::kQueued;
  bool pending = false;  // Only recipients not yet final.
  std::string domain;    // Recipient domain, exact (case-insensitive).
  std::string site;
  std::string sender;  // Substring of the envelope sender.
  std::string campaign;
  std::string tenant;
  MessageId id = 0;     // One message (0: any).
  MessageId after = 0;  // Messages with a larger id only (paging).
  size_t limit = 100;

  // The message's own fields (sender, tags, id).
  bool MatchesMessage(MessageId message, const Envelope& envelope) const;
  // A recipient's (state, domain, site).
  bool MatchesRecipient(const RecipientRecord& r) const;
};

struct RecoveryStats {
  uint64_t messages = 0;
  uint64_t pending_recipients = 0;
  uint64_t final_recipients = 0;
  uint64_t rescheduled = 0;  // Schedule entries moved to another shard.
  uint64_t replayed = 0;     // Spool records applied again to RocksDB.
  absl::Duration took;
};

}  // namespace peregrine::queue
