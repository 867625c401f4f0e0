// Hardware CRC32C for RocksDB's checksums.
//
// Debian builds librocksdb for the baseline x86-64, so its
// rocksdb::crc32c::Extend takes a table-driven path: in perf of the durable
// SMTP benchmark it was the hottest user-space code, run over every body at
// least twice (WAL record, blob record). librocksdb calls Extend through its
// PLT, so a definition in the executable wins the dynamic link (as malloc
// replacements do) and every WAL, blob and table checksum comes here.
//
// The function is the same CRC (Castagnoli, reflected, RocksDB's unmasked
// "extend" convention): files written by either one read back with the
// other. On a CPU without SSE4.2 it calls the library's own. crc32c_test
// checks both claims against the library on random input.
#include "queue/crc32c.h"

#include <dlfcn.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#if defined(__x86_64__)
#include <nmmintrin.h>
#endif

namespace peregrine::queue {
namespace {

using ExtendFn = uint32_t (*)(uint32_t, const char*, size_t);

constexpr char kExtendSymbol[] = "_ZN7rocksdb6crc32c6ExtendEjPKcm";

#if defined(__x86_64__)
// One chain of crc32 instructions waits out each one's latency (3 cycles
// for 8 bytes); three independent chains over three blocks keep the unit
// busy, about 3x faster on a 10 KiB body. The chains' results are joined
// with the operator "feed n zero bytes", which is linear over GF(2) on the
// CRC register: crc(s, A B) = zeros_|B|(crc(s, A)) ^ crc(0, B).
constexpr size_t kLongBlock = 8192;  // Bytes per chain and round.
constexpr size_t kShortBlock = 256;

uint64_t Load64(const uint8_t* p) {
  uint64_t word;
  memcpy(&word, p, 8);
  return word;
}

// zeros_n by table: the register's four bytes, each looked up.
struct ZeroOperator {
  uint32_t table[4][256];
  uint32_t operator()(uint32_t x) const {
    return table[0][x & 0xff] ^ table[1][(x >> 8) & 0xff] ^
           table[2][(x >> 16) & 0xff] ^ table[3][x >> 24];
  }
};

__attribute__((target("sse4.2"))) ZeroOperator MakeZeroOperator(size_t n) {
  uint32_t basis[32];  // zeros_n of each single bit.
  for (int bit = 0; bit < 32; ++bit) {
    uint64_t l = uint32_t{1} << bit;
    for (size_t i = 0; i < n; i += 8) l = _mm_crc32_u64(l, 0);
    basis[bit] = static_cast<uint32_t>(l);
  }
  ZeroOperator op;
  for (int k = 0; k < 4; ++k) {
    for (int b = 0; b < 256; ++b) {
      uint32_t v = 0;
      for (int bit = 0; bit < 8; ++bit) {
        if (b & (1 << bit)) v ^= basis[8 * k + bit];
      }
      op.table[k][b] = v;
    }
  }
  return op;
}

// Rounds of three chains over blocks of `kBlock` while the input lasts.
template <size_t kBlock>
__attribute__((target("sse4.2"))) uint64_t ThreeChains(
    uint64_t l, const uint8_t*& p, const uint8_t* end,
    const ZeroOperator& zeros) {
  while (static_cast<size_t>(end - p) >= 3 * kBlock) {
    uint64_t a = l, b = 0, c = 0;
    for (size_t i = 0; i < kBlock; i += 8) {
      a = _mm_crc32_u64(a, Load64(p + i));
      b = _mm_crc32_u64(b, Load64(p + kBlock + i));
      c = _mm_crc32_u64(c, Load64(p + 2 * kBlock + i));
    }
    l = zeros(zeros(static_cast<uint32_t>(a)) ^ static_cast<uint32_t>(b)) ^
        static_cast<uint32_t>(c);
    p += 3 * kBlock;
  }
  return l;
}

__attribute__((target("sse4.2"))) uint32_t HardwareExtend(uint32_t crc,
                                                          const char* buf,
                                                          size_t size) {
  static const ZeroOperator long_zeros = MakeZeroOperator(kLongBlock);
  static const ZeroOperator short_zeros = MakeZeroOperator(kShortBlock);
  const auto* p = reinterpret_cast<const uint8_t*>(buf);
  const uint8_t* end = p + size;
  uint64_t l = crc ^ 0xffffffffu;
  while (p != end && (reinterpret_cast<uintptr_t>(p) & 7) != 0) {
    l = _mm_crc32_u8(static_cast<uint32_t>(l), *p++);
  }
  l = ThreeChains<kLongBlock>(l, p, end, long_zeros);
  l = ThreeChains<kShortBlock>(l, p, end, short_zeros);
  while (end - p >= 8) {
    l = _mm_crc32_u64(l, Load64(p));
    p += 8;
  }
  while (p != end) l = _mm_crc32_u8(static_cast<uint32_t>(l), *p++);
  return static_cast<uint32_t>(l) ^ 0xffffffffu;
}
#endif

ExtendFn LibraryExtendOrNull() {
  static const ExtendFn fn =
      reinterpret_cast<ExtendFn>(dlsym(RTLD_NEXT, kExtendSymbol));
  return fn;
}

ExtendFn Choose() {
#if defined(__x86_64__)
  if (__builtin_cpu_supports("sse4.2")) return HardwareExtend;
#endif
  return LibraryExtendOrNull();
}

// Chosen once, on first use (RocksDB may checksum from another library's
// static constructor, before ours would have run).
ExtendFn Chosen() {
  static const ExtendFn fn = Choose();
  return fn;
}

}  // namespace

uint32_t (*LibraryCrc32cExtend())(uint32_t, const char*, size_t) {
  return LibraryExtendOrNull();
}

bool Crc32cInHardware() {
#if defined(__x86_64__)
  return Chosen() == HardwareExtend;
#else
  return false;
#endif
}

bool Crc32cInterposed() {
  return dlsym(RTLD_DEFAULT, kExtendSymbol) ==
         reinterpret_cast<void*>(&rocksdb::crc32c::Extend);
}

}  // namespace peregrine::queue

namespace rocksdb::crc32c {

uint32_t Extend(uint32_t crc, const char* buf, size_t size) {
  return peregrine::queue::Chosen()(crc, buf, size);
}

}  // namespace rocksdb::crc32c
