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
__attribute__((target("sse4.2"))) uint32_t HardwareExtend(uint32_t crc,
                                                          const char* buf,
                                                          size_t size) {
  const auto* p = reinterpret_cast<const uint8_t*>(buf);
  const uint8_t* end = p + size;
  uint64_t l = crc ^ 0xffffffffu;
  while (p != end && (reinterpret_cast<uintptr_t>(p) & 7) != 0) {
    l = _mm_crc32_u8(static_cast<uint32_t>(l), *p++);
  }
  while (end - p >= 8) {
    uint64_t word;
    memcpy(&word, p, 8);
    l = _mm_crc32_u64(l, word);
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
