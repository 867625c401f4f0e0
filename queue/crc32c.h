// CRC32C for RocksDB in hardware (see crc32c.cc): linking //queue:crc32c
// into a binary replaces librocksdb's table-driven rocksdb::crc32c::Extend.
#pragma once

#include <stddef.h>
#include <stdint.h>

namespace rocksdb::crc32c {
// RocksDB's declaration (util/crc32c.h, not an installed header).
uint32_t Extend(uint32_t crc, const char* buf, size_t size);
}  // namespace rocksdb::crc32c

namespace peregrine::queue {

// Whether rocksdb::crc32c::Extend runs the SSE4.2 instruction here.
bool Crc32cInHardware();
// Whether the dynamic linker binds the symbol to this definition, that is,
// whether librocksdb's own calls come here.
bool Crc32cInterposed();
// librocksdb's own Extend, for tests; null if it cannot be found.
uint32_t (*LibraryCrc32cExtend())(uint32_t, const char*, size_t);

}  // namespace peregrine::queue
