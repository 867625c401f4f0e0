// HTTP injection: POST /api/v1/inject (and /api/inject/v1, the request and
// response of KumoMTA's HTTP injection API v1, so that a campaign platform
// written against it works unchanged).
//
// Request (JSON):
//   envelope_sender   the MAIL FROM address ("" for the null sender)
//   content           a complete RFC 5322 message (a string), or parts:
//                     {from: {email, name}, reply_to, subject, text_body,
//                      html_body, headers: {name: value},
//                      attachments: [{data, content_type, file_name,
//                                     base64}]}
//   recipients        [{email, name, substitutions: {...}}]
//   substitutions     for every recipient (a recipient's own win)
//   campaign, tenant  Peregrine's tags (also taken from X-Campaign and
//                     X-Tenant in `headers`); the event log and metrics
//                     carry them
// Each recipient gets a message of its own, rendered with mustache
// (Debian's libmstch): {{ name }} in the subject, the bodies, the header
// values and a complete message. libmstch parses the template again for
// every call, which was most of a 1,000-recipient batch's CPU: a template
// whose tags are all plain variables ({{ x }}, {{{ x }}}, {{& x }}) is
// split once per request and filled per recipient with the same values
// mustache would insert; any other template (sections, partials, dotted
// names) or a value that is a list, an object or a boolean goes to
// libmstch. Values are inserted as they are, except in
// html_body, where they are HTML-escaped. The message is DKIM-signed as SMTP
// mail is, and the answer comes only once every message is on disk (the
// group commit), like SMTP's 250.
//
// Response: {"success_count", "fail_count", "failed_recipients",
// "errors"} (KumoMTA's), plus "ids": [{"recipient", "id"}] for the queued
// ones. A malformed or suppressed recipient fails alone, not the batch; a
// malformed request (not JSON, no recipients, no content) is a 400 that
// names the field.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/functional/any_invocable.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "mta/reception.h"
#include "mta/shard/reactor.h"
#include "nlohmann/json.hpp"

namespace peregrine {

struct InjectAttachment {
  std::string data;  // Decoded.
  std::string content_type = "application/octet-stream";
  std::string file_name;
};

struct InjectRecipient {
  std::string email;
  std::string name;
  nlohmann::json substitutions = nlohmann::json::object();
};

// The request's templates split once at their {{ variables }}, so that
// each recipient's rendering is a fill, not a parse (inject.cc).
struct CompiledTemplates;

struct InjectRequest {
  std::string sender;
  // Either a complete message...
  bool raw = false;
  std::string message;
  // ...or parts.
  std::string from_email, from_name, reply_to, subject, text_body, html_body;
  std::vector<std::pair<std::string, std::string>> headers;
  std::vector<InjectAttachment> attachments;

  std::vector<InjectRecipient> recipients;
  nlohmann::json substitutions = nlohmann::json::object();
  std::string campaign, tenant;
  std::shared_ptr<const CompiledTemplates> compiled;  // By ParseInjectRequest.
};

// The request from its JSON; an error names the field and what it needs.
// At most `max_recipients` recipients.
absl::StatusOr<InjectRequest> ParseInjectRequest(absl::string_view body,
                                                 size_t max_recipients);

// One recipient's message, CRLF line ends, without the Received field.
// `hostname` makes the Message-ID. Fails when a template does not render.
absl::StatusOr<std::string> RenderMessage(const InjectRequest& request,
                                          const InjectRecipient& recipient,
                                          absl::Time now,
                                          absl::string_view hostname);

// A plausible address: local@domain with one @, the local part at most 64
// bytes, printable ASCII or UTF-8, no spaces, at most 254 bytes.
bool PlausibleAddress(absl::string_view address);

// Queues an injection on the calling shard and answers `done` there, with
// the HTTP status and the JSON body, once every message is on disk.
//
// Lifetime: the batch owns itself; `done` runs exactly once, on `reactor`,
// after every queue write and signature it started has answered. The
// caller keeps whatever `done` refers to alive until then (the admin
// connection holds itself open for it).
void Inject(const ReceptionContext& context, shard::Reactor& reactor,
            InjectRequest request, std::string client,
            absl::AnyInvocable<void(int status, std::string body)> done);

}  // namespace peregrine
