// The `peregrine` command line (CLI11): parses arguments, runs a subcommand.
//
//   peregrine serve [--config FILE] [--data-dir DIR]
//   peregrine config check FILE
//   peregrine config defaults
//   peregrine dkim keygen --domain D --selector S [--type rsa|ed25519]
//                         [--bits N] [--out FILE] [--force]
//   peregrine dkim sign --key FILE --domain D --selector S < message
//   peregrine --version
//
// Exit codes: 0 success; 1 the daemon failed at run time; 2 bad usage, bad
// configuration, or a setting the machine refuses (port in use, data
// directory not writable). Runs on the main thread.
#pragma once

#include <ostream>

namespace peregrine {

int RunCli(int argc, const char* const* argv, std::ostream& out,
           std::ostream& err);

}  // namespace peregrine
