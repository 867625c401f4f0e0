#include "mta/http/server_session.h"

#include <climits>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"

namespace peregrine::http {
namespace {

ServerSession* Self(http_parser* p) {
  return static_cast<ServerSession*>(p->data);
}

}  // namespace

std::optional<absl::string_view> Request::Header(absl::string_view name) const {
  for (const auto& [key, value] : headers) {
    if (absl::EqualsIgnoreCase(key, name)) return absl::string_view(value);
  }
  return std::nullopt;
}

ServerSession::ServerSession(Limits limits) : limits_(limits) {
  http_parser_init(&parser_, HTTP_REQUEST);
  parser_.data = this;
  http_parser_settings_init(&settings_);
  settings_.on_message_begin = &OnMessageBegin;
  settings_.on_url = &OnUrl;
  settings_.on_header_field = &OnHeaderField;
  settings_.on_header_value = &OnHeaderValue;
  settings_.on_headers_complete = &OnHeadersComplete;
  settings_.on_body = &OnBody;
  settings_.on_message_complete = &OnMessageComplete;
}

int ServerSession::Fail(int status, std::string text) {
  if (error_ == 0) {
    error_ = status;
    error_text_ = std::move(text);
  }
  return 1;  // Stops the parser.
}

bool ServerSession::AddHeaderBytes(size_t n) {
  header_bytes_ += n;
  return header_bytes_ <= kMaxHeaderBytes;
}

int ServerSession::OnMessageBegin(http_parser* p) {
  ServerSession& s = *Self(p);
  s.current_ = Request();
  s.header_bytes_ = 0;
  s.in_value_ = false;
  s.in_message_ = true;
  return 0;
}

int ServerSession::OnUrl(http_parser* p, const char* at, size_t n) {
  ServerSession& s = *Self(p);
  if (!s.AddHeaderBytes(n)) {
    return s.Fail(431, "the request line and headers exceed 16 KiB");
  }
  s.current_.target.append(at, n);
  return 0;
}

int ServerSession::OnHeaderField(http_parser* p, const char* at, size_t n) {
  ServerSession& s = *Self(p);
  if (!s.AddHeaderBytes(n)) {
    return s.Fail(431, "the request line and headers exceed 16 KiB");
  }
  // A field may arrive in pieces; a new one starts after a value.
  if (s.in_value_ || s.current_.headers.empty()) {
    if (s.current_.headers.size() >= kMaxHeaders) {
      return s.Fail(431, "more than 100 header fields");
    }
    s.current_.headers.emplace_back();
    s.in_value_ = false;
  }
  s.current_.headers.back().first.append(at, n);
  return 0;
}

int ServerSession::OnHeaderValue(http_parser* p, const char* at, size_t n) {
  ServerSession& s = *Self(p);
  if (!s.AddHeaderBytes(n)) {
    return s.Fail(431, "the request line and headers exceed 16 KiB");
  }
  s.in_value_ = true;
  s.current_.headers.back().second.append(at, n);
  return 0;
}

int ServerSession::OnHeadersComplete(http_parser* p) {
  ServerSession& s = *Self(p);
  Request& r = s.current_;
  if (p->http_major != 1) {
    return s.Fail(505, "only HTTP/1.0 and HTTP/1.1 are served");
  }
  r.method = http_method_str(static_cast<http_method>(p->method));
  size_t q = r.target.find('?');
  r.path = r.target.substr(0, q);
  if (q != std::string::npos) r.query = r.target.substr(q + 1);
  r.keep_alive = http_should_keep_alive(p) != 0;
  if (!(p->flags & F_CHUNKED) && p->content_length != ULLONG_MAX &&
      p->content_length > s.limits_.max_body) {
    return s.Fail(
        413, absl::StrCat("the body exceeds ", s.limits_.max_body, " bytes"));
  }
  return 0;
}

int ServerSession::OnBody(http_parser* p, const char* at, size_t n) {
  ServerSession& s = *Self(p);
  if (s.current_.body.size() + n > s.limits_.max_body) {
    return s.Fail(
        413, absl::StrCat("the body exceeds ", s.limits_.max_body, " bytes"));
  }
  s.current_.body.append(at, n);
  return 0;
}

int ServerSession::OnMessageComplete(http_parser* p) {
  ServerSession& s = *Self(p);
  s.ready_ = std::move(s.current_);
  s.current_ = Request();
  s.in_message_ = false;
  // Parse no further until the driver took this one.
  http_parser_pause(p, 1);
  return 0;
}

bool ServerSession::Parse() {
  while (error_ == 0 && !ready_ && !pending_.empty()) {
    size_t n = http_parser_execute(&parser_, &settings_, pending_.data(),
                                   pending_.size());
    if (error_ != 0) return false;
    http_errno err = HTTP_PARSER_ERRNO(&parser_);
    if (err == HPE_PAUSED) {
      http_parser_pause(&parser_, 0);
    } else if (err != HPE_OK) {
      Fail(400,
           absl::StrCat("malformed request: ", http_errno_description(err)));
      return false;
    }
    pending_.erase(0, n);
    if (parser_.upgrade) {
      // Upgrade and CONNECT are not served: the request is answered as
      // plain HTTP/1.1 (RFC 9110 lets a server ignore Upgrade), and what
      // follows is read as the next request.
      if (!ready_) {
        Fail(400, "protocol upgrades are not supported");
        return false;
      }
      http_parser_init(&parser_, HTTP_REQUEST);
      parser_.data = this;
    } else if (err != HPE_PAUSED && n == 0) {
      break;  // Nothing consumed: wait for more.
    }
  }
  return error_ == 0;
}

bool ServerSession::Feed(absl::string_view bytes) {
  if (error_ != 0) return false;
  pending_.append(bytes.data(), bytes.size());
  return Parse();
}

std::optional<Request> ServerSession::Next() {
  std::optional<Request> r = std::move(ready_);
  ready_.reset();
  return r;
}

absl::string_view Reason(int status) {
  switch (status) {
    case 200:
      return "OK";
    case 202:
      return "Accepted";
    case 204:
      return "No Content";
    case 400:
      return "Bad Request";
    case 401:
      return "Unauthorized";
    case 403:
      return "Forbidden";
    case 404:
      return "Not Found";
    case 405:
      return "Method Not Allowed";
    case 408:
      return "Request Timeout";
    case 413:
      return "Content Too Large";
    case 429:
      return "Too Many Requests";
    case 431:
      return "Request Header Fields Too Large";
    case 500:
      return "Internal Server Error";
    case 503:
      return "Service Unavailable";
    case 505:
      return "HTTP Version Not Supported";
    default:
      return "Unknown";
  }
}

std::string Response(int status, absl::string_view content_type,
                     absl::string_view body, bool keep_alive,
                     absl::string_view extra_headers) {
  return absl::StrCat("HTTP/1.1 ", status, " ", Reason(status),
                      "\r\nContent-Type: ", content_type,
                      "\r\nContent-Length: ", body.size(),
                      "\r\nConnection: ", keep_alive ? "keep-alive" : "close",
                      "\r\n", extra_headers, "\r\n", body);
}

std::string JsonError(int status, absl::string_view message, bool keep_alive,
                      absl::string_view extra_headers) {
  nlohmann::json j = {
      {"error", {{"code", status}, {"message", std::string(message)}}}};
  std::string body =
      j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  body += '\n';
  return Response(status, "application/json", body, keep_alive, extra_headers);
}

}  // namespace peregrine::http
