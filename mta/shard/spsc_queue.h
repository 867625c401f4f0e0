// SpscQueue: a bounded single-producer/single-consumer ring of items.
//
// One producer thread and one consumer thread; no locks. The producer and
// consumer indices sit on their own cache lines, and each side caches the
// other's index so that a burst of pushes or pops touches the shared line
// once. The consumer runs items in place and releases their slots in one
// store per batch (Drain), which is what makes millions of messages per
// second possible between two cores.
#pragma once

#include <atomic>
#include <cstddef>
#include <memory>
#include <new>

namespace peregrine::shard {

template <typename T>
class SpscQueue {
 public:
  // `capacity` is rounded up to a power of two.
  explicit SpscQueue(size_t capacity) {
    size_t cap = 2;
    while (cap < capacity) cap <<= 1;
    mask_ = cap - 1;
    slots_ = std::make_unique<T[]>(cap);
  }

  SpscQueue(const SpscQueue&) = delete;
  SpscQueue& operator=(const SpscQueue&) = delete;

  size_t capacity() const { return mask_ + 1; }

  // Producer side. False when full; `item` is then left untouched.
  bool TryPush(T&& item) {
    size_t tail = producer_.tail.load(std::memory_order_relaxed);
    if (tail - producer_.head_cache > mask_) {
      producer_.head_cache = consumer_.head.load(std::memory_order_acquire);
      if (tail - producer_.head_cache > mask_) return false;
    }
    slots_[tail & mask_] = std::move(item);
    producer_.tail.store(tail + 1, std::memory_order_release);
    return true;
  }

  // Consumer side: runs fn(item) on up to `max` items in place, then frees
  // their slots. Returns how many were run.
  template <typename Fn>
  size_t Drain(size_t max, Fn&& fn) {
    size_t head = consumer_.head.load(std::memory_order_relaxed);
    if (consumer_.tail_cache == head) {
      consumer_.tail_cache = producer_.tail.load(std::memory_order_acquire);
      if (consumer_.tail_cache == head) return 0;
    }
    size_t n = consumer_.tail_cache - head;
    if (n > max) n = max;
    for (size_t i = 0; i < n; ++i) {
      T& slot = slots_[(head + i) & mask_];
      fn(slot);
      slot = T();  // Frees what the item holds now, on the consumer.
    }
    consumer_.head.store(head + n, std::memory_order_release);
    return n;
  }

  // Either side; exact only when the other side is quiet.
  bool Empty() const {
    return consumer_.head.load(std::memory_order_acquire) ==
           producer_.tail.load(std::memory_order_acquire);
  }

 private:
  static constexpr size_t kLine = 64;
  struct alignas(kLine) Producer {
    std::atomic<size_t> tail{0};
    size_t head_cache = 0;
  };
  struct alignas(kLine) Consumer {
    std::atomic<size_t> head{0};
    size_t tail_cache = 0;
  };

  Producer producer_;
  Consumer consumer_;
  size_t mask_ = 0;
  std::unique_ptr<T[]> slots_;
};

}  // namespace peregrine::shard
