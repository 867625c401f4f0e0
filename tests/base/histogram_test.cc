#include "base/histogram.h"

#include "gtest/gtest.h"

namespace peregrine {
namespace {

TEST(Histogram, CumulativeBucketsSumAndCountInPrometheusText) {
  Histogram h({0.01, 0.1, 1});
  h.Observe(0.005);
  h.Observe(0.01);  // On a bound: that bucket (le is "less or equal").
  h.Observe(0.5);
  h.Observe(7);
  EXPECT_EQ(h.count(), 4u);
  EXPECT_EQ(h.Render("t_seconds", "Test."),
            "# HELP t_seconds Test.\n"
            "# TYPE t_seconds histogram\n"
            "t_seconds_bucket{le=\"0.01\"} 2\n"
            "t_seconds_bucket{le=\"0.1\"} 2\n"
            "t_seconds_bucket{le=\"1\"} 3\n"
            "t_seconds_bucket{le=\"+Inf\"} 4\n"
            "t_seconds_sum 7.515\n"
            "t_seconds_count 4\n");
}

}  // namespace
}  // namespace peregrine
