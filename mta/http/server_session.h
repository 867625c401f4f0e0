// http::ServerSession: the server side of HTTP/1.1 as a codec, without I/O
// (like smtp::ServerSession). The connection driver feeds it the bytes it
// read and takes complete requests from it, one at a time; answers are made
// with Response(). Framing is Debian's http-parser (libhttp-parser-dev):
// request line, headers, Content-Length and chunked bodies, keep-alive and
// pipelining as RFC 9112 says.
//
// Limits, so that a hostile client costs a bounded amount of memory: the
// request line and headers together (kMaxHeaderBytes, 431 past it), the
// number of headers (kMaxHeaders, 431), the body (Limits::max_body, 413).
// Anything malformed is 400; a version other than 1.x is 505. After an error
// the session takes no more input: the driver answers error() and closes.
//
// Pipelining: Feed() stops at the end of each complete request and keeps
// what follows until the driver took the request (Next()) and fed again
// (an empty Feed() resumes): at most one request is held, whatever the
// client sends ahead.
#pragma once

#include <http_parser.h>

#include <cstddef>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/string_view.h"

namespace peregrine::http {

struct Request {
  std::string method;  // "GET", "POST", ...
  std::string target;  // As sent: "/api/v1/inject?x=1".
  std::string path;    // The target up to '?'.
  std::string query;   // After '?', without it.
  std::vector<std::pair<std::string, std::string>> headers;  // As sent.
  std::string body;
  bool keep_alive = true;  // HTTP/1.1 default; "Connection: close" not.

  // The first header of that name (case-insensitive), or nullopt.
  std::optional<absl::string_view> Header(absl::string_view name) const;
};

struct Limits {
  size_t max_body = 32 << 20;
};

class ServerSession {
 public:
  static constexpr size_t kMaxHeaderBytes = 16 << 10;
  static constexpr size_t kMaxHeaders = 100;

  explicit ServerSession(Limits limits = {});
  ServerSession(const ServerSession&) = delete;
  ServerSession& operator=(const ServerSession&) = delete;

  // Takes bytes from the client (possibly none: resumes after Next()).
  // Returns false once the input is unusable: see error().
  bool Feed(absl::string_view bytes);
  // The complete request, if one is ready. Feed() parses no further until
  // it was taken.
  std::optional<Request> Next();
  // Bytes fed and not yet parsed (what follows a ready request).
  size_t buffered() const { return pending_.size(); }
  // True between the first byte of a request and its end: a driver times
  // out a request that takes too long to arrive.
  bool in_request() const { return in_message_; }

  // 0 while all is well; else the status to answer with (400, 413, 431, 505),
  // and why in words.
  int error() const { return error_; }
  const std::string& error_text() const { return error_text_; }

 private:
  static int OnMessageBegin(http_parser* p);
  static int OnUrl(http_parser* p, const char* at, size_t n);
  static int OnHeaderField(http_parser* p, const char* at, size_t n);
  static int OnHeaderValue(http_parser* p, const char* at, size_t n);
  static int OnHeadersComplete(http_parser* p);
  static int OnBody(http_parser* p, const char* at, size_t n);
  static int OnMessageComplete(http_parser* p);
  int Fail(int status, std::string text);
  bool AddHeaderBytes(size_t n);
  bool Parse();

  const Limits limits_;
  http_parser parser_;
  http_parser_settings settings_;
  Request current_;
  std::optional<Request> ready_;
  std::string pending_;  // Fed, not parsed yet.
  size_t header_bytes_ = 0;
  bool in_value_ = false;
  bool in_message_ = false;
  int error_ = 0;
  std::string error_text_;
};

// One response: status line, Content-Type, Content-Length, Connection
// (close when !keep_alive), any `extra` headers, then the body.
std::string Response(int status, absl::string_view content_type,
                     absl::string_view body, bool keep_alive,
                     absl::string_view extra_headers = "");
// {"error": {"code": N, "message": "..."}} as a response.
std::string JsonError(int status, absl::string_view message, bool keep_alive,
                      absl::string_view extra_headers = "");
// "Not Found" for 404 and so on; "Unknown" for codes it does not know.
absl::string_view Reason(int status);

}  // namespace peregrine::http
