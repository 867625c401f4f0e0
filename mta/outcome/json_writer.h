// JsonWriter: appends JSON text to a string, without building a document.
//
// The event log writes one object per outcome on the shards' hot path;
// building an nlohmann tree and dumping it cost about 4% of the daemon's
// CPU in the W1-20 benchmark, appending directly about a fifth of that.
// Output is compact (no spaces), as nlohmann's dump(-1). Strings are
// escaped exactly as nlohmann's dump with error_handler_t::replace and
// ensure_ascii = false (tests compare the two on random bytes): `"`, `\`
// and control characters escaped, UTF-8 kept as it is, and every byte
// sequence that is not UTF-8 (RFC 3629: no overlong forms, no surrogates,
// nothing past U+10FFFF) replaced by U+FFFD, so every line parses.
//
// The caller keeps the shape right (a key before each member's value);
// the writer only places the commas.
#pragma once

#include <cstdint>
#include <string>

#include "absl/strings/string_view.h"

namespace peregrine::outcome {

class JsonWriter {
 public:
  explicit JsonWriter(std::string* out) : out_(out) {}

  JsonWriter& BeginObject();
  JsonWriter& EndObject();
  JsonWriter& BeginArray();
  JsonWriter& EndArray();
  JsonWriter& Key(absl::string_view key);
  JsonWriter& String(absl::string_view value);
  JsonWriter& Int(int64_t value);
  JsonWriter& Bool(bool value);
  JsonWriter& Null();
  // A string, or null when it is empty.
  JsonWriter& StringOrNull(absl::string_view value) {
    return value.empty() ? Null() : String(value);
  }
  // A number, or null when it is zero.
  JsonWriter& IntOrNull(int64_t value) {
    return value == 0 ? Null() : Int(value);
  }

 private:
  void Separate();

  std::string* const out_;
  bool comma_ = false;  // The next value or key follows a sibling.
};

// `s` as a quoted JSON string, appended to `out`.
void AppendJsonString(absl::string_view s, std::string* out);

}  // namespace peregrine::outcome
