// `tessera generate` as users run it: JSON output against the golden vectors, plain
// streaming output, and exit codes for bad input.
#include <fstream>
#include <sstream>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/testing/paths.h"
#include "tests/testing/subprocess.h"

namespace tessera {
namespace {

using ::testing::HasSubstr;
using testing::RunCommand;

std::string Tessera() { return testing::TesseraBinary(); }

TEST(GenerateCliTest, JsonOutputAgreesWithExpectedGreedy) {
  std::ifstream in(testing::DefaultModelDir() + "/expected_greedy.json");
  nlohmann::json golden = nlohmann::json::parse(in);
  for (const auto& c : golden["cases"]) {
    const std::string prompt = c["prompt"];
    const int max_tokens = c["steps"].get<int>() - static_cast<int>(c["prompt_ids"].size()) + 1;
    auto r = RunCommand(Tessera() + " generate --prompt '" + prompt + "' --temperature 0 --max-tokens " +
                        std::to_string(max_tokens) + " --json 2>/dev/null");
    ASSERT_EQ(r.exit_code, 0) << r.out;
    nlohmann::json j = nlohmann::json::parse(r.out);
    EXPECT_EQ(j["prompt_ids"], c["prompt_ids"]);
    EXPECT_EQ(j["ids"], c["generated_ids"]);
    EXPECT_EQ(j["finish_reason"], "length");
    EXPECT_EQ(prompt + j["text"].get<std::string>(), c["text"].get<std::string>());
  }
}

TEST(GenerateCliTest, PlainModePrintsTheTextAndSameSeedRepeats) {
  auto a = RunCommand(Tessera() + " generate --prompt 'Zoo' --max-tokens 20 --seed 5 --top-p 0.9 2>/dev/null");
  auto b = RunCommand(Tessera() + " generate --prompt 'Zoo' --max-tokens 20 --seed 5 --top-p 0.9 2>/dev/null");
  ASSERT_EQ(a.exit_code, 0);
  EXPECT_GT(a.out.size(), 10u);
  EXPECT_EQ(a.out, b.out);
}

TEST(GenerateCliTest, PromptsFileRunsAllPromptsInInputOrder) {
  const std::string path = ::testing::TempDir() + "/prompts.jsonl";
  {
    std::ofstream f(path);
    f << R"({"prompt": "Once upon a time", "max_tokens": 30, "temperature": 0})" << "\n";
    f << R"({"prompt": "Zoo", "max_tokens": 5, "temperature": 0})" << "\n\n";
    f << R"({"prompt": "Zoo", "max_tokens": 12, "temperature": 0.8, "seed": 3})" << "\n";
  }
  auto r = RunCommand(Tessera() + " generate --prompts-file " + path + " --kv-blocks 8 --max-num-seqs 4 2>/dev/null");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  std::vector<nlohmann::json> lines;
  std::istringstream in(r.out);
  for (std::string line; std::getline(in, line);) lines.push_back(nlohmann::json::parse(line));
  ASSERT_EQ(lines.size(), 3u);
  EXPECT_EQ(lines[0]["ids"].size(), 30u);
  EXPECT_EQ(lines[1]["ids"].size(), 5u);
  EXPECT_EQ(lines[2]["ids"].size(), 12u);
  // Each equals the same prompt run on its own.
  auto alone = RunCommand(Tessera() + " generate --prompt Zoo --max-tokens 5 --temperature 0 --json 2>/dev/null");
  EXPECT_EQ(nlohmann::json::parse(alone.out)["ids"], lines[1]["ids"]);
  auto seeded = RunCommand(Tessera() + " generate --prompt Zoo --max-tokens 12 --temperature 0.8 --seed 3 --json 2>/dev/null");
  EXPECT_EQ(nlohmann::json::parse(seeded.out)["ids"], lines[2]["ids"]);
}

TEST(GenerateCliTest, PromptsFileWithABadLineNamesTheLine) {
  const std::string path = ::testing::TempDir() + "/bad.jsonl";
  std::ofstream(path) << "{\"prompt\": \"a\"}\n{oops\n";
  auto r = RunCommand(Tessera() + " generate --prompts-file " + path + " 2>&1");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.out, HasSubstr("bad.jsonl:2"));
}

TEST(GenerateCliTest, UsageErrorsExitTwoWithOneClearLine) {
  auto r = RunCommand(Tessera() + " generate --prompt x --bogus 1 2>&1");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.out, HasSubstr("unknown flag --bogus"));
  r = RunCommand(Tessera() + " generate --prompt x --max-tokens lots 2>&1");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.out, HasSubstr("--max-tokens expects an integer"));
  r = RunCommand(Tessera() + " generate --prompt x --temperature -3 2>&1");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_EQ(RunCommand(Tessera() + " frobnicate 2>&1").exit_code, 2);
}

TEST(GenerateCliTest, BadModelDirectoryExitsOneNamingTheProblem) {
  auto r = RunCommand(Tessera() + " generate --model /nonexistent --prompt x 2>&1");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.out, HasSubstr("/nonexistent"));
  r = RunCommand(Tessera() + " generate --model " + testing::RepoPath("tests/data") + " --prompt x 2>&1");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.out, HasSubstr("config.json"));
}

}  // namespace
}  // namespace tessera
