// Outcome: what happened to mail, as one value, and the one seam it passes.
//
// Reception publishes `received` (a message is queued) and `rejected` (a
// client was refused something worth an operator's attention); the delivery
// engine publishes `delivered`, `deferred`, `failed` and `expired` for each
// recipient of each attempt. Every outcome goes through one Bus to every
// consumer: the queue update, the human log, the JSON event log, and what
// later features add (DSNs, suppression, metrics, webhooks), none of which
// the producers know about.
//
// Threads: Publish() runs on the thread where the outcome happened (a
// shard), from many shards at once. Consumers are attached before the shards
// start and outlive them. Each consumer's OnOutcome() is thread-safe and
// must not block or wait for I/O: it records what it needs and hands the
// work off (the queue's committer, a writer thread). A consumer that falls
// behind drops what it cannot hold and counts it; it never slows delivery.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "base/reply.h"
#include "mta/bounce/category.h"
#include "queue/types.h"

namespace peregrine::outcome {

enum class Kind : uint8_t {
  kReceived,   // Reception: the message is queued (one per message).
  kRejected,   // Reception: a client was refused (not queued).
  kDelivered,  // Terminal: the destination accepted the recipient.
  kDeferred,   // Not final: tried (or held), tried again at next_attempt.
  kFailed,     // Terminal: permanent failure.
  kExpired,    // Terminal: transient failures until the maximum age.
  // Bounce handling (mta/bounce), after a failure or expiry:
  kBounce,          // A recipient failed or expired: its category, its DSN.
  kDsnSent,         // A DSN was queued to the sender (id: the DSN's).
  kAsyncBounce,     // A bounce came back later, for a recipient we sent to.
  kComplaint,       // A feedback-loop report (ARF) named a recipient.
  kSuppressed,      // An address was added to the suppression list.
  kSuppressionHit,  // Mail to a suppressed address was refused or dropped.
  // The admin API: an operator's action (`reason` says which, `site` its
  // target, `client` from where).
  kAdmin,
};
absl::string_view KindName(Kind kind);
// The kind of a name KindName() gives; nullopt for any other.
std::optional<Kind> ParseKind(absl::string_view name);
// Delivered, failed and expired: a recipient has exactly one of these.
bool IsTerminal(Kind kind);

struct Tls {
  std::string version;    // "TLSv1.3"
  std::string cipher;     // "TLS_AES_256_GCM_SHA384"
  bool verified = false;  // Outbound: the chain is trusted and names the host.
};

struct Outcome {
  Kind kind = Kind::kDeferred;
  absl::Time time;
  int shard = -1;  // Where it happened; -1: not on a shard.

  queue::MessageId id = 0;  // 0: none (refused before it was queued).
  std::string sender;       // Envelope sender; "" is the null sender.
  std::string recipient;    // Delivery outcomes; a refused RCPT.
  std::vector<std::string> recipients;  // kReceived: all of the message's.
  uint64_t size = 0;                    // Message bytes, once known.
  std::string tenant;                   // The message's tags.
  std::string campaign;

  // Delivery: where it went.
  std::string site;        // The site key (MX rollup, "smarthost", ...).
  std::string mx;          // MX host name tried last.
  std::string ip;          // Its address.
  std::string source;      // Egress source name ([[delivery.sources]]).
  std::optional<Tls> tls;  // nullopt: the session was not encrypted.
  // Outbound: the TLS policy that applied: "mta-sts" (enforced),
  // "mta-sts-testing", "smarthost", or the site's mode ("opportunistic",
  // "required", "verify", "none"); "" when no connection was made.
  std::string tls_policy;
  // A TLS policy's failure (RFC 8460 4.3 result types:
  // "starttls-not-supported", "validation-failure", "dnssec-invalid",
  // "sts-policy-fetch-error", "sts-policy-invalid", ...); "" when none. A
  // delivery under an MTA-STS policy in testing mode can carry one too.
  std::string tls_failure;

  // The remote reply, or Peregrine's own with a proper enhanced code.
  Reply reply;
  // What Peregrine adds in words: why a client was refused, how a
  // recipient expired ("expired after 9 attempts over 5d").
  std::string reason;
  // Failed, deferred and expired: what kind of failure the reply reports
  // (mta/bounce), and the rule that said so.
  std::optional<bounce::Category> category;
  std::string category_rule;
  uint32_t attempt = 0;  // Delivery: this attempt's number, from 1.
  absl::Duration queue_time = absl::ZeroDuration();  // Since received.
  absl::Time next_attempt = absl::InfinitePast();    // kDeferred.

  // Reception: who sent it, and on which listener.
  std::string client;  // The client's address.
  std::string helo;
  std::string auth_user;
  std::string listener;  // "relay", "submission" or "submissions".

  // Delivery outcomes, for the queue update: the record as it was claimed,
  // whether this counts as an attempt (false: held by a suspended site),
  // and time held to add to the record.
  queue::RecipientRecord record;
  bool attempted = true;
  absl::Duration held_more = absl::ZeroDuration();
  // An operator's action through the admin API made this outcome (a
  // kFailed that is no attempt): "bounce" (a DSN goes as policy says) or
  // "delete" (no DSN). Neither adds the recipient to the suppression list.
  std::string operator_action;
};

// The kFailed outcome of an operator's bounce or delete of recipient `r`
// (admin API): the reply and reason say so. The caller adds the message's
// fields (id, sender, tags, size, queue time) and where it happened.
Outcome OperatorFailure(const queue::RecipientRecord& r, bool deleted);

// Gets every outcome; see the thread rule at the top.
class Consumer {
 public:
  virtual ~Consumer() = default;
  virtual void OnOutcome(const Outcome& outcome) = 0;
};

// The seam. Consumers are called in the order attached: the queue update
// first, so it never waits on another.
class Bus {
 public:
  // Before the first Publish(); `consumer` outlives the bus's use.
  void Attach(Consumer* consumer) { consumers_.push_back(consumer); }
  void Publish(const Outcome& outcome) const {
    for (Consumer* c : consumers_) c->OnOutcome(outcome);
  }

 private:
  std::vector<Consumer*> consumers_;
};

}  // namespace peregrine::outcome
