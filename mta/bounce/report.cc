#include "mta/bounce/report.h"

#include <gmime/gmime.h>

#include <mutex>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "re2/re2.h"

namespace peregrine::bounce {
namespace {

// Inputs past this are cut: a report that large is not a report, and the
// parser's memory stays bounded.
constexpr size_t kMaxInput = 32 << 20;
// Bytes of plain text searched for a bounce's shape.
constexpr size_t kMaxText = 256 << 10;
constexpr size_t kMaxRecipients = 1000;

void InitGmime() {
  static std::once_flag once;
  std::call_once(once, [] { g_mime_init(); });
}

// GObject references, released at scope end.
template <typename T>
struct Ref {
  T* p = nullptr;
  explicit Ref(T* ptr) : p(ptr) {}
  ~Ref() {
    if (p != nullptr) g_object_unref(p);
  }
  Ref(const Ref&) = delete;
  Ref& operator=(const Ref&) = delete;
};

// LF everywhere (GMime reads LF and CRLF; CR alone it does not).
std::string Normalize(absl::string_view in) {
  std::string out;
  out.reserve(in.size());
  for (size_t i = 0; i < in.size(); ++i) {
    if (in[i] == '\r') {
      out += '\n';
      if (i + 1 < in.size() && in[i + 1] == '\n') ++i;
    } else {
      out += in[i];
    }
  }
  return out;
}

// The decoded content of a leaf part, or the raw content of anything else.
std::string Content(GMimeObject* obj) {
  Ref<GMimeStream> mem(g_mime_stream_mem_new());
  if (GMIME_IS_PART(obj)) {
    GMimeDataWrapper* w = g_mime_part_get_content(GMIME_PART(obj));
    if (w != nullptr) g_mime_data_wrapper_write_to_stream(w, mem.p);
  } else {
    g_mime_object_write_content_to_stream(obj, nullptr, mem.p);
  }
  GByteArray* bytes = g_mime_stream_mem_get_byte_array(GMIME_STREAM_MEM(mem.p));
  if (bytes == nullptr) return "";
  return std::string(reinterpret_cast<const char*>(bytes->data),
                     std::min<size_t>(bytes->len, kMaxInput));
}

bool IsType(GMimeObject* obj, const char* type, const char* subtype) {
  GMimeContentType* ct = g_mime_object_get_content_type(obj);
  return ct != nullptr && g_mime_content_type_is_type(ct, type, subtype);
}

// Header-style fields (RFC 822 folding) in blocks split by empty lines: the
// body of message/delivery-status and message/feedback-report. By hand:
// GMime parses MIME, not these fields.
using Fields = std::vector<std::pair<std::string, std::string>>;

std::vector<Fields> FieldBlocks(absl::string_view text) {
  std::vector<Fields> blocks(1);
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    if (absl::StripAsciiWhitespace(line).empty()) {
      if (!blocks.back().empty()) blocks.emplace_back();
      continue;
    }
    if ((line[0] == ' ' || line[0] == '\t') && !blocks.back().empty()) {
      absl::StrAppend(&blocks.back().back().second, " ",
                      absl::StripAsciiWhitespace(line));
      continue;
    }
    size_t colon = line.find(':');
    if (colon == absl::string_view::npos || colon == 0) continue;
    blocks.back().emplace_back(
        absl::AsciiStrToLower(
            absl::StripAsciiWhitespace(line.substr(0, colon))),
        std::string(absl::StripAsciiWhitespace(line.substr(colon + 1))));
    if (blocks.back().size() > 200) break;  // No real block is that long.
  }
  if (blocks.back().empty()) blocks.pop_back();
  return blocks;
}

std::string Field(const Fields& f, absl::string_view name) {
  for (const auto& [k, v] : f) {
    if (k == name) return v;
  }
  return "";
}

// "rfc822; a@b" -> "a@b"; "<a@b>" -> "a@b".
std::string AddressOf(absl::string_view typed) {
  size_t semi = typed.find(';');
  if (semi != absl::string_view::npos) typed = typed.substr(semi + 1);
  typed = absl::StripAsciiWhitespace(typed);
  absl::ConsumePrefix(&typed, "<");
  absl::ConsumeSuffix(&typed, ">");
  return std::string(absl::StripAsciiWhitespace(typed));
}

// The SMTP reply inside a diagnostic ("smtp; 550-5.1.1 The email ...").
Reply ReplyOf(absl::string_view diagnostic, absl::string_view status) {
  size_t semi = diagnostic.find(';');
  absl::string_view text = semi != absl::string_view::npos
                               ? diagnostic.substr(semi + 1)
                               : diagnostic;
  text = absl::StripAsciiWhitespace(text);
  std::string joined(text);
  // Multi-line replies come as "550-5.1.1 a 550-5.1.1 b 550 5.1.1 c".
  if (joined.size() > 4 && absl::ascii_isdigit(joined[0]) &&
      absl::ascii_isdigit(joined[1]) && absl::ascii_isdigit(joined[2]) &&
      joined[3] == '-') {
    joined[3] = ' ';
  }
  Reply r = Reply::Parse(joined);
  if (r.code == 0) {
    // A diagnostic without a code still says what happened.
    r.text = std::string(text);
    if (IsEnhancedStatus(status)) {
      r.code = status[0] == '5' ? 550 : 450;
      r.enhanced = std::string(status);
    }
  } else {
    // The continuation lines' codes, folded into the text: away.
    RE2 repeat(absl::StrCat(R"((^|\s))", r.code,
                            R"([ -](?:[245]\.\d{1,3}\.\d{1,3}\s+)?)"));
    RE2::GlobalReplace(&r.text, repeat, "\\1");
    r.text = std::string(absl::StripAsciiWhitespace(r.text));
  }
  return r;
}

void Classify(ReportedRecipient& r, const Classifier* classifier) {
  if (r.reply.code == 0 && IsEnhancedStatus(r.status)) {
    r.reply.code = r.status[0] == '5' ? 550 : r.status[0] == '4' ? 450 : 250;
    r.reply.enhanced = r.status;
  }
  if (r.status.empty() && IsEnhancedStatus(r.reply.enhanced)) {
    r.status = r.reply.enhanced;
  }
  if (r.status.empty() && r.reply.code >= 400) {
    r.status = r.reply.code >= 500 ? "5.0.0" : "4.0.0";
  }
  if (classifier == nullptr) return;
  Reply subject = r.reply;
  if (subject.enhanced.empty() && IsEnhancedStatus(r.status)) {
    subject.enhanced = r.status;
  }
  Verdict v = classifier->Classify(subject);
  r.category = v.category;
  r.rule = v.rule;
}

struct Walk {
  Report& report;
  GMimeObject* status = nullptr;    // message/delivery-status
  GMimeObject* feedback = nullptr;  // message/feedback-report
  GMimeMessage* returned = nullptr;
  std::string returned_headers;  // text/rfc822-headers
  std::string text;              // text/plain parts, for plain bounces
  int depth = 0;
};

void Visit(GMimeObject* obj, Walk& w) {
  if (obj == nullptr || ++w.depth > 64) return;
  if (GMIME_IS_MULTIPART(obj)) {
    GMimeMultipart* mp = GMIME_MULTIPART(obj);
    int n = g_mime_multipart_get_count(mp);
    for (int i = 0; i < n && i < 100; ++i) {
      Visit(g_mime_multipart_get_part(mp, i), w);
    }
  } else if (IsType(obj, "message", "delivery-status") ||
             IsType(obj, "message", "global-delivery-status")) {
    if (w.status == nullptr) w.status = obj;
  } else if (IsType(obj, "message", "feedback-report")) {
    if (w.feedback == nullptr) w.feedback = obj;
  } else if (GMIME_IS_MESSAGE_PART(obj)) {
    if (w.returned == nullptr) {
      w.returned = g_mime_message_part_get_message(GMIME_MESSAGE_PART(obj));
    }
  } else if (IsType(obj, "text", "rfc822-headers") ||
             IsType(obj, "text", "rfc822-header")) {
    if (w.returned_headers.empty()) w.returned_headers = Content(obj);
  } else if (IsType(obj, "text", "plain") && w.text.size() < kMaxText) {
    absl::StrAppend(&w.text, Content(obj).substr(0, kMaxText), "\n");
  }
  --w.depth;
}

void ReadDsn(absl::string_view body, Report& report,
             const Classifier* classifier) {
  std::vector<Fields> blocks = FieldBlocks(Normalize(body));
  if (blocks.empty()) return;
  report.reporting_mta = AddressOf(Field(blocks[0], "reporting-mta"));
  for (size_t i = 0; i < blocks.size(); ++i) {
    const Fields& b = blocks[i];
    std::string final_rcpt = Field(b, "final-recipient");
    std::string original = Field(b, "original-recipient");
    if (final_rcpt.empty() && original.empty()) continue;
    if (report.recipients.size() >= kMaxRecipients) break;
    ReportedRecipient r;
    r.recipient = AddressOf(final_rcpt.empty() ? original : final_rcpt);
    r.original_recipient = original.empty() ? "" : AddressOf(original);
    r.action = absl::AsciiStrToLower(Field(b, "action"));
    std::string status = Field(b, "status");
    // "5.1.1 (bad destination mailbox address)": the code only.
    r.status = std::string(absl::StripAsciiWhitespace(
        absl::string_view(status).substr(0, status.find_first_of(" (\t"))));
    r.remote_mta = AddressOf(Field(b, "remote-mta"));
    r.diagnostic = Field(b, "diagnostic-code");
    if (!r.diagnostic.empty()) r.reply = ReplyOf(r.diagnostic, r.status);
    // Some MTAs (Exim) give a bare "5.0.0" next to a diagnostic that says
    // more: the reply's own code of the same class is the better status.
    if (absl::EndsWith(r.status, ".0.0") &&
        IsEnhancedStatus(r.reply.enhanced) &&
        r.reply.enhanced[0] == r.status[0]) {
      r.status = r.reply.enhanced;
    }
    Classify(r, classifier);
    report.recipients.push_back(std::move(r));
  }
}

void ReadFeedback(absl::string_view body, Report& report) {
  std::vector<Fields> blocks = FieldBlocks(Normalize(body));
  if (blocks.empty()) return;
  report.feedback_type =
      absl::AsciiStrToLower(Field(blocks[0], "feedback-type"));
  report.original_rcpt_to = AddressOf(Field(blocks[0], "original-rcpt-to"));
  report.reporting_mta = AddressOf(Field(blocks[0], "reporting-mta"));
  std::string from = AddressOf(Field(blocks[0], "original-mail-from"));
  if (!from.empty()) report.candidates.push_back(from);
}

void ReadReturnedHeaders(absl::string_view headers, Report& report) {
  std::vector<Fields> blocks = FieldBlocks(Normalize(headers));
  if (blocks.empty()) return;
  const Fields& h = blocks[0];
  if (report.original_message_id.empty()) {
    report.original_message_id = AddressOf(Field(h, "message-id"));
  }
  if (report.original_return_path.empty()) {
    report.original_return_path = AddressOf(Field(h, "return-path"));
  }
  if (report.original_to.empty()) report.original_to = Field(h, "to");
  if (report.original_from.empty()) report.original_from = Field(h, "from");
}

re2::StringPiece Piece(absl::string_view s) {
  return re2::StringPiece(s.data(), s.size());
}

// Plain-text bounces: an address, and an SMTP reply after it.
void ReadPlain(absl::string_view text, absl::string_view bounce_to,
               Report& report, const Classifier* classifier) {
  static const LazyRE2 kAddress = {
      R"(<?([A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+)>?)"};
  static const LazyRE2 kReply = {
      R"((?:^|[^0-9])([45][0-9][0-9])[ :-]((?:[45]\.[0-9]{1,3}\.[0-9]{1,3})?)\s*(.*))"};
  std::string normalized = Normalize(text.substr(0, kMaxText));
  std::vector<absl::string_view> lines = absl::StrSplit(normalized, '\n');
  std::string pending;  // The last address seen, waiting for its reply.
  for (size_t i = 0; i < lines.size(); ++i) {
    absl::string_view line = lines[i];
    std::string code, enhanced, rest;
    bool has_reply =
        RE2::PartialMatch(Piece(line), *kReply, &code, &enhanced, &rest);
    if (!has_reply) {
      // An enhanced code alone at the start (GMX: "5.1.1 <a@b>... User
      // Unknown"): the reply's class is its first digit.
      static const LazyRE2 kEnhancedOnly = {
          R"(^\s*(([45])\.[0-9]{1,3}\.[0-9]{1,3})\s+(.*))"};
      std::string cls;
      if (RE2::PartialMatch(Piece(line), *kEnhancedOnly, &enhanced, &cls,
                            &rest)) {
        has_reply = true;
        code = cls == "5" ? "550" : "450";
      }
    }
    std::string address;
    re2::StringPiece scan = Piece(line);
    // The address the line is about: the last one on it before a reply.
    std::string candidate;
    while (RE2::FindAndConsume(&scan, *kAddress, &candidate)) {
      std::string lower = absl::AsciiStrToLower(candidate);
      if (absl::StartsWith(lower, "mailer-daemon@") ||
          absl::StartsWith(lower, "postmaster@") ||
          absl::EqualsIgnoreCase(candidate, bounce_to)) {
        continue;
      }
      address = candidate;
      if (has_reply) break;
    }
    if (!address.empty()) pending = address;
    if (has_reply && !pending.empty()) {
      ReportedRecipient r;
      r.recipient = pending;
      r.action = code[0] == '5' ? "failed" : "delayed";
      // The reply may go on over the next indented lines.
      std::string reply =
          absl::StrCat(code, " ", enhanced, enhanced.empty() ? "" : " ", rest);
      for (size_t j = i + 1; j < lines.size() && j < i + 4; ++j) {
        absl::string_view next = absl::StripAsciiWhitespace(lines[j]);
        if (next.empty() || RE2::PartialMatch(Piece(next), *kAddress)) break;
        absl::StrAppend(&reply, " ", next);
      }
      r.diagnostic = absl::StrCat("smtp; ", reply);
      r.reply = ReplyOf(r.diagnostic, "");
      Classify(r, classifier);
      bool seen = false;
      for (const ReportedRecipient& o : report.recipients) {
        seen = seen || absl::EqualsIgnoreCase(o.recipient, r.recipient);
      }
      if (!seen) report.recipients.push_back(std::move(r));
      pending.clear();
      if (report.recipients.size() >= kMaxRecipients) break;
    }
  }
}

// Bounces that give no SMTP reply at all (Exchange 2003, Domino, some
// gateways): "did not reach the following recipient(s): a@b ... The
// recipient name is not recognized". The address is the first one that is
// neither the bounce's own nor a quoted header's, or X-Failed-Recipients';
// the words after it are the diagnostic. Only text that reads like a
// delivery failure qualifies.
void ReadWordsOnly(absl::string_view text, absl::string_view subject,
                   const std::vector<std::string>& skip,
                   const std::string& failed_header, Report& report,
                   const Classifier* classifier) {
  static const LazyRE2 kFailure = {
      R"((?i)(undeliver|not (been )?delivered|did not reach|could not be )"
      R"(delivered|couldn.t be delivered|delivery (has )?failed|delivery )"
      R"(failure|unable to deliver|permanent (error|failure)|returned mail|)"
      R"(was not delivered|failed to deliver|not listed in|recipient name|)"
      R"(unknown user|user unknown|no such user|invalid user|returning message))"};
  static const LazyRE2 kDelay = {
      R"((?i)(delayed|will (be )?(retried|tried again)|still trying|temporar))"};
  static const LazyRE2 kAddress = {
      R"(([A-Za-z0-9!#$%&*+/=?^_`{|}~.-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+))"};
  std::string normalized = Normalize(text.substr(0, kMaxText));
  if (!RE2::PartialMatch(Piece(normalized), *kFailure) &&
      !RE2::PartialMatch(Piece(subject), *kFailure)) {
    return;
  }
  std::vector<absl::string_view> lines = absl::StrSplit(normalized, '\n');
  auto skipped = [&](absl::string_view a) {
    std::string lower = absl::AsciiStrToLower(a);
    if (absl::StartsWith(lower, "mailer-daemon@") ||
        absl::StartsWith(lower, "postmaster@")) {
      return true;
    }
    for (const std::string& s : skip) {
      if (absl::EqualsIgnoreCase(s, a)) return true;
    }
    return false;
  };
  std::string address;
  size_t at_line = 0;
  if (!failed_header.empty()) {
    address = AddressOf(std::string(absl::StripAsciiWhitespace(
        failed_header.substr(0, failed_header.find(',')))));
    for (size_t i = 0; i < lines.size(); ++i) {
      if (absl::AsciiStrToLower(lines[i]).find(
              absl::AsciiStrToLower(address)) != std::string::npos) {
        at_line = i;
        break;
      }
    }
  }
  // First the address an "RCPT TO:" line names, then any other.
  for (size_t i = 0; address.empty() && i < lines.size(); ++i) {
    absl::string_view line = absl::StripAsciiWhitespace(lines[i]);
    std::string candidate;
    static const LazyRE2 kRcpt = {
        R"((?i)rcpt to:\s*<?([^\s<>]+@[A-Za-z0-9.-]+))"};
    if (RE2::PartialMatch(Piece(line), *kRcpt, &candidate) &&
        !skipped(candidate)) {
      address = candidate;
      at_line = i;
    }
  }
  for (size_t i = 0; address.empty() && i < lines.size(); ++i) {
    absl::string_view line = absl::StripAsciiWhitespace(lines[i]);
    // Quoted headers of the original ("To: ...", "From: ...") are not it.
    static const LazyRE2 kHeader = {R"((?i)^(to|from|cc|reply-to|sender|)"
                                    R"(return-path|envelope-to|subject):)"};
    if (RE2::PartialMatch(Piece(line), *kHeader)) continue;
    re2::StringPiece scan = Piece(line);
    std::string candidate;
    while (RE2::FindAndConsume(&scan, *kAddress, &candidate)) {
      if (skipped(candidate)) continue;
      address = candidate;
      at_line = i;
      break;
    }
  }
  if (address.empty()) return;
  // The words: the rest of the address's line, then what follows up to a
  // blank line after some text (at most four lines).
  std::string words;
  absl::string_view first = lines[at_line];
  size_t pos =
      absl::AsciiStrToLower(first).find(absl::AsciiStrToLower(address));
  if (pos != absl::string_view::npos) {
    absl::string_view rest =
        absl::StripAsciiWhitespace(first.substr(pos + address.size()));
    absl::ConsumePrefix(&rest, ">");
    absl::ConsumePrefix(&rest, ":");
    rest = absl::StripAsciiWhitespace(rest);
    if (!rest.empty() && !absl::StartsWith(rest, "on ")) {
      words = std::string(rest);
    } else {
      // "Unknown user: a@b": the words before the address.
      absl::string_view before =
          absl::StripAsciiWhitespace(first.substr(0, pos));
      absl::ConsumeSuffix(&before, "<");
      absl::ConsumeSuffix(&before, "\"");
      before = absl::StripAsciiWhitespace(before);
      absl::ConsumeSuffix(&before, ":");
      if (before.size() > 3 && !absl::EndsWithIgnoreCase(before, "rcpt to")) {
        words = std::string(before);
      }
    }
  }
  int taken = 0;
  for (size_t j = at_line + 1; j < lines.size() && taken < 4; ++j) {
    absl::string_view next = absl::StripAsciiWhitespace(lines[j]);
    if (next.empty()) {
      if (!words.empty()) break;
      continue;
    }
    // Rules and lead-ins ("because:", "For the following reason:").
    if (absl::StartsWith(next, "---") ||
        (absl::EndsWith(next, ":") && next.size() < 60)) {
      continue;
    }
    absl::StrAppend(&words, words.empty() ? "" : " ", next);
    ++taken;
  }
  // Nothing after it: the words just before it ("The user(s) account is
  // disabled." then the address).
  for (size_t j = at_line; words.empty() && j > 0 && j + 3 > at_line; --j) {
    absl::string_view prev = absl::StripAsciiWhitespace(lines[j - 1]);
    if (!prev.empty() && !absl::EndsWith(prev, ":")) words = std::string(prev);
  }
  ReportedRecipient r;
  r.recipient = address;
  bool delayed =
      RE2::PartialMatch(Piece(normalized), *kDelay) &&
      !RE2::PartialMatch(Piece(normalized),
                         "(?i)permanent|not delivered|did not reach");
  r.action = delayed ? "delayed" : "failed";
  r.diagnostic = words;
  r.reply = ReplyOf(words, "");
  if (r.reply.code == 0) {
    // A reply elsewhere in the text ("Error message below: 550 - ...").
    static const LazyRE2 kAnyReply = {
        R"((?m)^\s*([45][0-9][0-9])[ :-]+((?:[45]\.[0-9]{1,3}\.[0-9]{1,3})?)\s*(.+)$)"};
    std::string code, enhanced, rest;
    if (RE2::PartialMatch(Piece(normalized), *kAnyReply, &code, &enhanced,
                          &rest)) {
      r.reply = ReplyOf(absl::StrCat(code, " ", enhanced, " ", rest), "");
      if (!words.empty()) absl::StrAppend(&r.reply.text, " (", words, ")");
      r.diagnostic = r.reply.ToString();
    } else {
      r.reply.text = words;
    }
  }
  Classify(r, classifier);
  if (r.status.empty()) r.status = delayed ? "4.0.0" : "5.0.0";
  report.recipients.push_back(std::move(r));
}

}  // namespace

absl::string_view ReportKindName(Report::Kind kind) {
  switch (kind) {
    case Report::Kind::kDsn:
      return "dsn";
    case Report::Kind::kFeedback:
      return "feedback";
    case Report::Kind::kPlainBounce:
      return "plain_bounce";
    case Report::Kind::kUnknown:
      break;
  }
  return "unknown";
}

Report ParseReport(absl::string_view message, const Classifier* classifier) {
  InitGmime();
  Report report;
  std::string input = Normalize(message.substr(0, kMaxInput));
  Ref<GMimeStream> stream(
      g_mime_stream_mem_new_with_buffer(input.data(), input.size()));
  Ref<GMimeParser> parser(g_mime_parser_new_with_stream(stream.p));
  Ref<GMimeMessage> msg(g_mime_parser_construct_message(parser.p, nullptr));
  if (msg.p == nullptr) {
    report.error = "not a mail message (no header section could be read)";
    return report;
  }
  const char* subject = g_mime_message_get_subject(msg.p);
  if (subject != nullptr) report.subject = subject;
  std::string bounce_to;
  if (const char* to = g_mime_object_get_header(GMIME_OBJECT(msg.p), "To")) {
    bounce_to = AddressOf(to);
    report.candidates.push_back(bounce_to);
  }
  for (const char* h : {"X-Original-To", "Delivered-To"}) {
    if (const char* v = g_mime_object_get_header(GMIME_OBJECT(msg.p), h)) {
      report.candidates.push_back(AddressOf(v));
    }
  }

  Walk w{report};
  GMimeObject* root = g_mime_message_get_mime_part(msg.p);
  Visit(root, w);
  if (w.returned != nullptr) {
    GMimeObject* r = GMIME_OBJECT(w.returned);
    auto header = [&](const char* name) {
      const char* v = g_mime_object_get_header(r, name);
      return v == nullptr ? std::string() : std::string(v);
    };
    report.original_message_id = AddressOf(header("Message-ID"));
    report.original_return_path = AddressOf(header("Return-Path"));
    report.original_to = header("To");
    report.original_from = header("From");
  }
  if (!w.returned_headers.empty())
    ReadReturnedHeaders(w.returned_headers, report);
  if (!report.original_return_path.empty()) {
    report.candidates.push_back(report.original_return_path);
  }

  if (w.feedback != nullptr) {
    report.kind = Report::Kind::kFeedback;
    ReadFeedback(Content(w.feedback), report);
    std::string rcpt = report.original_rcpt_to;
    if (rcpt.empty()) rcpt = AddressOf(report.original_to);
    if (!rcpt.empty()) {
      ReportedRecipient r;
      r.recipient = rcpt;
      r.action = "complained";
      report.recipients.push_back(std::move(r));
    }
  } else if (w.status != nullptr) {
    report.kind = Report::Kind::kDsn;
    ReadDsn(Content(w.status), report, classifier);
  }
  if (report.recipients.empty()) {
    // No report part, or one naming nobody: read the words.
    std::string text = w.text;
    if (text.empty() && root != nullptr && !GMIME_IS_MULTIPART(root)) {
      text = Content(root);
    }
    if (text.empty()) {
      // MIME that names no readable text part (a boundary on a line of its
      // own, say): the body as it stands.
      size_t body = input.find("\n\n");
      if (body != std::string::npos) text = input.substr(body + 2, kMaxText);
    }
    ReadPlain(text, bounce_to, report, classifier);
    if (report.recipients.empty()) {
      std::vector<std::string> skip = {bounce_to,
                                       AddressOf(report.original_from),
                                       report.original_return_path};
      if (const char* from =
              g_mime_object_get_header(GMIME_OBJECT(msg.p), "From")) {
        skip.push_back(AddressOf(from));
      }
      const char* failed =
          g_mime_object_get_header(GMIME_OBJECT(msg.p), "X-Failed-Recipients");
      ReadWordsOnly(text, report.subject, skip, failed == nullptr ? "" : failed,
                    report, classifier);
    }
    if (!report.recipients.empty() && report.kind == Report::Kind::kUnknown) {
      report.kind = Report::Kind::kPlainBounce;
    }
  }
  if (report.recipients.empty() && report.error.empty()) {
    report.error = report.kind == Report::Kind::kUnknown
                       ? "no delivery report, feedback report or bounce "
                         "text naming a recipient"
                       : "the report names no recipient";
  }
  return report;
}

}  // namespace peregrine::bounce
