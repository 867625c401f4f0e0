#include "dkim/signer.h"

#include "absl/container/flat_hash_map.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace peregrine::dkim {
namespace {

constexpr size_t kFoldAt = 76;

bool ValidLabelChars(absl::string_view s, bool allow_underscore) {
  if (s.empty() || s.size() > 253) return false;
  for (char c : s) {
    if (!absl::ascii_isalnum(c) && c != '-' && c != '.' &&
        !(allow_underscore && c == '_')) {
      return false;
    }
  }
  return s.front() != '.' && s.back() != '.';
}

// Appends `token` to a header being folded: a new line (CRLF TAB) when it
// would pass kFoldAt. `line` is the length of the current line.
void Fold(std::string* out, size_t* line, absl::string_view token,
          absl::string_view separator) {
  if (*line + separator.size() + token.size() > kFoldAt && *line > 1) {
    absl::StrAppend(out, absl::StripTrailingAsciiWhitespace(separator),
                    "\r\n\t");
    *line = 1;
  } else {
    out->append(separator.data(), separator.size());
    *line += separator.size();
  }
  out->append(token.data(), token.size());
  *line += token.size();
}

}  // namespace

const std::vector<std::string>& DefaultSignedHeaders() {
  static const auto* names =
      new std::vector<std::string>{"From",
                                   "Reply-To",
                                   "Subject",
                                   "Date",
                                   "To",
                                   "Cc",
                                   "Resent-Date",
                                   "Resent-From",
                                   "Resent-To",
                                   "Resent-Cc",
                                   "In-Reply-To",
                                   "References",
                                   "List-Id",
                                   "List-Help",
                                   "List-Unsubscribe",
                                   "List-Unsubscribe-Post",
                                   "List-Subscribe",
                                   "List-Post",
                                   "List-Owner",
                                   "List-Archive",
                                   "Message-ID",
                                   "MIME-Version",
                                   "Content-Type",
                                   "Content-Transfer-Encoding",
                                   "Feedback-ID"};
  return *names;
}

const std::vector<std::string>& DefaultOversignedHeaders() {
  static const auto* names = new std::vector<std::string>{
      "From", "To", "Subject", "Date", "Message-ID", "List-Unsubscribe"};
  return *names;
}

std::vector<std::string> SignedHeaderNames(
    const SplitMessage& message, const std::vector<std::string>& headers,
    const std::vector<std::string>& oversign) {
  std::vector<std::string> h;
  for (const std::string& name : headers) {
    for (const HeaderField& f : message.headers) {
      if (absl::EqualsIgnoreCase(f.name, name)) h.push_back(name);
    }
    for (const std::string& extra : oversign) {
      if (absl::EqualsIgnoreCase(extra, name)) {
        h.push_back(name);
        break;
      }
    }
  }
  return h;
}

std::string HeaderHashInput(const SplitMessage& message,
                            const std::vector<std::string>& h,
                            absl::string_view signature_field, Canon canon) {
  std::string out;
  // How many occurrences of each name (lower case) were taken already.
  absl::flat_hash_map<std::string, int> used;
  for (const std::string& name : h) {
    std::string key = absl::AsciiStrToLower(name);
    int skip = used[key]++;
    for (auto f = message.headers.rbegin(); f != message.headers.rend(); ++f) {
      if (!absl::EqualsIgnoreCase(f->name, key)) continue;
      if (skip-- > 0) continue;
      out += CanonicalizeHeader(canon, *f);
      break;
    }
  }
  size_t colon = signature_field.find(':');
  HeaderField sig{signature_field.substr(0, colon), signature_field};
  std::string canonical = CanonicalizeHeader(canon, sig);
  // The signature field is hashed without its final CRLF.
  if (absl::EndsWith(canonical, "\r\n")) canonical.resize(canonical.size() - 2);
  out += canonical;
  return out;
}

std::string BodyHashBase64(absl::string_view body, Canon canon) {
  BodyHasher hasher(canon);
  hasher.Update(body);
  return Base64(hasher.Finish());
}

absl::StatusOr<Signer> Signer::Create(SignerOptions options,
                                      std::shared_ptr<const PrivateKey> key) {
  if (!ValidLabelChars(options.domain, false)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "DKIM domain '", options.domain, "' is not a domain name"));
  }
  if (!ValidLabelChars(options.selector, true)) {
    return absl::InvalidArgumentError(
        absl::StrCat("DKIM selector '", options.selector,
                     "' must be letters, digits, '-', '_' and dots"));
  }
  if (key == nullptr) return absl::InvalidArgumentError("DKIM signer: no key");
  bool signs_from = false;
  for (const std::string& h : options.headers) {
    if (absl::EqualsIgnoreCase(h, "From")) signs_from = true;
  }
  if (!signs_from) {
    // RFC 6376 §5.4: From MUST be signed.
    options.headers.insert(options.headers.begin(), "From");
  }
  return Signer(std::move(options), std::move(key));
}

absl::StatusOr<std::string> Signer::Sign(absl::string_view message,
                                         absl::Time now) const {
  SplitMessage split = Split(message);
  std::vector<std::string> h =
      SignedHeaderNames(split, options_.headers, options_.oversign);
  auto canon_name = [](Canon c) {
    return c == Canon::kSimple ? "simple" : "relaxed";
  };
  int64_t t = absl::ToUnixSeconds(now);

  std::vector<std::string> tags = {
      "v=1",
      absl::StrCat("a=", key_->algorithm()),
      absl::StrCat("c=", canon_name(options_.header_canon), "/",
                   canon_name(options_.body_canon)),
      absl::StrCat("d=", options_.domain),
      absl::StrCat("s=", options_.selector),
      absl::StrCat("t=", t),
  };
  if (options_.expiration > absl::ZeroDuration()) {
    tags.push_back(
        absl::StrCat("x=", t + absl::ToInt64Seconds(options_.expiration)));
  }
  if (!options_.identity.empty()) {
    tags.push_back(absl::StrCat("i=", options_.identity));
  }

  std::string field = "DKIM-Signature:";
  size_t line = field.size();
  for (size_t i = 0; i < tags.size(); ++i) {
    Fold(&field, &line, absl::StrCat(tags[i], ";"), " ");
  }
  // h= may be long: fold between names.
  for (size_t i = 0; i < h.size(); ++i) {
    std::string token =
        absl::StrCat(i == 0 ? "h=" : "", h[i], i + 1 == h.size() ? ";" : ":");
    Fold(&field, &line, token, i == 0 ? " " : "");
  }
  Fold(
      &field, &line,
      absl::StrCat("bh=", BodyHashBase64(split.body, options_.body_canon), ";"),
      " ");
  Fold(&field, &line, "b=", " ");

  auto signature =
      key_->Sign(HeaderHashInput(split, h, field, options_.header_canon));
  if (!signature.ok()) return signature.status();
  std::string b = Base64(*signature);
  // b= is folded too; a verifier drops the whole value, white space and all.
  for (size_t pos = 0; pos < b.size();) {
    size_t room = kFoldAt > line ? kFoldAt - line : 0;
    if (room < 8) {
      field += "\r\n\t";
      line = 1;
      room = kFoldAt - 1;
    }
    absl::string_view chunk = absl::string_view(b).substr(pos, room);
    field.append(chunk.data(), chunk.size());
    line += chunk.size();
    pos += chunk.size();
  }
  field += "\r\n";
  return field;
}

}  // namespace peregrine::dkim
