// Reading bounces and complaints that come back by mail.
//
// Three shapes:
//   - a DSN (RFC 3464): multipart/report; report-type=delivery-status, its
//     message/delivery-status part naming each recipient with its action,
//     status and the remote server's reply;
//   - a feedback report (ARF, RFC 5965): multipart/report;
//     report-type=feedback-report, a complaint from a provider's feedback
//     loop, with the original message (and so its return path) inside;
//   - a plain-text bounce (qmail, old Exim, some providers), read by
//     looking for the address and the SMTP reply near each other.
// The returned message (message/rfc822 or text/rfc822-headers) gives the
// original Message-ID and return path, where a VERP token may be found.
//
// MIME is GMime's (libgmime-3.0); the DSN fields and the plain-text shapes
// are read here (GMime has no DSN API). Pure: bytes in, a value out; any
// input, however malformed, gives a value (with `error` set when nothing
// could be read), never a crash. Thread-safe.
#pragma once

#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "base/reply.h"
#include "mta/bounce/category.h"
#include "mta/bounce/classifier.h"

namespace peregrine::bounce {

struct ReportedRecipient {
  std::string recipient;           // Final-Recipient's address.
  std::string original_recipient;  // Original-Recipient's, when given.
  std::string action;              // failed, delayed, delivered, ...
  std::string status;              // "5.1.1"
  std::string remote_mta;
  std::string diagnostic;  // "smtp; 550 5.1.1 ..." as given.
  Reply reply;             // The diagnostic's SMTP reply, when it has one.
  Category category = Category::kUnknown;
  std::string rule;  // The classification rule that matched.
};

struct Report {
  enum class Kind { kUnknown, kDsn, kFeedback, kPlainBounce };
  Kind kind = Kind::kUnknown;
  std::string reporting_mta;
  std::vector<ReportedRecipient> recipients;
  // ARF.
  std::string feedback_type;     // "abuse", "fraud", ...
  std::string original_rcpt_to;  // Original-Rcpt-To, when given.
  // The returned message, when there is one.
  std::string original_message_id;
  std::string original_return_path;
  std::string original_to;
  std::string original_from;
  std::string subject;  // Of the report itself.
  // Addresses seen where a VERP token may hide (return paths, To: of the
  // returned message), for the caller to check.
  std::vector<std::string> candidates;
  std::string error;  // Why nothing could be read; "" otherwise.
};

absl::string_view ReportKindName(Report::Kind kind);

// Any bytes: LF, CRLF or CR line ends. `classifier` (may be null) gives
// each recipient's category.
Report ParseReport(absl::string_view message, const Classifier* classifier);

}  // namespace peregrine::bounce
