// tessera subcommands. Each returns the process exit status: 0 success, 1 a runtime
// error (bad file, failed load), 2 a usage error; errors go to stderr as one clear line.
#pragma once

#include <string>
#include <vector>

namespace tessera::cli {

int RunGenerate(const std::vector<std::string>& argv);
int RunServe(const std::vector<std::string>& argv);
int RunQuantize(const std::vector<std::string>& argv);
int RunPerplexity(const std::vector<std::string>& argv);

// The model shipped in the repository, used when --model is not given.
std::string DefaultModelDir();

}  // namespace tessera::cli
