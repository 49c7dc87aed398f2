// The `tessera-client` command line: subcommands over TesseraClient, output to stdout,
// one-line errors to stderr. Exit status 0 on success, 1 when a call fails, 2 for usage.
#pragma once

#include <string>
#include <vector>

namespace tessera::client {

// `argv` excludes the program name.
int RunClientCli(const std::vector<std::string>& argv);

}  // namespace tessera::client
