// The suppression list: addresses Peregrine no longer sends to.
//
// An address lands here when a failure's category says it is dead (by
// default invalid_recipient, bad_domain, inactive_mailbox), when a
// feedback-loop complaint names it, or when an operator adds it. Later mail
// to it is refused at RCPT (550 5.1.1 ... suppressed) and counted.
//
// Entries live in the queue's side table (queue/table.h), keyed by scope
// and lower-cased address, so they survive restarts and kill -9 as the
// queue does. A scope is global (""), "tenant:NAME" or "campaign:NAME";
// a lookup checks the global scope and the message's tags' scopes.
//
// Threads: every method is safe from any thread. Find() is a read (memory
// or block cache) and may run on a shard; Add/Remove write synchronously
// and belong on a worker thread or in the CLI.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "queue/table.h"

namespace peregrine::bounce {

struct SuppressionEntry {
  std::string address;
  std::string scope;     // "", "tenant:NAME" or "campaign:NAME".
  std::string category;  // A category name, "complaint" or "manual".
  std::string reason;    // The reply or report that put it here.
  std::string source;    // "delivery", "async_bounce", "complaint", "cli".
  absl::Time added = absl::UnixEpoch();
  absl::Time expires = absl::InfiniteFuture();
};

// OK for "", "tenant:NAME" and "campaign:NAME" with NAME of letters,
// digits and "._-" (up to 64).
absl::Status CheckScope(absl::string_view scope);

class SuppressionList {
 public:
  // `table` outlives the list.
  explicit SuppressionList(queue::Table* table) : table_(table) {}

  // Adds or replaces the entry for (address, scope).
  absl::Status Add(const SuppressionEntry& entry);
  // False when there was no such entry.
  absl::StatusOr<bool> Remove(absl::string_view address,
                              absl::string_view scope);
  // The entry that suppresses `address` for mail with these tags, checking
  // the global scope first; entries past their expiry do not count.
  absl::StatusOr<std::optional<SuppressionEntry>> Find(
      absl::string_view address, absl::string_view tenant,
      absl::string_view campaign, absl::Time now);
  // Every entry (expired ones too), in key order.
  absl::Status ForEach(
      const std::function<bool(const SuppressionEntry&)>& visit);

  // Told of each change Add and Remove made (the cluster shares them with
  // other nodes: mta/cluster); set before other threads use the list. A
  // removal's entry carries the address and scope alone.
  using Observer =
      std::function<void(const SuppressionEntry& entry, bool removed)>;
  void SetObserver(Observer observer) { observer_ = std::move(observer); }
  // A change another node made: applied without telling the observer. An
  // entry that is here already as it is is not written again.
  absl::Status ApplyShared(const SuppressionEntry& entry, bool removed);

  // Lookups that found an entry, since start.
  uint64_t hits() const { return hits_.load(std::memory_order_relaxed); }

 private:
  queue::Table* const table_;
  Observer observer_;
  std::atomic<uint64_t> hits_{0};
};

// CSV, one entry per line under a header:
//   address,scope,category,reason,source,added,expires
// Times in RFC 3339 ("" for never); fields with commas or quotes quoted.
std::string CsvHeader();
std::string ToCsv(const SuppressionEntry& entry);
// One line of a file to import. A line may hold only an address (the rest
// from `defaults`); the header line and empty lines give nullopt.
absl::StatusOr<std::optional<SuppressionEntry>> ParseCsvLine(
    absl::string_view line, const SuppressionEntry& defaults);

// The refusal for a suppressed recipient, without CRLF:
// "550 5.1.1 <a@b>: this address is suppressed (invalid_recipient on
// 2026-11-27: 550 5.1.1 no such user); contact the sender's postmaster".
std::string SuppressedReply(absl::string_view address,
                            const SuppressionEntry& entry);

}  // namespace peregrine::bounce
