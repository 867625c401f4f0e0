#include "mta/cluster/resp.h"

#include <hiredis/hiredis.h>
#include <hiredis/read.h>

#include <memory>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace peregrine::cluster {
namespace {

// The reader builds RedisValues itself (hiredis's object functions): the
// default ones calloc an array's slots on its "*N" header alone, so a
// hostile "*2000000000" would take gigabytes before a byte of it came.
// An array of more than kMaxElements is refused instead (the reader's
// "Out of memory" error). A nested value lives in its parent's slot;
// only the top one is allocated and freed.
struct Top {
  RedisValue value;
  bool error = false;  // An error reply ("-ERR ...").
};

// The value a task made: a Top's at the top, else a slot of its parent's.
RedisValue* ValueOf(const redisReadTask* task) {
  return task->parent == nullptr ? &static_cast<Top*>(task->obj)->value
                                 : static_cast<RedisValue*>(task->obj);
}

// Makes the task's value: returns the object hiredis keeps for it (a Top
// at the top) and, in *v, the value to fill.
void* Make(const redisReadTask* task, RedisValue::Type type, bool error,
           RedisValue** v) {
  void* obj;
  if (task->parent == nullptr) {
    auto* top = new Top;
    top->error = error;
    *v = &top->value;
    obj = top;
  } else {
    RedisValue* parent = ValueOf(task->parent);
    *v = &parent->elements[static_cast<size_t>(task->idx)];
    obj = *v;
  }
  (*v)->type = type;
  return obj;
}

void* CreateString(const redisReadTask* task, char* str, size_t len) {
  RedisValue* v;
  void* obj = Make(task, RedisValue::Type::kString,
                   task->type == REDIS_REPLY_ERROR, &v);
  v->str.assign(str, len);
  return obj;
}

void* CreateArray(const redisReadTask* task, int elements) {
  if (elements < 0 ||
      static_cast<size_t>(elements) > RespReader::kMaxElements) {
    return nullptr;
  }
  RedisValue* v;
  void* obj = Make(task, RedisValue::Type::kArray, false, &v);
  v->elements.resize(static_cast<size_t>(elements));
  return obj;
}

void* CreateInteger(const redisReadTask* task, long long value) {
  RedisValue* v;
  void* obj = Make(task, RedisValue::Type::kInteger, false, &v);
  v->integer = value;
  return obj;
}

void* CreateNil(const redisReadTask* task) {
  RedisValue* v;
  return Make(task, RedisValue::Type::kNil, false, &v);
}

// Called on the top object alone (a whole reply, or one given up on).
void FreeObject(void* obj) { delete static_cast<Top*>(obj); }

redisReplyObjectFunctions kFunctions = {CreateString, CreateArray,
                                        CreateInteger, CreateNil, FreeObject};

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

RespReader::RespReader()
    : reader_(redisReaderCreateWithFunctions(&kFunctions)) {}

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
    // An array over kMaxElements is refused as "Out of memory".
    error_ =
        absl::string_view(reader_->errstr) == "Out of memory"
            ? absl::StrCat("a reply with more than ", kMaxElements, " elements")
            : absl::StrCat("protocol error: ", reader_->errstr);
    return absl::DataLossError(error_);
  }
  if (raw == nullptr) {
    if (reader_->len - reader_->pos > kMaxReply) {
      error_ = absl::StrCat("a reply over ", kMaxReply >> 20, " MiB");
      return absl::DataLossError(error_);
    }
    return std::nullopt;
  }
  std::unique_ptr<Top> top(static_cast<Top*>(raw));  // Made by Make().
  if (top->error) {
    return absl::FailedPreconditionError(
        absl::StrCat("redis: ", top->value.str));
  }
  return std::move(top->value);
}

}  // namespace peregrine::cluster
