#include "base/histogram.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace peregrine {

Histogram::Histogram(std::vector<double> bounds)
    : bounds_(std::move(bounds)),
      buckets_(new std::atomic<uint64_t>[bounds_.size() + 1]) {
  for (size_t i = 0; i <= bounds_.size(); ++i) buckets_[i].store(0);
}

void Histogram::Observe(double value) {
  size_t i = static_cast<size_t>(
      std::lower_bound(bounds_.begin(), bounds_.end(), value) -
      bounds_.begin());
  buckets_[i].fetch_add(1, std::memory_order_relaxed);
  count_.fetch_add(1, std::memory_order_relaxed);
  double sum = sum_.load(std::memory_order_relaxed);
  while (!sum_.compare_exchange_weak(sum, sum + value,
                                     std::memory_order_relaxed)) {
  }
}

std::string Histogram::Render(absl::string_view name,
                              absl::string_view help) const {
  std::string out = absl::StrCat("# HELP ", name, " ", help, "\n# TYPE ", name,
                                 " histogram\n");
  uint64_t cumulative = 0;
  for (size_t i = 0; i <= bounds_.size(); ++i) {
    cumulative += buckets_[i].load(std::memory_order_relaxed);
    absl::StrAppend(&out, name, "_bucket{le=\"",
                    i < bounds_.size() ? absl::StrCat(bounds_[i]) : "+Inf",
                    "\"} ", cumulative, "\n");
  }
  absl::StrAppend(&out, name, "_sum ", sum_.load(std::memory_order_relaxed),
                  "\n", name, "_count ", cumulative, "\n");
  return out;
}

}  // namespace peregrine
