// queue::Table in memory, for tests of what keeps state in the queue's
// side table (the suppression list). Thread-safe.
#pragma once

#include <map>
#include <mutex>
#include <optional>
#include <string>

#include "absl/strings/match.h"
#include "queue/table.h"

namespace peregrine::bounce {

class MemoryTable : public queue::Table {
 public:
  absl::Status Put(absl::string_view k, absl::string_view v) override {
    std::lock_guard<std::mutex> l(mu_);
    rows_[std::string(k)] = std::string(v);
    return absl::OkStatus();
  }
  absl::StatusOr<std::optional<std::string>> Get(absl::string_view k) override {
    std::lock_guard<std::mutex> l(mu_);
    auto it = rows_.find(std::string(k));
    if (it == rows_.end()) return std::nullopt;
    return it->second;
  }
  absl::Status Delete(absl::string_view k) override {
    std::lock_guard<std::mutex> l(mu_);
    rows_.erase(std::string(k));
    return absl::OkStatus();
  }
  absl::Status Scan(
      absl::string_view prefix,
      absl::FunctionRef<bool(absl::string_view, absl::string_view)> visit)
      override {
    std::lock_guard<std::mutex> l(mu_);
    for (auto it = rows_.lower_bound(std::string(prefix)); it != rows_.end();
         ++it) {
      if (!absl::StartsWith(it->first, prefix)) break;
      if (!visit(it->first, it->second)) break;
    }
    return absl::OkStatus();
  }
  size_t size() {
    std::lock_guard<std::mutex> l(mu_);
    return rows_.size();
  }

 private:
  std::mutex mu_;
  std::map<std::string, std::string> rows_;
};

}  // namespace peregrine::bounce
