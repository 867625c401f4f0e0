// Advice: what an operator can do about a reply that kept mail from going
// (a remote server's, or Peregrine's own for a connection that failed).
// Said by `peregrine send-test`, `peregrine queue show` and the status
// page's troubled sites.
#pragma once

#include <string>

#include "absl/strings/string_view.h"

namespace peregrine {

// "" when there is nothing to add.
std::string Advice(absl::string_view reply);

}  // namespace peregrine
