#include "mta/cluster/resp.h"

#include <hiredis/hiredis.h>
#include <hiredis/read.h>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace peregrine::cluster {
namespace {

RedisValue Convert(const redisReply* r) {
  RedisValue v;
  switch (r->type) {
    case REDIS_REPLY_STRING:
    case REDIS_REPLY_STATUS:
    case REDIS_REPLY_ERROR:
      v.type = RedisValue::Type::kString;
      v.str.assign(r->str, r->len);
      break;
    case REDIS_REPLY_INTEGER:
      v.type = RedisValue::Type::kInteger;
      v.integer = r->integer;
      break;
    case REDIS_REPLY_ARRAY:
      v.type = RedisValue::Type::kArray;
      v.elements.reserve(r->elements);
      for (size_t i = 0; i < r->elements; ++i) {
        v.elements.push_back(Convert(r->element[i]));
      }
      break;
    default:
      v.type = RedisValue::Type::kNil;
  }
  return v;
}

}  // namespace

std::string FormatCommand(const std::vector<std::string>& args) {
  std::vector<const char*> argv;
  std::vector<size_t> lengths;
  for (const std::string& a : args) {
    argv.push_back(a.data());
    lengths.push_back(a.size());
  }
  char* out = nullptr;
  int n = redisFormatCommandArgv(&out, static_cast<int>(args.size()),
                                 argv.data(), lengths.data());
  std::string request;
  if (n > 0) request.assign(out, n);
  redisFreeCommand(out);
  return request;
}

RespReader::RespReader() : reader_(redisReaderCreate()) {}

RespReader::~RespReader() { redisReaderFree(reader_); }

bool RespReader::Feed(absl::string_view bytes) {
  if (!error_.empty()) return false;
  if (bytes.empty()) return true;
  if (redisReaderFeed(reader_, bytes.data(), bytes.size()) != REDIS_OK) {
    error_ = absl::StrCat("protocol error: ", reader_->errstr);
    return false;
  }
  return true;
}

absl::StatusOr<std::optional<RedisValue>> RespReader::Next() {
  if (!error_.empty()) return absl::DataLossError(error_);
  void* raw = nullptr;
  if (redisReaderGetReply(reader_, &raw) != REDIS_OK) {
    error_ = absl::StrCat("protocol error: ", reader_->errstr);
    return absl::DataLossError(error_);
  }
  if (raw == nullptr) {
    if (reader_->len - reader_->pos > kMaxReply) {
      error_ = absl::StrCat("a reply over ", kMaxReply >> 20, " MiB");
      return absl::DataLossError(error_);
    }
    return std::nullopt;
  }
  auto* reply = static_cast<redisReply*>(raw);
  bool failed = reply->type == REDIS_REPLY_ERROR;
  RedisValue value = Convert(reply);
  freeReplyObject(reply);
  if (failed) {
    return absl::FailedPreconditionError(absl::StrCat("redis: ", value.str));
  }
  return value;
}

}  // namespace peregrine::cluster
