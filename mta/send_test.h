// `peregrine send-test`: a test message sent the way an application sends
// it, then followed through the running daemon to its outcome, each step
// in plain words with what to do when one fails (cli_commands.h has the
// arguments). The advice comes from Advice(), which `peregrine queue
// show` uses too.
#pragma once

#include <string>

#include "absl/strings/string_view.h"

namespace peregrine {

// What an operator can do about a reply (a remote server's, or
// Peregrine's own for a connection that failed); "" when there is nothing
// to add.
std::string Advice(absl::string_view reply);

}  // namespace peregrine
