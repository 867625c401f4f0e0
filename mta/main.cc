// peregrine: the one binary. See mta/cli.h for its subcommands.
#include <iostream>

#include "mta/cli.h"

int main(int argc, char** argv) {
  return peregrine::RunCli(argc, argv, std::cout, std::cerr);
}
