// Paths of the shipped test assets.
#pragma once

#include <string>

namespace tessera::testing {

inline std::string RepoPath(const std::string& rel) { return std::string(TESSERA_SOURCE_DIR) + "/" + rel; }
inline std::string DefaultModelDir() { return RepoPath("models/stories260k"); }
inline std::string Llama2TokenizerPath() { return RepoPath("tests/data/llama2-tokenizer/tokenizer.model"); }
// The tessera binary built alongside the tests.
inline std::string TesseraBinary() { return std::string(TESSERA_BINARY_DIR) + "/bin/tessera"; }

}  // namespace tessera::testing
