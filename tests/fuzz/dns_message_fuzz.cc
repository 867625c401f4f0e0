// libFuzzer target: arbitrary bytes as a DNS response (untrusted network
// input) into dns::ParseResponse.
#include <cstddef>
#include <cstdint>

#include "dns/message.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto r = peregrine::dns::ParseResponse(
      absl::string_view(reinterpret_cast<const char*>(data), size));
  if (r.ok()) {
    for (const auto& rec : r->answers) {
      if (rec.name.size() > 255) __builtin_trap();
      // TLSA data is what the record holds past its three fixed bytes.
      if (rec.type == peregrine::dns::kTlsa && rec.tlsa_data.size() > size) {
        __builtin_trap();
      }
    }
  }
  return 0;
}
