#include "dkim/canonicalize.h"

#include <array>
#ifdef __SSE2__
#include <emmintrin.h>
#endif
#include <cstring>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"

namespace peregrine::dkim {
namespace {

bool IsWsp(char c) { return c == ' ' || c == '\t'; }

// Byte classes for the relaxed fast path.
enum : uint8_t { kText = 0, kSpecial = 1 };
constexpr auto kClass = [] {
  std::array<uint8_t, 256> t{};
  t[' '] = t['\t'] = t['\r'] = t['\n'] = kSpecial;
  return t;
}();

// Advances over bytes that relaxed canonicalization keeps as they are, 16 at
// a time: stops at the first tab, CR, LF, or space that is followed by white
// space or a line end (or that ends the block, where the next byte is not
// known). The scalar loop after it finishes the job byte by byte.
inline const char* SkipCanonicalSpan(const char* p, const char* end) {
#ifdef __SSE2__
  const __m128i sp = _mm_set1_epi8(' ');
  const __m128i tab = _mm_set1_epi8('\t');
  const __m128i cr = _mm_set1_epi8('\r');
  const __m128i lf = _mm_set1_epi8('\n');
  while (end - p >= 17) {
    __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
    __m128i next = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 1));
    __m128i hard = _mm_or_si128(
        _mm_cmpeq_epi8(v, tab),
        _mm_or_si128(_mm_cmpeq_epi8(v, cr), _mm_cmpeq_epi8(v, lf)));
    __m128i next_white = _mm_or_si128(
        _mm_or_si128(_mm_cmpeq_epi8(next, sp), _mm_cmpeq_epi8(next, tab)),
        _mm_or_si128(_mm_cmpeq_epi8(next, cr), _mm_cmpeq_epi8(next, lf)));
    __m128i soft = _mm_and_si128(_mm_cmpeq_epi8(v, sp), next_white);
    int mask = _mm_movemask_epi8(_mm_or_si128(hard, soft));
    if (mask != 0) return p + __builtin_ctz(mask);
    p += 16;
  }
#endif
  return p;
}

// Hash in chunks this large: big enough to amortize EVP calls.
constexpr size_t kFlushBytes = 64 * 1024;

}  // namespace

SplitMessage Split(absl::string_view message) {
  SplitMessage out;
  size_t pos = 0;
  while (pos < message.size()) {
    size_t eol = message.find('\n', pos);
    size_t next = eol == absl::string_view::npos ? message.size() : eol + 1;
    absl::string_view line = message.substr(pos, next - pos);
    absl::string_view content = line;
    if (absl::EndsWith(content, "\n")) content.remove_suffix(1);
    if (absl::EndsWith(content, "\r")) content.remove_suffix(1);
    if (content.empty()) {  // The empty line: the body follows.
      out.body = message.substr(next);
      return out;
    }
    if (IsWsp(line[0]) && !out.headers.empty()) {
      // Continuation: extend the previous field.
      HeaderField& last = out.headers.back();
      last.raw = absl::string_view(
          last.raw.data(), (line.data() + line.size()) - last.raw.data());
    } else {
      size_t colon = content.find(':');
      if (colon == absl::string_view::npos) {
        out.body = message.substr(pos);
        return out;
      }
      absl::string_view name = content.substr(0, colon);
      while (!name.empty() && IsWsp(name.back())) name.remove_suffix(1);
      out.headers.push_back({name, line});
    }
    pos = next;
  }
  out.body = absl::string_view();
  return out;
}

std::string CanonicalizeHeader(Canon canon, const HeaderField& field) {
  if (canon == Canon::kSimple) {
    std::string raw(field.raw);
    // Fields end in CRLF on the wire even when the input used bare LF.
    if (absl::EndsWith(raw, "\n") && !absl::EndsWith(raw, "\r\n")) {
      raw.insert(raw.size() - 1, "\r");
    } else if (!absl::EndsWith(raw, "\n")) {
      raw += "\r\n";
    }
    return raw;
  }
  std::string out = absl::AsciiStrToLower(field.name);
  out += ':';
  absl::string_view raw = field.raw;
  size_t colon = raw.find(':');
  absl::string_view value = colon == absl::string_view::npos
                                ? absl::string_view()
                                : raw.substr(colon + 1);
  bool wsp = false;
  bool started = false;
  for (char c : value) {
    if (c == '\r' || c == '\n') continue;  // Unfold.
    if (IsWsp(c)) {
      wsp = true;
      continue;
    }
    if (wsp && started) out += ' ';
    wsp = false;
    started = true;
    out += c;
  }
  out += "\r\n";
  return out;
}

void BodyCanonicalizer::Text(const char* p, size_t n, std::string* out) {
  if (!line_has_text_) {
    for (; empty_lines_ > 0; --empty_lines_) out->append("\r\n", 2);
  }
  if (pending_wsp_) out->push_back(' ');
  pending_wsp_ = false;
  line_has_text_ = true;
  emitted_ = true;
  out->append(p, n);
}

void BodyCanonicalizer::EndLine(std::string* out) {
  pending_wsp_ = false;  // Relaxed: white space at the end of a line goes.
  if (!line_has_text_) {
    ++empty_lines_;
    return;
  }
  out->append("\r\n", 2);
  line_has_text_ = false;
}

void BodyCanonicalizer::Update(absl::string_view data, std::string* out) {
  const char* p = data.data();
  const char* end = p + data.size();
  const bool relaxed = canon_ == Canon::kRelaxed;
  while (p < end) {
    if (pending_cr_) {
      pending_cr_ = false;
      if (*p == '\n') {
        ++p;
        EndLine(out);
        continue;
      }
      Text("\r", 1, out);  // A bare CR is data.
    }
    // Fast path: a span that is already canonical goes out in one append.
    // Relaxed: text, with single spaces between text bytes (a lone space
    // followed by text is its own canonical form); it stops at a tab, a
    // run of white space, or a line end. Simple: everything up to CR/LF.
    const char* run = p;
    if (relaxed) {
      if (kClass[static_cast<uint8_t>(*p)] == kText) {
        ++p;
        p = SkipCanonicalSpan(p, end);
        while (p < end) {
          if (kClass[static_cast<uint8_t>(*p)] == kText) {
            ++p;
          } else if (*p == ' ' && p + 1 < end &&
                     kClass[static_cast<uint8_t>(p[1])] == kText) {
            p += 2;
          } else {
            break;
          }
        }
      }
    } else {
      while (p < end && *p != '\r' && *p != '\n') ++p;
    }
    if (p > run) {
      Text(run, p - run, out);
      continue;
    }
    char c = *p++;
    if (c == '\r') {
      pending_cr_ = true;
    } else if (c == '\n') {
      EndLine(out);  // A bare LF is read as CRLF.
    } else {
      pending_wsp_ = true;  // Relaxed only: SP or HTAB.
    }
  }
}

void BodyCanonicalizer::Finish(std::string* out) {
  if (pending_cr_) {
    pending_cr_ = false;
    Text("\r", 1, out);
  }
  // A last line without its CRLF gets one; trailing empty lines are gone.
  if (line_has_text_) EndLine(out);
  // Simple: an empty body (or only empty lines) is one CRLF. Relaxed: it
  // stays empty.
  if (canon_ == Canon::kSimple && !emitted_) out->append("\r\n", 2);
  empty_lines_ = 0;
}

BodyHasher::BodyHasher(Canon canon) : canon_(canon), ctx_(EVP_MD_CTX_new()) {
  EVP_DigestInit_ex(ctx_, EVP_sha256(), nullptr);
  buffer_.reserve(kFlushBytes + 4096);
}

BodyHasher::~BodyHasher() { EVP_MD_CTX_free(ctx_); }

void BodyHasher::Update(absl::string_view data) {
  // Canonicalize in slices so the buffer stays in cache before hashing.
  while (!data.empty()) {
    absl::string_view slice = data.substr(0, kFlushBytes);
    data.remove_prefix(slice.size());
    canon_.Update(slice, &buffer_);
    if (buffer_.size() >= kFlushBytes) {
      EVP_DigestUpdate(ctx_, buffer_.data(), buffer_.size());
      buffer_.clear();
    }
  }
}

std::string BodyHasher::Finish() {
  canon_.Finish(&buffer_);
  EVP_DigestUpdate(ctx_, buffer_.data(), buffer_.size());
  buffer_.clear();
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_DigestFinal_ex(ctx_, digest, &len);
  return std::string(reinterpret_cast<char*>(digest), len);
}

std::string CanonicalizeBody(Canon canon, absl::string_view body) {
  BodyCanonicalizer c(canon);
  std::string out;
  c.Update(body, &out);
  c.Finish(&out);
  return out;
}

}  // namespace peregrine::dkim
