// `tessera generate` as users run it: JSON output against the golden vectors, plain
// streaming output, and exit codes for bad input.
#include <fstream>

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
