// Differential: the event log's JSON string escaping (json_writer.h) must
// give byte for byte what nlohmann-json's dump gives with the replace
// error handler, on any bytes, and the result must parse back.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "mta/outcome/json_writer.h"
#include "nlohmann/json.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string in(reinterpret_cast<const char*>(data), size);
  std::string ours;
  peregrine::outcome::AppendJsonString(in, &ours);
  std::string theirs = nlohmann::json(in).dump(
      -1, ' ', false, nlohmann::json::error_handler_t::replace);
  if (ours != theirs) abort();
  (void)nlohmann::json::parse(ours);  // Throws (and aborts) if it does not.
  return 0;
}
