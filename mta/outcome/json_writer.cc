#include "mta/outcome/json_writer.h"

#include "absl/strings/str_cat.h"

namespace peregrine::outcome {
namespace {

// The length of the well-formed UTF-8 sequence at the start of `s` (RFC
// 3629, Unicode table 3-7), or 0 when there is none; then `*valid` says how
// many bytes of it were valid before the one that broke it (at least 1).
size_t Utf8Length(absl::string_view s, size_t* valid) {
  auto b = [&s](size_t i) { return static_cast<uint8_t>(s[i]); };
  uint8_t lead = b(0);
  size_t need;
  uint8_t lo = 0x80;
  uint8_t hi = 0xBF;
  if (lead < 0x80) return 1;
  if (lead >= 0xC2 && lead <= 0xDF) {
    need = 2;
  } else if (lead >= 0xE0 && lead <= 0xEF) {
    need = 3;
    if (lead == 0xE0) lo = 0xA0;
    if (lead == 0xED) hi = 0x9F;
  } else if (lead >= 0xF0 && lead <= 0xF4) {
    need = 4;
    if (lead == 0xF0) lo = 0x90;
    if (lead == 0xF4) hi = 0x8F;
  } else {
    *valid = 1;  // Never a lead byte.
    return 0;
  }
  for (size_t i = 1; i < need; ++i) {
    if (i >= s.size()) {
      *valid = i;
      return 0;
    }
    uint8_t c = b(i);
    uint8_t min = i == 1 ? lo : 0x80;
    uint8_t max = i == 1 ? hi : 0xBF;
    if (c < min || c > max) {
      *valid = i;
      return 0;
    }
  }
  return need;
}

}  // namespace

void AppendJsonString(absl::string_view s, std::string* out) {
  static constexpr char kHex[] = "0123456789abcdef";
  out->push_back('"');
  size_t plain = 0;  // Start of the run not yet appended.
  size_t i = 0;
  auto flush = [&] { out->append(s.data() + plain, i - plain); };
  while (i < s.size()) {
    uint8_t c = static_cast<uint8_t>(s[i]);
    if (c >= 0x20 && c < 0x80 && c != '"' && c != '\\') {
      ++i;
      continue;
    }
    if (c >= 0x80) {
      size_t valid = 0;
      size_t n = Utf8Length(s.substr(i), &valid);
      if (n > 0) {
        i += n;
        continue;
      }
      // The broken sequence's valid start becomes one U+FFFD; the byte
      // that broke it is looked at again on its own.
      flush();
      out->append("\xEF\xBF\xBD");
      i += valid;
      plain = i;
      continue;
    }
    flush();
    switch (c) {
      case '"':
        out->append("\\\"");
        break;
      case '\\':
        out->append("\\\\");
        break;
      case '\b':
        out->append("\\b");
        break;
      case '\f':
        out->append("\\f");
        break;
      case '\n':
        out->append("\\n");
        break;
      case '\r':
        out->append("\\r");
        break;
      case '\t':
        out->append("\\t");
        break;
      default: {
        char u[6] = {'\\', 'u', '0', '0', kHex[c >> 4], kHex[c & 0xF]};
        out->append(u, sizeof(u));
      }
    }
    ++i;
    plain = i;
  }
  flush();
  out->push_back('"');
}

void JsonWriter::Separate() {
  if (comma_) out_->push_back(',');
}

JsonWriter& JsonWriter::BeginObject() {
  Separate();
  out_->push_back('{');
  comma_ = false;
  return *this;
}

JsonWriter& JsonWriter::EndObject() {
  out_->push_back('}');
  comma_ = true;
  return *this;
}

JsonWriter& JsonWriter::BeginArray() {
  Separate();
  out_->push_back('[');
  comma_ = false;
  return *this;
}

JsonWriter& JsonWriter::EndArray() {
  out_->push_back(']');
  comma_ = true;
  return *this;
}

JsonWriter& JsonWriter::Key(absl::string_view key) {
  Separate();
  AppendJsonString(key, out_);
  out_->push_back(':');
  comma_ = false;
  return *this;
}

JsonWriter& JsonWriter::String(absl::string_view value) {
  Separate();
  AppendJsonString(value, out_);
  comma_ = true;
  return *this;
}

JsonWriter& JsonWriter::Int(int64_t value) {
  Separate();
  absl::StrAppend(out_, value);
  comma_ = true;
  return *this;
}

JsonWriter& JsonWriter::Bool(bool value) {
  Separate();
  out_->append(value ? "true" : "false");
  comma_ = true;
  return *this;
}

JsonWriter& JsonWriter::Null() {
  Separate();
  out_->append("null");
  comma_ = true;
  return *this;
}

}  // namespace peregrine::outcome
