// Table: a small durable key-value table of its own beside the queue, for
// concerns that keep state with it (the suppression list). The queue does
// not look inside keys or values.
//
// Threads: any, but not a reactor for writes: Put and Delete are
// synchronous writes whose log is synced before they return. Get is a
// read from memory or the block cache in the common case.
#pragma once

#include <optional>
#include <string>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace peregrine::queue {

class Table {
 public:
  virtual ~Table() = default;
  virtual absl::Status Put(absl::string_view key, absl::string_view value) = 0;
  virtual absl::StatusOr<std::optional<std::string>> Get(
      absl::string_view key) = 0;
  // OK whether or not the key was there.
  virtual absl::Status Delete(absl::string_view key) = 0;
  // Every entry whose key starts with `prefix`, in key order, until
  // `visit` returns false.
  virtual absl::Status Scan(
      absl::string_view prefix,
      absl::FunctionRef<bool(absl::string_view key, absl::string_view value)>
          visit) = 0;
};

}  // namespace peregrine::queue
