// Queue transfer: moving queued mail to another node before this one is
// scaled down (`peregrine queue transfer --to HOST:PORT`, POST
// /api/v1/queue/transfer; the selection of queue_actions.h).
//
// Each message goes over SMTP to the other node's relay listener (from
// one of its trusted networks) with its envelope: MAIL FROM with RET and
// ENVID, each RCPT with NOTIFY and ORCPT, BODY=8BITMIME and SMTPUTF8 when
// needed; and with what SMTP has no words for in one header field put
// first, X-Peregrine-Transfer: its tags (tenant, campaign), when it was
// first received (its maximum age runs on) and its recipients' attempts
// (recipients with different counts go in transactions of their own). The
// receiving node honours and removes the field only from a trusted client
// on its relay listener, and does not sign the message again; any other
// client's field is removed unread. A recipient is final here (a
// `delivered` outcome whose reply is the other node's "250 ... queued as")
// only once the other node answered 250 after DATA, which it says only
// once the message is on its disk: a crash in between sends it twice,
// never loses it.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "mta/blocking_smtp.h"
#include "mta/queue_actions.h"
#include "queue/types.h"

namespace peregrine {

// One connection to the other node, reused message after message (RSET
// between). On the admin API's thread: blocking, with a timeout on every
// read and write.
class Transferor {
 public:
  // `to`: HOST:PORT of the other node's relay listener.
  Transferor(std::string to, std::string helo, std::string node)
      : to_(std::move(to)), helo_(std::move(helo)), node_(std::move(node)) {}

  // Sends `message` (read with its body) to `recipients` (some of its own,
  // all with the same attempts). A recipient refused at RCPT stays here;
  // every one refused is FailedPrecondition. A failure of the connection
  // or of MAIL or DATA says which step and reply (Unavailable), and the
  // connection is dropped (the next call reconnects).
  absl::StatusOr<Relayed> Relay(
      const queue::StoredMessage& message,
      const std::vector<queue::RecipientRecord>& recipients);

 private:
  absl::Status Open();
  // One command and its reply, which must be 2xx or 3xx.
  absl::StatusOr<std::string> Step(const std::string& command,
                                   const char* what);

  const std::string to_;
  const std::string helo_;
  const std::string node_;
  std::unique_ptr<BlockingSmtp> smtp_;
  bool dsn_ = false;
  bool eight_bit_ = false;
  bool utf8_ = false;
};

}  // namespace peregrine
