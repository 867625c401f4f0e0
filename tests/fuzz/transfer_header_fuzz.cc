// The X-Peregrine-Transfer field (mta/transfer_header.h) in any message a
// client sends: never crashes; afterwards no such field is left in the
// header, the body is as it was, and what was read writes back to a field
// that reads the same.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "mta/transfer_header.h"

namespace {

// Where the header ends: after the first empty line (or at the end).
size_t HeaderEnd(const std::string& m) {
  size_t pos = 0;
  while (pos < m.size()) {
    size_t end = m.find('\n', pos);
    end = end == std::string::npos ? m.size() : end + 1;
    if (m.compare(pos, end - pos, "\r\n") == 0 ||
        m.compare(pos, end - pos, "\n") == 0) {
      return pos;
    }
    pos = end;
  }
  return m.size();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string message(reinterpret_cast<const char*>(data), size);
  std::string body = message.substr(HeaderEnd(message));
  auto info = peregrine::TakeTransferHeader(&message);
  if (message.substr(HeaderEnd(message)) != body) abort();
  std::string header =
      absl::AsciiStrToLower(message.substr(0, HeaderEnd(message)));
  if (absl::StartsWith(header, "x-peregrine-transfer:") ||
      absl::StrContains(header, "\nx-peregrine-transfer:")) {
    abort();
  }
  if (info.has_value()) {
    std::string again = peregrine::TransferHeader(*info) + "\r\n";
    auto back = peregrine::TakeTransferHeader(&again);
    if (!back.has_value() || back->attempts != info->attempts ||
        back->tenant != info->tenant || back->campaign != info->campaign ||
        back->node != info->node || back->received != info->received) {
      abort();
    }
  }
  return 0;
}
