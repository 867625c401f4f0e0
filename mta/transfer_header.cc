#include "mta/transfer_header.h"

#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace peregrine {
namespace {

constexpr absl::string_view kField = "X-Peregrine-Transfer:";
constexpr size_t kMaxField = 4096;

bool Plain(char c) {
  return absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '.' ||
         c == '_' || c == '-' || c == '@' || c == '+';
}

std::string Encode(absl::string_view value) {
  static const char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (char c : value) {
    if (Plain(c)) {
      out.push_back(c);
    } else {
      auto b = static_cast<unsigned char>(c);
      out += {'%', kHex[b >> 4], kHex[b & 15]};
    }
  }
  return out;
}

std::optional<std::string> Decode(absl::string_view value) {
  std::string out;
  for (size_t i = 0; i < value.size(); ++i) {
    if (value[i] != '%') {
      if (!Plain(value[i])) return std::nullopt;
      out.push_back(value[i]);
      continue;
    }
    int v = 0;
    if (i + 2 >= value.size()) return std::nullopt;
    for (int k = 1; k <= 2; ++k) {
      char h = value[i + k];
      int d = absl::ascii_isdigit(static_cast<unsigned char>(h)) ? h - '0'
              : h >= 'A' && h <= 'F'                             ? h - 'A' + 10
              : h >= 'a' && h <= 'f'                             ? h - 'a' + 10
                                                                 : -1;
      if (d < 0) return std::nullopt;
      v = v * 16 + d;
    }
    out.push_back(static_cast<char>(v));
    i += 2;
  }
  return out;
}

std::optional<TransferInfo> ParseField(absl::string_view value) {
  if (value.size() > kMaxField) return std::nullopt;
  TransferInfo info;
  bool version = false;
  for (absl::string_view part : absl::StrSplit(value, ';')) {
    part = absl::StripAsciiWhitespace(part);
    if (part.empty()) continue;
    size_t eq = part.find('=');
    if (eq == absl::string_view::npos) return std::nullopt;
    absl::string_view key = part.substr(0, eq);
    std::optional<std::string> v = Decode(part.substr(eq + 1));
    if (!v.has_value()) return std::nullopt;
    int64_t n = 0;
    if (key == "v") {
      if (*v != "1") return std::nullopt;
      version = true;
    } else if (key == "attempts") {
      if (!absl::SimpleAtoi(*v, &n) || n < 0 || n > 100000) {
        return std::nullopt;
      }
      info.attempts = static_cast<uint32_t>(n);
    } else if (key == "received") {
      if (!absl::SimpleAtoi(*v, &n) || n < 0 || n > (int64_t{1} << 40)) {
        return std::nullopt;
      }
      info.received = absl::FromUnixSeconds(n);
    } else if (key == "tenant") {
      info.tenant = *std::move(v);
    } else if (key == "campaign") {
      info.campaign = *std::move(v);
    } else if (key == "node") {
      info.node = *std::move(v);
    } else {
      return std::nullopt;
    }
  }
  if (!version) return std::nullopt;
  return info;
}

}  // namespace

std::string TransferHeader(const TransferInfo& info) {
  std::string out = absl::StrCat(kField, " v=1; attempts=", info.attempts);
  if (info.received != absl::InfinitePast()) {
    absl::StrAppend(&out, "; received=", absl::ToUnixSeconds(info.received));
  }
  if (!info.tenant.empty())
    absl::StrAppend(&out, "; tenant=", Encode(info.tenant));
  if (!info.campaign.empty()) {
    absl::StrAppend(&out, "; campaign=", Encode(info.campaign));
  }
  if (!info.node.empty()) absl::StrAppend(&out, "; node=", Encode(info.node));
  absl::StrAppend(&out, "\r\n");
  return out;
}

std::optional<TransferInfo> TakeTransferHeader(std::string* message) {
  std::optional<TransferInfo> first;
  bool seen = false;
  std::string kept;
  size_t pos = 0;
  bool changed = false;
  // Header lines up to the empty line (or the end); a field's folded
  // continuation lines (starting with a space or tab) go with it.
  while (pos < message->size()) {
    size_t end = message->find('\n', pos);
    end = end == std::string::npos ? message->size() : end + 1;
    absl::string_view line(message->data() + pos, end - pos);
    if (line == "\r\n" || line == "\n") break;  // The body follows.
    size_t next = end;
    while (next < message->size() &&
           ((*message)[next] == ' ' || (*message)[next] == '\t')) {
      size_t e = message->find('\n', next);
      next = e == std::string::npos ? message->size() : e + 1;
    }
    absl::string_view field(message->data() + pos, next - pos);
    if (field.size() >= kField.size() &&
        absl::EqualsIgnoreCase(field.substr(0, kField.size()), kField)) {
      if (!seen) {
        seen = true;
        std::string value(field.substr(kField.size()));
        absl::StrReplaceAll({{"\r\n", ""}, {"\n", ""}}, &value);
        first = ParseField(value);
      }
      if (!changed) kept.assign(message->data(), pos);
      changed = true;
    } else if (changed) {
      kept.append(field.data(), field.size());
    }
    pos = next;
  }
  if (changed) {
    kept.append(message->data() + pos, message->size() - pos);
    *message = std::move(kept);
  }
  return first;
}

}  // namespace peregrine
