// The admin API's queue-action selection (mta/queue_actions.h) on any
// JSON-ish bytes: never crashes; an accepted selection names something
// (or is "all"), and its text form is never empty.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "mta/queue_actions.h"
#include "nlohmann/json.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string in(reinterpret_cast<const char*>(data), size);
  nlohmann::json j = nlohmann::json::parse(in, nullptr, false);
  if (j.is_discarded()) return 0;
  auto s = peregrine::QueueSelection::FromJson(j);
  if (!s.ok()) return 0;
  bool named = !s->site.empty() || !s->domain.empty() || !s->campaign.empty() ||
               !s->tenant.empty() || s->id != 0;
  if (named == s->all) abort();
  if (s->ToString().empty()) abort();
  return 0;
}
