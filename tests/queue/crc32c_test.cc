#include "queue/crc32c.h"

#include <random>
#include <string>

#include "gtest/gtest.h"

namespace peregrine::queue {
namespace {

TEST(Crc32c, KnownValue) {
  // The CRC-32C check value (RFC 3720 B.4 uses the same polynomial).
  EXPECT_EQ(rocksdb::crc32c::Extend(0, "123456789", 9), 0xE3069283u);
  EXPECT_EQ(rocksdb::crc32c::Extend(0, "", 0), 0u);
  // Extending in pieces equals one pass.
  uint32_t a = rocksdb::crc32c::Extend(0, "1234", 4);
  EXPECT_EQ(rocksdb::crc32c::Extend(a, "56789", 5), 0xE3069283u);
}

TEST(Crc32c, LibrarysCallsComeHere) {
  // Otherwise RocksDB keeps its table-driven loop and nothing is gained
  // (also nothing is broken: the values are the same).
  EXPECT_TRUE(Crc32cInterposed());
#if defined(__x86_64__)
  if (__builtin_cpu_supports("sse4.2")) EXPECT_TRUE(Crc32cInHardware());
#endif
}

TEST(Crc32c, SameAsLibraryOnRandomInput) {
  auto library = LibraryCrc32cExtend();
  ASSERT_NE(library, nullptr);
  ASSERT_NE(library, &rocksdb::crc32c::Extend);
  std::mt19937_64 rng(42);
  std::string buf(70000, '\0');
  for (char& c : buf) c = static_cast<char>(rng());
  for (int i = 0; i < 3000; ++i) {
    size_t size = i < 600 ? static_cast<size_t>(i % 300)
                          : static_cast<size_t>(rng() % 65536);
    size_t offset = rng() % 16;  // Every alignment.
    uint32_t init = i % 2 == 0 ? 0 : static_cast<uint32_t>(rng());
    ASSERT_EQ(rocksdb::crc32c::Extend(init, buf.data() + offset, size),
              library(init, buf.data() + offset, size))
        << "size " << size << " offset " << offset << " init " << init;
  }
}

TEST(Crc32c, SameAsLibraryAroundEveryBlockBoundary) {
  // The hardware path runs three chains over blocks of 8 KiB, then of 256
  // bytes, then one chain: every size near a multiple of either.
  auto library = LibraryCrc32cExtend();
  ASSERT_NE(library, nullptr);
  std::mt19937_64 rng(7);
  std::string buf(4 * 3 * 8192 + 64, '\0');
  for (char& c : buf) c = static_cast<char>(rng());
  for (size_t block : {size_t{256}, size_t{8192}}) {
    for (size_t rounds = 1; rounds <= 4; ++rounds) {
      for (size_t delta = 0; delta < 24; ++delta) {
        size_t size = rounds * 3 * block + delta - 12;
        for (size_t offset : {0, 1, 7}) {
          uint32_t init = static_cast<uint32_t>(rng());
          ASSERT_EQ(rocksdb::crc32c::Extend(init, buf.data() + offset, size),
                    library(init, buf.data() + offset, size))
              << "size " << size << " offset " << offset;
        }
      }
    }
  }
}

}  // namespace
}  // namespace peregrine::queue
