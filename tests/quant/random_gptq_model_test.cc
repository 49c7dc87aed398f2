// tessera-make-random-model --gptq-bits: the random GPTQ checkpoint it writes (AutoGPTQ v1
// layout, quantize_config.json) loads and generates on the CPU, and a group size that does
// not divide the model's dimensions is refused with a clear message.
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/testing/paths.h"
#include "tests/testing/subprocess.h"

namespace tessera {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using testing::RunCommand;

std::string MakeRandomModel() { return std::string(TESSERA_BINARY_DIR) + "/bin/tessera-make-random-model"; }

class RandomGptqModelTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = (fs::temp_directory_path() / ("tessera_random_gptq_" + std::to_string(::getpid()))).string();
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string dir_;
};

TEST_F(RandomGptqModelTest, TinyInt4CheckpointLoadsAndGeneratesOnCpu) {
  auto made = RunCommand(MakeRandomModel() + " --shape tiny-test --layers 2 --gptq-bits 4 --group-size 16 --tokenizer " +
                         testing::Llama2TokenizerPath() + " --out " + dir_ + " 2>&1");
  ASSERT_EQ(made.exit_code, 0) << made.out;
  std::ifstream qc(dir_ + "/quantize_config.json");
  const nlohmann::json config = nlohmann::json::parse(qc);
  EXPECT_EQ(config["bits"], 4);
  EXPECT_EQ(config["group_size"], 16);
  EXPECT_EQ(config["checkpoint_format"], "gptq");

  auto r = RunCommand(testing::TesseraBinary() + " generate --device cpu --model " + dir_ +
                      " --prompt 'Once upon a time' --max-tokens 6 --temperature 0 --json 2>&1");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  const nlohmann::json out = nlohmann::json::parse(r.out.substr(r.out.find('{')));
  ASSERT_TRUE(out.contains("ids")) << r.out;
  // Six tokens, unless the random weights happened to pick the end-of-sequence token.
  if (out["finish_reason"] == "length") EXPECT_EQ(out["ids"].size(), 6u) << r.out;
  EXPECT_GE(out["ids"].size(), 1u) << r.out;
}

TEST_F(RandomGptqModelTest, GroupSizeThatDoesNotDivideTheModelIsRefused) {
  auto r = RunCommand(MakeRandomModel() + " --shape tiny-test --gptq-bits 4 --group-size 128 --out " + dir_ + " 2>&1");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.out, HasSubstr("--group-size 128 must divide"));
  EXPECT_FALSE(fs::exists(dir_ + "/model.safetensors"));
}

}  // namespace
}  // namespace tessera
