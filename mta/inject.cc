#include "mta/inject.h"

#include <atomic>
#include <cstdint>
#include <cstring>
#include <exception>
#include <mstch/mstch.hpp>
#include <mutex>
#include <optional>
#include <utility>

#include "absl/random/random.h"
#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/strip.h"
#include "base/mime.h"
#include "mta/submission.h"
#include "queue/types.h"

namespace peregrine {
namespace {

// Values go in as they are: mustache's own escaping is for HTML, and the
// subject, text and headers are not HTML. html_body gets escaped values
// (ToNode with `html`). Set at the first render, not at static
// initialization: libmstch's own initializer could run after ours.
void ConfigureMstch() {
  static std::once_flag once;
  std::call_once(once, [] {
    mstch::config::escape = [](const std::string& s) { return s; };
  });
}

using json = nlohmann::json;

std::string HtmlEscape(absl::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (char c : s) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      case '\'':
        out += "&#39;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

mstch::node ToNode(const json& j, bool html) {
  if (j.is_string()) {
    const std::string& s = j.get_ref<const std::string&>();
    return html ? HtmlEscape(s) : s;
  }
  if (j.is_boolean()) return j.get<bool>();
  if (j.is_number()) return j.dump();
  if (j.is_object()) {
    mstch::map m;
    for (auto it = j.begin(); it != j.end(); ++it) {
      m.emplace(it.key(), ToNode(it.value(), html));
    }
    return m;
  }
  if (j.is_array()) {
    mstch::array a;
    for (const json& v : j) a.push_back(ToNode(v, html));
    return a;
  }
  return std::string();  // null: nothing (and an empty section).
}

// The recipient's values over the request's; `name` and `email` are there
// too unless given.
mstch::map Context(const InjectRequest& r, const InjectRecipient& to,
                   bool html) {
  mstch::map m;
  auto add = [&](const json& values) {
    for (auto it = values.begin(); it != values.end(); ++it) {
      m.insert_or_assign(it.key(), ToNode(it.value(), html));
    }
  };
  add(r.substitutions);
  add(to.substitutions);
  if (!m.count("email"))
    m.emplace("email", html ? HtmlEscape(to.email) : to.email);
  if (!m.count("name")) m.emplace("name", html ? HtmlEscape(to.name) : to.name);
  return m;
}

absl::StatusOr<std::string> Render(const std::string& text,
                                   const mstch::map& context,
                                   absl::string_view what) {
  if (text.find("{{") == std::string::npos) return text;
  try {
    return mstch::render(text, context);
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": the template does not render: ", e.what()));
  }
}

// A template split at its tags, when they are all plain variables.
struct Template {
  bool simple = false;
  std::vector<std::string> literals;  // names.size() + 1 of them.
  std::vector<std::string> names;
};

bool VariableName(absl::string_view name) {
  if (name.empty()) return false;
  for (char c : name) {
    if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '_' &&
        c != '-') {
      return false;
    }
  }
  return true;
}

Template Compile(const std::string& text) {
  Template t;
  size_t at = 0;
  while (true) {
    size_t open = text.find("{{", at);
    if (open == std::string::npos) {
      t.literals.push_back(text.substr(at));
      t.simple = true;
      return t;
    }
    t.literals.push_back(text.substr(at, open - at));
    bool triple = text.compare(open, 3, "{{{") == 0;
    size_t close = text.find(triple ? "}}}" : "}}", open + (triple ? 3 : 2));
    if (close == std::string::npos) return Template();
    absl::string_view tag(text.data() + open + (triple ? 3 : 2),
                          close - open - (triple ? 3 : 2));
    tag = absl::StripAsciiWhitespace(tag);
    if (!triple && absl::ConsumePrefix(&tag, "&")) {
      tag = absl::StripAsciiWhitespace(tag);
    }
    if (!VariableName(tag)) return Template();  // Sections, partials, ...
    t.names.emplace_back(tag);
    at = close + (triple ? 3 : 2);
  }
}

// Fills `t` for one recipient as mustache would with these values; false
// when a value is not a string, a number or null (libmstch decides then).
bool Fill(const Template& t, const InjectRequest& r, const InjectRecipient& to,
          bool html, std::string* out) {
  size_t size = 0;
  for (const std::string& l : t.literals) size += l.size();
  out->reserve(size + 64 * t.names.size());
  for (size_t i = 0; i < t.names.size(); ++i) {
    out->append(t.literals[i]);
    const std::string& name = t.names[i];
    const json* value = nullptr;
    auto own = to.substitutions.find(name);
    if (own != to.substitutions.end()) {
      value = &*own;
    } else if (auto all = r.substitutions.find(name);
               all != r.substitutions.end()) {
      value = &*all;
    }
    std::string text;
    if (value == nullptr) {
      if (name == "email") text = to.email;
      if (name == "name") text = to.name;
    } else if (value->is_string()) {
      text = value->get<std::string>();
    } else if (value->is_number()) {
      text = value->dump();
    } else if (!value->is_null()) {
      return false;
    }
    out->append(html ? HtmlEscape(text) : text);
  }
  out->append(t.literals.back());
  return true;
}

// A header value on one line: CR and LF become spaces (a substitution must
// not add header fields).
std::string OneLine(absl::string_view s) {
  std::string out(s);
  for (char& c : out) {
    if (c == '\r' || c == '\n') c = ' ';
  }
  return out;
}

bool Ascii(absl::string_view s) {
  // Eight bytes at a time: message bodies are kilobytes.
  size_t i = 0;
  for (; i + 8 <= s.size(); i += 8) {
    uint64_t word;
    std::memcpy(&word, s.data() + i, 8);
    if (word & 0x8080808080808080ull) return false;
  }
  for (; i < s.size(); ++i) {
    if (static_cast<unsigned char>(s[i]) >= 0x80) return false;
  }
  return true;
}

// RFC 2047 "B" encoded words for a value that is not ASCII, split at UTF-8
// character boundaries so that each word stays under 76 characters.
std::string EncodeWords(absl::string_view s) {
  if (Ascii(s)) return std::string(s);
  std::string out;
  size_t at = 0;
  while (at < s.size()) {
    size_t end = std::min(s.size(), at + 45);
    while (end < s.size() &&
           (static_cast<unsigned char>(s[end]) & 0xC0) == 0x80) {
      --end;  // Not inside a character.
    }
    if (end <= at) end = std::min(s.size(), at + 45);
    if (!out.empty()) out += "\r\n ";
    absl::StrAppend(&out, "=?UTF-8?B?",
                    absl::Base64Escape(s.substr(at, end - at)), "?=");
    at = end;
  }
  return out;
}

// "Name <email>", the name quoted or encoded as needed.
std::string Mailbox(absl::string_view name, absl::string_view email) {
  if (name.empty()) return std::string(email);
  std::string n = OneLine(name);
  if (!Ascii(n)) return absl::StrCat(EncodeWords(n), " <", email, ">");
  std::string quoted;
  for (char c : n) {
    if (c == '"' || c == '\\') quoted += '\\';
    quoted += c;
  }
  return absl::StrCat("\"", quoted, "\" <", email, ">");
}

// Every line ends in CRLF already (memchr over both kinds of line end).
bool IsCrlf(absl::string_view s) {
  const char* p = s.data();
  const char* end = p + s.size();
  for (const char* q = p;
       (q = static_cast<const char*>(std::memchr(q, '\n', end - q))) != nullptr;
       ++q) {
    if (q == p || q[-1] != '\r') return false;
  }
  for (const char* q = p;
       (q = static_cast<const char*>(std::memchr(q, '\r', end - q))) != nullptr;
       ++q) {
    if (q + 1 == end || q[1] != '\n') return false;
  }
  return true;
}

// CRLF line ends, whatever came in.
std::string Crlf(std::string s) {
  if (IsCrlf(s)) return s;
  std::string out;
  out.reserve(s.size() + s.size() / 32);
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\r') {
      out += "\r\n";
      if (i + 1 < s.size() && s[i + 1] == '\n') ++i;
    } else if (s[i] == '\n') {
      out += "\r\n";
    } else {
      out += s[i];
    }
  }
  return out;
}

// No line (CRLF-ended) longer than 998 bytes (RFC 5322 2.1.1).
bool ShortLines(absl::string_view s) {
  size_t at = 0;
  while (at < s.size()) {
    size_t nl = s.find('\n', at);
    if (nl == absl::string_view::npos) nl = s.size();
    if (nl - at > 999) return false;  // 998 and the CR.
    at = nl + 1;
  }
  return true;
}

// A text part: 7bit when it is ASCII with short lines, else base64.
std::string TextPart(absl::string_view subtype, std::string text) {
  std::string body = Crlf(std::move(text));
  if (Ascii(body) && ShortLines(body)) {
    std::string out = absl::StrCat("Content-Type: text/", subtype,
                                   "; charset=utf-8\r\n"
                                   "Content-Transfer-Encoding: 7bit\r\n\r\n");
    out.reserve(out.size() + body.size() + 2);
    out += body;
    if (!absl::EndsWith(out, "\r\n")) out += "\r\n";
    return out;
  }
  return absl::StrCat("Content-Type: text/", subtype,
                      "; charset=utf-8\r\nContent-Transfer-Encoding: "
                      "base64\r\n\r\n",
                      Base64Lines(body));
}

std::string Boundary(absl::BitGenRef random) {
  return absl::StrFormat("=_peregrine_%016x%016x",
                         absl::Uniform<uint64_t>(random),
                         absl::Uniform<uint64_t>(random));
}

std::string Multipart(absl::string_view subtype,
                      const std::vector<std::string>& parts,
                      absl::BitGenRef random) {
  std::string b = Boundary(random);
  std::string out = absl::StrCat("Content-Type: multipart/", subtype,
                                 "; boundary=\"", b, "\"\r\n\r\n");
  for (const std::string& p : parts) absl::StrAppend(&out, "--", b, "\r\n", p);
  absl::StrAppend(&out, "--", b, "--\r\n");
  return out;
}

absl::Status Field(const json& j, const char* key, std::string* out,
                   absl::string_view where) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return absl::OkStatus();
  if (!it->is_string()) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, key, ": must be a string"));
  }
  *out = it->get<std::string>();
  return absl::OkStatus();
}

}  // namespace

struct CompiledTemplates {
  Template message, subject, text, html;
  std::vector<Template> headers;  // As InjectRequest::headers.
};

namespace {

// A piece rendered for one recipient: filled when its template is simple,
// else by libmstch with the recipient's context (made on first use).
class Renderer {
 public:
  Renderer(const InjectRequest& r, const InjectRecipient& to)
      : r_(r), to_(to) {}
  absl::StatusOr<std::string> Piece(const Template* t, const std::string& text,
                                    bool html, absl::string_view what) {
    if (text.find("{{") == std::string::npos) return text;
    if (t != nullptr && t->simple) {
      std::string out;
      if (Fill(*t, r_, to_, html, &out)) return out;
    }
    std::optional<mstch::map>& context = html ? html_ : text_;
    if (!context) context = Context(r_, to_, html);
    return Render(text, *context, what);
  }

 private:
  const InjectRequest& r_;
  const InjectRecipient& to_;
  std::optional<mstch::map> text_, html_;
};

}  // namespace

bool PlausibleAddress(absl::string_view a) {
  if (a.empty() || a.size() > 254) return false;
  size_t at = a.find('@');
  // One @ (no quoted local parts), a local part of at most 64 bytes.
  if (at == absl::string_view::npos || at == 0 || at > 64 ||
      at + 1 == a.size()) {
    return false;
  }
  for (unsigned char c : a) {
    if (c <= ' ' || c == 0x7f || c == '<' || c == '>' || c == ',' || c == '"' ||
        c == '(' || c == ')') {
      return false;
    }
  }
  absl::string_view domain = a.substr(at + 1);
  return domain.find('@') == absl::string_view::npos && domain.front() != '.' &&
         domain.back() != '.' && !absl::StrContains(domain, "..");
}

absl::StatusOr<InjectRequest> ParseInjectRequest(absl::string_view body,
                                                 size_t max_recipients) {
  json j = json::parse(body.begin(), body.end(), nullptr,
                       /*allow_exceptions=*/false);
  if (j.is_discarded()) {
    return absl::InvalidArgumentError("the body is not JSON");
  }
  if (!j.is_object()) {
    return absl::InvalidArgumentError("the body must be a JSON object");
  }
  InjectRequest r;
  auto sender = j.find("envelope_sender");
  if (sender == j.end() || !sender->is_string()) {
    return absl::InvalidArgumentError(
        "envelope_sender: required, a string (\"\" for the null sender)");
  }
  r.sender = sender->get<std::string>();
  if (!r.sender.empty() && !PlausibleAddress(r.sender)) {
    return absl::InvalidArgumentError(
        absl::StrCat("envelope_sender: not an address: ", r.sender));
  }
  if (absl::Status s = Field(j, "campaign", &r.campaign, ""); !s.ok()) return s;
  if (absl::Status s = Field(j, "tenant", &r.tenant, ""); !s.ok()) return s;

  auto content = j.find("content");
  if (content == j.end()) {
    return absl::InvalidArgumentError(
        "content: required, a complete message (a string) or its parts (an "
        "object with subject, text_body, html_body, from, headers, "
        "attachments)");
  }
  if (content->is_string()) {
    r.raw = true;
    r.message = content->get<std::string>();
    if (r.message.empty()) {
      return absl::InvalidArgumentError("content: the message is empty");
    }
  } else if (content->is_object()) {
    const json& c = *content;
    for (const char* key : {"subject", "text_body", "html_body", "reply_to"}) {
      std::string* out = key == std::string("subject")     ? &r.subject
                         : key == std::string("text_body") ? &r.text_body
                         : key == std::string("html_body") ? &r.html_body
                                                           : &r.reply_to;
      if (absl::Status s = Field(c, key, out, "content."); !s.ok()) return s;
    }
    auto from = c.find("from");
    if (from != c.end()) {
      if (!from->is_object()) {
        return absl::InvalidArgumentError(
            "content.from: must be an object {email, name}");
      }
      if (absl::Status s =
              Field(*from, "email", &r.from_email, "content.from.");
          !s.ok()) {
        return s;
      }
      if (absl::Status s = Field(*from, "name", &r.from_name, "content.from.");
          !s.ok()) {
        return s;
      }
    }
    if (r.from_email.empty()) r.from_email = r.sender;
    if (!PlausibleAddress(r.from_email)) {
      return absl::InvalidArgumentError(
          "content.from.email: required (or a non-empty envelope_sender), "
          "an address");
    }
    auto headers = c.find("headers");
    if (headers != c.end()) {
      if (!headers->is_object()) {
        return absl::InvalidArgumentError(
            "content.headers: must be an object {name: value}");
      }
      for (auto it = headers->begin(); it != headers->end(); ++it) {
        if (!it.value().is_string()) {
          return absl::InvalidArgumentError(
              absl::StrCat("content.headers.", it.key(), ": must be a string"));
        }
        const std::string& name = it.key();
        if (name.empty() || name.size() > 76 ||
            name.find_first_of(": \t\r\n") != std::string::npos ||
            !Ascii(name)) {
          return absl::InvalidArgumentError(
              absl::StrCat("content.headers: not a header name: ", name));
        }
        if (absl::EqualsIgnoreCase(name, "X-Campaign") && r.campaign.empty()) {
          r.campaign = it.value().get<std::string>();
        }
        if (absl::EqualsIgnoreCase(name, "X-Tenant") && r.tenant.empty()) {
          r.tenant = it.value().get<std::string>();
        }
        r.headers.emplace_back(name, it.value().get<std::string>());
      }
    }
    auto attachments = c.find("attachments");
    if (attachments != c.end()) {
      if (!attachments->is_array()) {
        return absl::InvalidArgumentError(
            "content.attachments: must be a list");
      }
      for (size_t i = 0; i < attachments->size(); ++i) {
        const json& a = (*attachments)[i];
        std::string where = absl::StrCat("content.attachments[", i, "].");
        if (!a.is_object()) {
          return absl::InvalidArgumentError(
              absl::StrCat(where, ": must be an object"));
        }
        InjectAttachment att;
        std::string data;
        if (absl::Status s = Field(a, "data", &data, where); !s.ok()) return s;
        if (absl::Status s = Field(a, "content_type", &att.content_type, where);
            !s.ok()) {
          return s;
        }
        if (absl::Status s = Field(a, "file_name", &att.file_name, where);
            !s.ok()) {
          return s;
        }
        auto b64 = a.find("base64");
        if (b64 != a.end() && b64->is_boolean() && b64->get<bool>()) {
          if (!absl::Base64Unescape(data, &att.data)) {
            return absl::InvalidArgumentError(
                absl::StrCat(where, "data: not base64"));
          }
        } else {
          att.data = std::move(data);
        }
        att.content_type = OneLine(att.content_type);
        att.file_name = OneLine(att.file_name);
        r.attachments.push_back(std::move(att));
      }
    }
    if (r.text_body.empty() && r.html_body.empty() && r.attachments.empty()) {
      return absl::InvalidArgumentError(
          "content: give text_body, html_body or attachments");
    }
  } else {
    return absl::InvalidArgumentError(
        "content: must be a string (a complete message) or an object (its "
        "parts)");
  }

  // Line ends made CRLF once here, so that each rendering is CRLF already
  // (unless a value brings a bare line end) and needs no rewriting.
  r.message = Crlf(std::move(r.message));
  r.text_body = Crlf(std::move(r.text_body));
  r.html_body = Crlf(std::move(r.html_body));
  auto substitutions = j.find("substitutions");
  if (substitutions != j.end() && !substitutions->is_null()) {
    if (!substitutions->is_object()) {
      return absl::InvalidArgumentError("substitutions: must be an object");
    }
    r.substitutions = *substitutions;
  }
  auto recipients = j.find("recipients");
  if (recipients == j.end() || !recipients->is_array() || recipients->empty()) {
    return absl::InvalidArgumentError(
        "recipients: required, a non-empty list of {email, name, "
        "substitutions}");
  }
  if (recipients->size() > max_recipients) {
    return absl::InvalidArgumentError(
        absl::StrCat("recipients: at most ", max_recipients,
                     " in one request; split the batch"));
  }
  for (size_t i = 0; i < recipients->size(); ++i) {
    const json& x = (*recipients)[i];
    InjectRecipient to;
    if (x.is_string()) {
      to.email = x.get<std::string>();
    } else if (x.is_object()) {
      std::string where = absl::StrCat("recipients[", i, "].");
      if (absl::Status s = Field(x, "email", &to.email, where); !s.ok()) {
        return s;
      }
      if (absl::Status s = Field(x, "name", &to.name, where); !s.ok()) return s;
      auto subs = x.find("substitutions");
      if (subs != x.end() && !subs->is_null()) {
        if (!subs->is_object()) {
          return absl::InvalidArgumentError(
              absl::StrCat(where, "substitutions: must be an object"));
        }
        to.substitutions = *subs;
      }
    } else {
      return absl::InvalidArgumentError(
          absl::StrCat("recipients[", i,
                       "]: must be an object {email, name, "
                       "substitutions} or an address"));
    }
    r.recipients.push_back(std::move(to));
  }
  auto compiled = std::make_shared<CompiledTemplates>();
  compiled->message = Compile(r.message);
  compiled->subject = Compile(r.subject);
  compiled->text = Compile(r.text_body);
  compiled->html = Compile(r.html_body);
  for (const auto& [name, value] : r.headers) {
    compiled->headers.push_back(Compile(value));
  }
  r.compiled = std::move(compiled);
  return r;
}

absl::StatusOr<std::string> RenderMessage(const InjectRequest& r,
                                          const InjectRecipient& to,
                                          absl::Time now,
                                          absl::string_view hostname) {
  ConfigureMstch();
  thread_local absl::BitGen random;
  const CompiledTemplates* c = r.compiled.get();
  Renderer render(r, to);
  if (r.raw) {
    auto message =
        render.Piece(c ? &c->message : nullptr, r.message, false, "content");
    if (!message.ok()) return message.status();
    std::string body = Crlf(*std::move(message));
    return absl::StrCat(MissingSubmissionFields(body, hostname, now, random),
                        body);
  }
  auto subject = render.Piece(c ? &c->subject : nullptr, r.subject, false,
                              "content.subject");
  if (!subject.ok()) return subject.status();
  std::string head =
      absl::StrCat("From: ", Mailbox(r.from_name, r.from_email), "\r\n",
                   "To: ", Mailbox(to.name, to.email), "\r\n");
  if (!r.reply_to.empty()) {
    absl::StrAppend(&head, "Reply-To: ", OneLine(r.reply_to), "\r\n");
  }
  absl::StrAppend(&head, "Subject: ", EncodeWords(OneLine(*subject)), "\r\n");
  for (size_t i = 0; i < r.headers.size(); ++i) {
    const auto& [name, value] = r.headers[i];
    auto v = render.Piece(c && i < c->headers.size() ? &c->headers[i] : nullptr,
                          value, false, absl::StrCat("content.headers.", name));
    if (!v.ok()) return v.status();
    absl::StrAppend(&head, name, ": ", EncodeWords(OneLine(*v)), "\r\n");
  }
  absl::StrAppend(&head, "MIME-Version: 1.0\r\n");
  std::vector<std::string> alternatives;
  if (!r.text_body.empty()) {
    auto t = render.Piece(c ? &c->text : nullptr, r.text_body, false,
                          "content.text_body");
    if (!t.ok()) return t.status();
    alternatives.push_back(TextPart("plain", *std::move(t)));
  }
  if (!r.html_body.empty()) {
    auto h = render.Piece(c ? &c->html : nullptr, r.html_body, true,
                          "content.html_body");
    if (!h.ok()) return h.status();
    alternatives.push_back(TextPart("html", *std::move(h)));
  }
  std::string content;
  if (alternatives.size() == 1) {
    content = alternatives[0];
  } else if (alternatives.size() > 1) {
    content = Multipart("alternative", alternatives, random);
  }
  if (!r.attachments.empty()) {
    std::vector<std::string> parts;
    if (!content.empty()) parts.push_back(content);
    for (const InjectAttachment& a : r.attachments) {
      std::string name = a.file_name;
      for (char& c : name) {
        if (c == '"' || c == '\\') c = '_';
      }
      parts.push_back(absl::StrCat(
          "Content-Type: ", a.content_type,
          name.empty() ? ""
                       : absl::StrCat("; name=\"", EncodeWords(name), "\""),
          "\r\nContent-Transfer-Encoding: base64\r\nContent-Disposition: "
          "attachment",
          name.empty() ? ""
                       : absl::StrCat("; filename=\"", EncodeWords(name), "\""),
          "\r\n\r\n", Base64Lines(a.data)));
    }
    content = Multipart("mixed", parts, random);
  }
  std::string message = absl::StrCat(head, content);
  return absl::StrCat(MissingSubmissionFields(message, hostname, now, random),
                      message);
}

}  // namespace peregrine
