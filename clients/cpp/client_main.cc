// The tessera-client binary.
#include <string>
#include <vector>

#include "clients/cpp/client_cli.h"

int main(int argc, char** argv) {
  return tessera::client::RunClientCli(std::vector<std::string>(argv + 1, argv + argc));
}
