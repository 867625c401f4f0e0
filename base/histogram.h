// Histogram: counts of observations in fixed buckets, rendered in the
// Prometheus text format. Observe() from any thread (relaxed atomics: a
// scrape may see one observation in the count and not yet in the sum);
// Render() from any thread.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"

namespace peregrine {

class Histogram {
 public:
  // `bounds`: the buckets' upper bounds, increasing (+Inf is added).
  explicit Histogram(std::vector<double> bounds);
  Histogram(const Histogram&) = delete;
  Histogram& operator=(const Histogram&) = delete;

  void Observe(double value);
  uint64_t count() const { return count_.load(std::memory_order_relaxed); }

  // # HELP, # TYPE, NAME_bucket{le="..."} (cumulative), NAME_sum and
  // NAME_count.
  std::string Render(absl::string_view name, absl::string_view help) const;

 private:
  const std::vector<double> bounds_;
  std::unique_ptr<std::atomic<uint64_t>[]> buckets_;  // bounds_ + 1.
  std::atomic<uint64_t> count_{0};
  std::atomic<double> sum_{0};
};

}  // namespace peregrine
