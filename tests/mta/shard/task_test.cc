#include "mta/shard/task.h"

#include <array>
#include <memory>

#include "gtest/gtest.h"

namespace peregrine::shard {
namespace {

struct Counted {
  int* live;
  int* calls;
  explicit Counted(int* l, int* c) : live(l), calls(c) { ++*live; }
  Counted(Counted&& o) noexcept : live(o.live), calls(o.calls) { ++*live; }
  ~Counted() { --*live; }
  void operator()() { ++*calls; }
};

struct BigCounted : Counted {
  using Counted::Counted;
  std::array<char, 100> padding{};  // Too big for inline storage.
};

template <typename Fn>
void CheckLifecycle() {
  int live = 0, calls = 0;
  {
    Task a(Fn(&live, &calls));
    EXPECT_EQ(live, 1);
    Task b(std::move(a));
    EXPECT_FALSE(a);
    EXPECT_TRUE(b);
    EXPECT_EQ(live, 1);
    b();
    b();
    EXPECT_EQ(calls, 2);
    Task c;
    c = std::move(b);
    c();
    EXPECT_EQ(calls, 3);
    EXPECT_EQ(live, 1);
    c = Task();
    EXPECT_EQ(live, 0);
    Task d(Fn(&live, &calls));
    EXPECT_EQ(live, 1);
  }
  EXPECT_EQ(live, 0);  // Destroyed exactly once, whatever was moved.
}

TEST(TaskTest, InlineCallableLifecycle) { CheckLifecycle<Counted>(); }
TEST(TaskTest, HeapCallableLifecycle) { CheckLifecycle<BigCounted>(); }

TEST(TaskTest, CarriesMoveOnlyCaptures) {
  auto value = std::make_unique<int>(41);
  int seen = 0;
  Task t([v = std::move(value), &seen] { seen = *v + 1; });
  Task moved = std::move(t);
  moved();
  EXPECT_EQ(seen, 42);
}

TEST(TaskTest, OneTaskIsOneCacheLine) { EXPECT_EQ(sizeof(Task), 64u); }

}  // namespace
}  // namespace peregrine::shard
