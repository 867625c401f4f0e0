#include "mta/bounce/dsn.h"

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace peregrine::bounce {
namespace {

std::string Rfc5322Date(absl::Time t) {
  return absl::FormatTime("%a, %d %b %Y %H:%M:%S +0000", t,
                          absl::UTCTimeZone());
}

// Header and report field values must stay on one line and in ASCII.
std::string OneLine(absl::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    unsigned char u = static_cast<unsigned char>(c);
    out += (u < 0x20 || u == 0x7F) ? ' ' : (u >= 0x80 ? '?' : c);
  }
  return out;
}

// What the sender should know and do, for each kind of failure.
absl::string_view Advice(Category c) {
  switch (c) {
    case Category::kInvalidRecipient:
      return "The address does not exist there. Check it for typing "
             "mistakes; do not send to it again as it is.";
    case Category::kBadDomain:
      return "The domain of the address does not exist or takes no mail. "
             "Check the part after the @.";
    case Category::kMailboxFull:
      return "The mailbox is full. The recipient has to make room; you can "
             "try again later.";
    case Category::kInactiveMailbox:
      return "The mailbox is disabled or no longer used. Reach the person "
             "another way.";
    case Category::kMessageTooLarge:
      return "The message is larger than the receiving side accepts. Send "
             "it again smaller, or share big files by a link.";
    case Category::kContentRejected:
    case Category::kSpamBlock:
      return "The receiving side refused the content of the message as "
             "spam or unwanted. Review the message and its links.";
    case Category::kIpReputation:
      return "The receiving side refused mail from this server's address. "
             "Ask the administrator of this server to look at its "
             "reputation and block lists.";
    case Category::kAuthFailure:
      return "The message failed the receiving side's sender checks (SPF, "
             "DKIM or DMARC). Ask the administrator of your domain to check "
             "its DNS records.";
    case Category::kPolicy:
      return "The receiving side's policy refused the message.";
    case Category::kRateLimited:
      return "The receiving side accepted no more mail from this server for "
             "now.";
    case Category::kTlsRequired:
      return "The receiving side requires an encrypted connection that "
             "could not be made.";
    case Category::kDnsFailure:
      return "The receiving domain's DNS could not be looked up.";
    case Category::kConnection:
      return "The receiving mail server could not be reached.";
    case Category::kExpired:
      return "It could not be delivered in the time the queue keeps mail; "
             "see the last reply below.";
    case Category::kUnknown:
      break;
  }
  return "See the reply of the receiving server below.";
}

// `text` in lines of at most 76 characters where words allow, each after
// `indent`, CRLF after each.
std::string Wrap(absl::string_view text, absl::string_view indent) {
  std::string out, line(indent);
  for (absl::string_view word : absl::StrSplit(text, ' ', absl::SkipEmpty())) {
    if (line.size() > indent.size() && line.size() + 1 + word.size() > 76) {
      absl::StrAppend(&out, line, "\r\n");
      line = absl::StrCat(indent, "  ");
    } else if (line.size() > indent.size()) {
      line += ' ';
    }
    line.append(word.data(), word.size());
  }
  if (line.size() > indent.size()) absl::StrAppend(&out, line, "\r\n");
  return out;
}

}  // namespace

std::string DecodeXtext(absl::string_view xtext) {
  std::string out;
  out.reserve(xtext.size());
  for (size_t i = 0; i < xtext.size(); ++i) {
    int value = 0;
    if (xtext[i] == '+' && i + 2 < xtext.size() &&
        absl::ascii_isxdigit(static_cast<unsigned char>(xtext[i + 1])) &&
        absl::ascii_isxdigit(static_cast<unsigned char>(xtext[i + 2]))) {
      absl::SimpleHexAtoi(xtext.substr(i + 1, 2), &value);
      out += static_cast<char>(value);
      i += 2;
    } else {
      out += xtext[i];
    }
  }
  return out;
}

std::string DsnStatus(const Reply& reply, Category category, DsnAction action) {
  char cls = action == DsnAction::kDelayed    ? '4'
             : reply.code >= 500              ? '5'
             : category == Category::kExpired ? '4'
                                              : '5';
  if (IsEnhancedStatus(reply.enhanced)) {
    std::string s = reply.enhanced;
    // A failure reported from a transient reply (an expiry) keeps its
    // detail; RFC 3464 wants the class of the reply it reports.
    if (s[0] != '2') return s;
  }
  absl::string_view detail;
  switch (category) {
    case Category::kInvalidRecipient:
      detail = ".1.1";
      break;
    case Category::kBadDomain:
      detail = ".1.2";
      break;
    case Category::kMailboxFull:
      detail = ".2.2";
      break;
    case Category::kInactiveMailbox:
      detail = ".2.1";
      break;
    case Category::kMessageTooLarge:
      detail = ".3.4";
      break;
    case Category::kContentRejected:
    case Category::kSpamBlock:
      detail = ".7.1";
      break;
    case Category::kAuthFailure:
      detail = ".7.26";
      break;
    case Category::kTlsRequired:
      detail = ".7.10";
      break;
    case Category::kDnsFailure:
      detail = ".4.3";
      break;
    case Category::kConnection:
      detail = ".4.1";
      break;
    case Category::kExpired:
      detail = ".4.7";
      break;
    default:
      detail = ".0.0";
      break;
  }
  return absl::StrCat(std::string(1, cls), detail);
}

absl::string_view HeaderSection(absl::string_view message) {
  size_t end = message.find("\r\n\r\n");
  if (end != absl::string_view::npos) return message.substr(0, end + 2);
  end = message.find("\n\n");
  if (end != absl::string_view::npos) return message.substr(0, end + 1);
  return message;
}

std::string BuildDsn(const DsnInput& in) {
  bool delayed = !in.recipients.empty() &&
                 in.recipients.front().action == DsnAction::kDelayed;
  std::string host = OneLine(in.reporting_mta);
  std::string out;
  absl::StrAppend(&out, "From: Mail Delivery System <MAILER-DAEMON@", host,
                  ">\r\n");
  absl::StrAppend(&out, "To: <", OneLine(in.sender), ">\r\n");
  absl::StrAppend(&out, "Subject: ",
                  delayed ? "Delayed Mail (still being retried)"
                          : "Undelivered Mail Returned to Sender",
                  "\r\n");
  absl::StrAppend(&out, "Date: ", Rfc5322Date(in.now), "\r\n");
  absl::StrAppend(&out, "Message-ID: ", OneLine(in.message_id), "\r\n");
  // RFC 3834: machines must not answer it.
  out += "Auto-Submitted: auto-replied\r\n";
  out += "MIME-Version: 1.0\r\n";
  absl::StrAppend(&out,
                  "Content-Type: multipart/report; "
                  "report-type=delivery-status;\r\n\tboundary=\"",
                  in.boundary, "\"\r\n\r\n");
  out += "This is a MIME-encapsulated message.\r\n\r\n";

  // 1. Plain words.
  absl::StrAppend(&out, "--", in.boundary, "\r\n");
  out += "Content-Description: Notification\r\n";
  out += "Content-Type: text/plain; charset=us-ascii\r\n\r\n";
  absl::StrAppend(&out, "This is the mail system at ", host, ".\r\n\r\n");
  if (delayed) {
    out +=
        "Your message could not be delivered yet to the recipients below. "
        "It is\r\nstill in the queue and will be tried again; you need do "
        "nothing now.\r\n";
  } else {
    out +=
        "Your message could not be delivered to the recipients below. It "
        "was not\r\ndelivered to them and will not be tried again.\r\n";
  }
  for (const DsnRecipient& r : in.recipients) {
    absl::StrAppend(&out, "\r\n<", OneLine(r.address), ">:\r\n");
    if (!r.reason.empty()) {
      out += Wrap(absl::StrCat(OneLine(r.reason), "."), "    ");
    }
    out += Wrap(Advice(r.category), "    ");
    if (r.reply.code != 0 || !r.reply.text.empty()) {
      out += Wrap(
          absl::StrCat(r.remote ? absl::StrCat(OneLine(r.remote_mta), " said:")
                                : std::string("Reason:"),
                       " ", OneLine(r.reply.ToString())),
          "    ");
    }
    if (r.action == DsnAction::kDelayed &&
        r.retry_until != absl::InfinitePast()) {
      absl::StrAppend(&out, "    It will be tried until ",
                      Rfc5322Date(r.retry_until), ".\r\n");
    }
  }
  out += "\r\n";

  // 2. The report.
  absl::StrAppend(&out, "--", in.boundary, "\r\n");
  out += "Content-Description: Delivery report\r\n";
  out += "Content-Type: message/delivery-status\r\n\r\n";
  absl::StrAppend(&out, "Reporting-MTA: dns; ", host, "\r\n");
  if (!in.envid.empty()) {
    absl::StrAppend(
        &out, "Original-Envelope-Id: ", OneLine(DecodeXtext(in.envid)), "\r\n");
  }
  if (in.arrival != absl::InfinitePast()) {
    absl::StrAppend(&out, "Arrival-Date: ", Rfc5322Date(in.arrival), "\r\n");
  }
  for (const DsnRecipient& r : in.recipients) {
    out += "\r\n";
    if (!r.orcpt.empty()) {
      std::vector<absl::string_view> parts =
          absl::StrSplit(r.orcpt, absl::MaxSplits(';', 1));
      if (parts.size() == 2) {
        absl::StrAppend(&out, "Original-Recipient: ", OneLine(parts[0]), ";",
                        OneLine(DecodeXtext(parts[1])), "\r\n");
      }
    }
    absl::StrAppend(&out, "Final-Recipient: rfc822; ", OneLine(r.address),
                    "\r\n");
    absl::StrAppend(&out, "Action: ",
                    r.action == DsnAction::kDelayed ? "delayed" : "failed",
                    "\r\n");
    absl::StrAppend(&out, "Status: ", DsnStatus(r.reply, r.category, r.action),
                    "\r\n");
    if (r.remote && !r.remote_mta.empty()) {
      absl::StrAppend(&out, "Remote-MTA: dns; ", OneLine(r.remote_mta), "\r\n");
    }
    if (r.reply.code != 0) {
      absl::StrAppend(&out, "Diagnostic-Code: smtp; ",
                      OneLine(r.reply.ToString()), "\r\n");
    } else if (!r.reply.text.empty()) {
      absl::StrAppend(&out, "Diagnostic-Code: X-Peregrine; ",
                      OneLine(r.reply.text), "\r\n");
    }
    if (r.last_attempt != absl::InfinitePast()) {
      absl::StrAppend(&out, "Last-Attempt-Date: ", Rfc5322Date(r.last_attempt),
                      "\r\n");
    }
    if (r.action == DsnAction::kDelayed &&
        r.retry_until != absl::InfinitePast()) {
      absl::StrAppend(&out, "Will-Retry-Until: ", Rfc5322Date(r.retry_until),
                      "\r\n");
    }
  }
  out += "\r\n";

  // 3. The message returned.
  bool full = !delayed && in.ret != queue::DsnRet::kHeaders &&
              in.original.size() <= in.full_limit;
  absl::StrAppend(&out, "--", in.boundary, "\r\n");
  if (full) {
    out += "Content-Description: Undelivered Message\r\n";
    out += "Content-Type: message/rfc822\r\n\r\n";
    out += in.original;
    if (!absl::EndsWith(in.original, "\r\n")) out += "\r\n";
  } else {
    out += "Content-Description: Undelivered Message Headers\r\n";
    out += "Content-Type: text/rfc822-headers\r\n\r\n";
    absl::string_view headers = HeaderSection(in.original);
    out.append(headers.data(), headers.size());
    if (!absl::EndsWith(headers, "\r\n")) out += "\r\n";
  }
  absl::StrAppend(&out, "\r\n--", in.boundary, "--\r\n");
  return out;
}

}  // namespace peregrine::bounce
