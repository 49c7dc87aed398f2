// Shared by the client tests: the golden greedy cases, running tessera-client as a
// subprocess, and shell quoting for its arguments.
#pragma once

#include <fstream>
#include <string>
#include <vector>

#include "nlohmann/json.hpp"
#include "tests/testing/paths.h"
#include "tests/testing/subprocess.h"

namespace tessera::testing {

struct GoldenCase {
  std::string prompt;
  std::vector<int32_t> prompt_ids;
  std::vector<int32_t> ids;
  std::string continuation;  // the golden text without the prompt
};

inline std::vector<GoldenCase> LoadGoldenCases() {
  std::ifstream in(DefaultModelDir() + "/expected_greedy.json");
  nlohmann::json j = nlohmann::json::parse(in);
  std::vector<GoldenCase> out;
  for (const auto& c : j["cases"]) {
    const std::string prompt = c["prompt"];
    const std::string text = c["text"];
    out.push_back({prompt, c["prompt_ids"].get<std::vector<int32_t>>(), c["generated_ids"].get<std::vector<int32_t>>(),
                   text.substr(prompt.size())});
  }
  return out;
}

inline std::string ShellQuote(const std::string& s) {
  std::string out = "'";
  for (char c : s) {
    if (c == '\'') {
      out += "'\\''";
    } else {
      out += c;
    }
  }
  return out + "'";
}

inline std::string ClientBinary() { return std::string(TESSERA_BINARY_DIR) + "/bin/tessera-client"; }

// Runs tessera-client with `args`; stderr is merged into `out` when `with_stderr`.
inline CommandResult RunClient(const std::vector<std::string>& args, bool with_stderr = false) {
  std::string cmd = ShellQuote(ClientBinary());
  for (const std::string& a : args) cmd += " " + ShellQuote(a);
  cmd += with_stderr ? " 2>&1" : " 2>/dev/null";
  return RunCommand(cmd);
}

}  // namespace tessera::testing
