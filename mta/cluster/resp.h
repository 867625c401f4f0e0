// RESP, Redis's protocol, through hiredis (Debian's libhiredis): the
// values replies carry, requests formatted by redisFormatCommandArgv, and
// replies read by hiredis's reader (which bounds nesting), building our
// values with bounds of our own: the bytes a reply may wait on, and an
// array's length (hiredis's own functions would allocate an array's slots
// on its header alone). Sans-I/O: bytes in, values out, so the
// client (redis_client.h) and the fuzz target read the same way.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

struct redisReader;

namespace peregrine::cluster {

// A reply: a string (bulk or status), an integer, nil, or an array. Error
// replies come as a failed status instead ("redis: ERR ...").
struct RedisValue {
  enum class Type { kString, kInteger, kNil, kArray };
  Type type = Type::kNil;
  std::string str;
  long long integer = 0;
  std::vector<RedisValue> elements;
};

// The request for `args` ("SET", "k", "v"), binary-safe.
std::string FormatCommand(const std::vector<std::string>& args);

class RespReader {
 public:
  static constexpr size_t kMaxReply = 64 << 20;
  static constexpr size_t kMaxElements = 65536;  // In one array.
  RespReader();
  ~RespReader();
  RespReader(const RespReader&) = delete;
  RespReader& operator=(const RespReader&) = delete;

  // Bytes from the server; false (and error()) when they are not RESP.
  bool Feed(absl::string_view bytes);
  // The next whole reply: nullopt when more bytes are needed; an error
  // reply ("-ERR ...") as a failed status with its text. A protocol error
  // or a reply over kMaxReply waiting: a failed status, and error() says
  // it (the connection is to be dropped).
  absl::StatusOr<std::optional<RedisValue>> Next();
  const std::string& error() const { return error_; }

 private:
  redisReader* reader_;
  std::string error_;
};

}  // namespace peregrine::cluster
