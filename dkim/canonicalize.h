// DKIM canonicalization, RFC 6376 §3.4: "simple" and "relaxed", for header
// fields and for the body. Pure functions and a streaming body hasher; no
// I/O, any thread.
//
// Input is a message as it goes on the wire: lines end in CRLF. A bare LF is
// read as CRLF (what the SMTP client will send), so local tools that write
// LF-only files sign what is delivered.
#pragma once

#include <openssl/evp.h>

#include <cstdint>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"

namespace peregrine::dkim {

enum class Canon { kSimple, kRelaxed };

// One header field as it appears in the message: `raw` is the whole field,
// folding and final CRLF included ("Subject: a\r\n b\r\n").
struct HeaderField {
  absl::string_view name;  // As written, without the colon.
  absl::string_view raw;
};

// Splits a message into header fields and body. The body starts after the
// first empty line; a message without one is all header (empty body). A
// line that is not a field (no colon) and not a continuation ends parsing
// of the header block there, as if the body started.
struct SplitMessage {
  std::vector<HeaderField> headers;
  absl::string_view body;
};
SplitMessage Split(absl::string_view message);

// "name:value\r\n" in canonical form (relaxed: lower-case name, unfolded,
// white space runs as one space, none at the ends of the value).
std::string CanonicalizeHeader(Canon canon, const HeaderField& field);

// The body canonicalization state machine: feed bytes in any pieces, get
// canonical bytes out. Trailing empty lines (and, relaxed, trailing white
// space) are held back until it is known whether text follows.
class BodyCanonicalizer {
 public:
  explicit BodyCanonicalizer(Canon canon) : canon_(canon) {}
  // Appends the canonical form of what can be decided so far to `out`.
  void Update(absl::string_view data, std::string* out);
  // Appends the rest: the final CRLF rules of RFC 6376 §3.4.3 and §3.4.4.
  void Finish(std::string* out);

 private:
  void Text(const char* p, size_t n, std::string* out);
  void EndLine(std::string* out);

  Canon canon_;
  size_t empty_lines_ = 0;    // Held back: may be trailing.
  bool pending_wsp_ = false;  // Relaxed: a white space run before text.
  bool line_has_text_ = false;
  bool pending_cr_ = false;  // A CR whose LF has not come (yet).
  bool emitted_ = false;     // Anything written at all.
};

// SHA-256 of the canonical body, streamed.
class BodyHasher {
 public:
  explicit BodyHasher(Canon canon);
  ~BodyHasher();
  BodyHasher(const BodyHasher&) = delete;
  BodyHasher& operator=(const BodyHasher&) = delete;

  void Update(absl::string_view data);
  // The 32-byte digest.
  std::string Finish();

 private:
  BodyCanonicalizer canon_;
  EVP_MD_CTX* ctx_;
  std::string buffer_;
};

// The canonical body as bytes, for tests.
std::string CanonicalizeBody(Canon canon, absl::string_view body);

}  // namespace peregrine::dkim
