#include "mta/outcome/consumers.h"

#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "base/log.h"

namespace peregrine::outcome {
namespace {

std::string Quoted(absl::string_view text) {
  std::string out;
  for (char c : text) {
    if (c == '"' || c == '\\') out += '\\';
    out += (static_cast<unsigned char>(c) < 0x20) ? ' ' : c;
  }
  return absl::StrCat("\"", out, "\"");
}

// " category=mailbox_full" after a failure's line; "" when there is none.
std::string CategoryText(const Outcome& o) {
  if (!o.category) return "";
  return absl::StrCat(" category=", bounce::CategoryName(*o.category));
}

std::string TlsText(const Outcome& o, bool outbound) {
  if (!o.tls) return "none";
  return absl::StrCat(o.tls->version, " ", o.tls->cipher,
                      !outbound         ? ""
                      : o.tls->verified ? " verified"
                                        : " unverified");
}

absl::string_view ListenerWords(absl::string_view listener) {
  if (listener == "relay") return "the relay port";
  if (listener == "submission") return "the submission port";
  if (listener == "submissions") return "the implicit-TLS port";
  return listener;
}

}  // namespace

void QueueRecorder::OnOutcome(const Outcome& o) {
  queue::RecipientUpdate u;
  switch (o.kind) {
    case Kind::kDelivered:
      u.state = queue::RecipientState::kDelivered;
      break;
    case Kind::kDeferred:
      u.state = queue::RecipientState::kDeferred;
      u.next_attempt = o.next_attempt;
      break;
    case Kind::kFailed:
      u.state = queue::RecipientState::kFailed;
      break;
    case Kind::kExpired:
      u.state = queue::RecipientState::kExpired;
      break;
    default:  // Reception and bounce handling: nothing to record here.
      return;
  }
  u.before = o.record;
  u.reply = o.reply;
  if (o.kind == Kind::kExpired) {
    // The record keeps why it gave up, with the last reply's codes.
    u.reply.text = absl::StrCat(o.reason, "; last: ", o.reply.text);
  }
  u.attempted = o.attempted;
  u.held_more = o.held_more;
  if (diverter_ != nullptr && diverter_->Divert(o, u)) return;
  queue_->Update(std::move(u), [id = o.record.message,
                                index = o.record.index](absl::Status s) {
    if (!s.ok()) {
      log::Error("delivery", "id=%s recipient %u: recording the outcome: %s",
                 queue::FormatMessageId(id), index, s.message());
    }
  });
}

void HumanLog::OnOutcome(const Outcome& o) {
  std::string id = queue::FormatMessageId(o.id);
  switch (o.kind) {
    case Kind::kReceived:
      return log::Info(
          "smtpd",
          "received id=%s client=%s from=<%s> rcpt=%d size=%d tls=%s "
          "auth=%s",
          id, o.client, o.sender, o.recipients.size(), o.size,
          TlsText(o, false), o.auth_user.empty() ? "-" : o.auth_user);
    case Kind::kRejected:
      return log::Warn("smtpd", "refused %s on %s: %s (%s)", o.client,
                       ListenerWords(o.listener), o.reply.ToString(), o.reason);
    case Kind::kDelivered:
      return log::Info(
          "delivery",
          "delivered id=%s to=<%s> host=%s[%s] tls=%s attempts=%u delay=%s "
          "reply=%s policy=%s%s",
          id, o.recipient, o.mx, o.ip, TlsText(o, true), o.attempt,
          absl::FormatDuration(
              absl::Trunc(o.queue_time, absl::Milliseconds(1))),
          Quoted(o.reply.ToString()), o.tls_policy.empty() ? "-" : o.tls_policy,
          o.reason.empty() ? "" : absl::StrCat(" note=", Quoted(o.reason)));
    case Kind::kDeferred:
      if (!o.attempted) return;
      return log::Info("delivery",
                       "deferred id=%s to=<%s> attempts=%u next=%s reply=%s%s",
                       id, o.recipient, o.attempt,
                       absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", o.next_attempt,
                                        absl::UTCTimeZone()),
                       Quoted(o.reply.ToString()), CategoryText(o));
    case Kind::kFailed:
      return log::Info(
          "delivery", "failed id=%s to=<%s> attempts=%u reply=%s%s", id,
          o.recipient, o.attempt, Quoted(o.reply.ToString()), CategoryText(o));
    case Kind::kExpired:
      return log::Info(
          "delivery", "expired id=%s to=<%s> reply=%s%s", id, o.recipient,
          Quoted(absl::StrCat(o.reason, "; last: ", o.reply.ToString())),
          CategoryText(o));
    case Kind::kBounce:
      return log::Info("bounce", "bounce id=%s to=<%s>%s: %s", id, o.recipient,
                       CategoryText(o), o.reason);
    case Kind::kDsnSent:
      return log::Info("bounce", "dsn id=%s to=<%s>: %s", id, o.recipient,
                       o.reason);
    case Kind::kAsyncBounce:
      return log::Info("bounce", "async bounce to=<%s> reply=%s%s: %s",
                       o.recipient, Quoted(o.reply.ToString()), CategoryText(o),
                       o.reason);
    case Kind::kComplaint:
      return log::Info("bounce", "complaint to=<%s>: %s", o.recipient,
                       o.reason);
    case Kind::kSuppressed:
      return log::Info("bounce", "suppressed <%s>%s: %s", o.recipient,
                       CategoryText(o), o.reason);
    case Kind::kSuppressionHit:
      return log::Info("bounce", "suppression hit to=<%s> from=<%s>: %s",
                       o.recipient, o.sender, o.reason);
    case Kind::kAdmin:
      return log::Info("admin", "%s (from %s)", o.reason, o.client);
  }
}

}  // namespace peregrine::outcome
