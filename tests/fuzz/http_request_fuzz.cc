// libFuzzer target: arbitrary bytes from a client into http::ServerSession
// (the admin port's request framing, on Debian's http-parser). The first
// byte picks where the input is split in two Feed() calls, so packet
// boundaries are fuzzed too. Invariants beyond "no crash, no ASan report":
// every request taken respects the limits, an error is a status the
// driver can answer with, and after an error no input is taken.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "mta/http/server_session.h"

using peregrine::http::Limits;
using peregrine::http::Request;
using peregrine::http::ServerSession;

namespace {

void Check(const Request& r) {
  if (r.body.size() > 1024) abort();
  if (r.headers.size() > ServerSession::kMaxHeaders) abort();
  size_t header_bytes = r.target.size();
  for (const auto& [k, v] : r.headers) header_bytes += k.size() + v.size();
  if (header_bytes > ServerSession::kMaxHeaderBytes) abort();
  if (r.path.size() > r.target.size()) abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  Limits limits;
  limits.max_body = 1024;
  ServerSession s(limits);
  std::string input(reinterpret_cast<const char*>(data) + 1, size - 1);
  size_t cut = input.empty() ? 0 : data[0] % (input.size() + 1);
  int requests = 0;
  for (const std::string& piece : {input.substr(0, cut), input.substr(cut)}) {
    bool ok = s.Feed(piece);
    while (auto r = s.Next()) {
      Check(*r);
      ++requests;
      ok = s.Feed("");
    }
    if (!ok) {
      int e = s.error();
      if (e != 400 && e != 413 && e != 431 && e != 505) abort();
      if (s.error_text().empty()) abort();
      if (s.Feed("GET / HTTP/1.1\r\n\r\n")) abort();
      break;
    }
  }
  // A request is at least "GET / HTTP/1.1\r\n\r\n"-ish: 16 bytes or so.
  if (requests > static_cast<int>(size)) abort();
  return 0;
}
