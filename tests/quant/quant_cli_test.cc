// tessera quantize / perplexity / generate on GPTQ checkpoints of the default model, as
// users run them: GPTQ beats round-to-nearest, checkpoints load end to end, both zero
// conventions agree, and tessera's dequantization matches an independent NumPy unpacking.
#include <unistd.h>

#include <filesystem>
#include <fstream>

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

std::string Tessera() { return testing::TesseraBinary(); }
std::string Dump() { return std::string(TESSERA_BINARY_DIR) + "/bin/tessera-gptq-dump"; }
std::string EvalText() { return testing::RepoPath("data/eval/stories_eval.txt"); }

class QuantCliTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    root_ = new std::string((fs::temp_directory_path() / ("tessera_quant_cli_" + std::to_string(::getpid()))).string());
    fs::create_directories(*root_);
  }
  static void TearDownTestSuite() {
    fs::remove_all(*root_);
    delete root_;
  }

  // Quantizes the default model once per argument string; returns the checkpoint directory.
  static std::string Quantize(const std::string& name, const std::string& args) {
    const std::string dir = *root_ + "/" + name;
    if (fs::exists(dir + "/model.safetensors")) return dir;
    // Small calibration by default; later flags in `args` override it.
    auto r = RunCommand(Tessera() + " quantize --nsamples 4 --seqlen 64 --calib " +
                        testing::RepoPath("data/calib/stories_calib.txt") + " --model " + testing::DefaultModelDir() +
                        " --out " + dir + " " + args + " 2>&1");
    EXPECT_EQ(r.exit_code, 0) << r.out;
    return dir;
  }

  static double Perplexity(const std::string& model_dir) {
    auto r = RunCommand(Tessera() + " perplexity --device cpu --ctx 256 --stride 256 --model " + model_dir +
                        " --text " + EvalText() + " 2>/dev/null");
    EXPECT_EQ(r.exit_code, 0) << r.out;
    const auto pos = r.out.rfind("perplexity ");
    EXPECT_NE(pos, std::string::npos) << r.out;
    return pos == std::string::npos ? 0.0 : std::stod(r.out.substr(pos + 11));
  }

  static std::string* root_;
};
std::string* QuantCliTest::root_ = nullptr;

TEST_F(QuantCliTest, GptqPerplexityBeatsRoundToNearestAtFourAndThreeBits) {
  const double fp32 = Perplexity(testing::DefaultModelDir());
  for (int bits : {4, 3}) {
    const std::string flags = " --bits " + std::to_string(bits) + " --group-size 4 --nsamples 16 --seqlen 128";
    const double gptq = Perplexity(Quantize("gptq" + std::to_string(bits), "gptq" + flags));
    const double rtn = Perplexity(Quantize("rtn" + std::to_string(bits), "rtn" + flags));
    EXPECT_LT(fp32, gptq) << bits << " bits";
    EXPECT_LT(gptq, rtn) << bits << " bits: gptq " << gptq << " rtn " << rtn;
  }
}

TEST_F(QuantCliTest, PerplexityPrintsItAsTheLastLine) {
  auto r = RunCommand(Tessera() + " perplexity --device cpu --ctx 64 --text " + EvalText() + " 2>/dev/null");
  ASSERT_EQ(r.exit_code, 0);
  std::string last = r.out.substr(0, r.out.size() - 1);
  last = last.substr(last.rfind('\n') + 1);
  EXPECT_THAT(last, ::testing::MatchesRegex("perplexity [0-9]+\\.[0-9]+"));
}

TEST_F(QuantCliTest, GenerateRunsOnAnActOrderCheckpoint) {
  const std::string dir = Quantize("gptq4_actorder", "gptq --bits 4 --group-size 4 --act-order --asym");
  std::ifstream qc(dir + "/quantize_config.json");
  const nlohmann::json j = nlohmann::json::parse(qc);
  EXPECT_EQ(j["desc_act"], true);
  EXPECT_EQ(j["sym"], false);
  EXPECT_EQ(j["checkpoint_format"], "gptq");
  std::ifstream cc(dir + "/config.json");
  EXPECT_EQ(nlohmann::json::parse(cc)["quantization_config"]["quant_method"], "gptq");
  auto r = RunCommand(Tessera() + " generate --device cpu --model " + dir +
                      " --prompt 'Once upon a time' --temperature 0 --max-tokens 24 --json 2>&1");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  const nlohmann::json out = nlohmann::json::parse(r.out);
  EXPECT_EQ(out["ids"].size(), 24u);
  EXPECT_GT(out["text"].get<std::string>().size(), 20u);
}

TEST_F(QuantCliTest, VersionTwoZerosGiveTheSameModelAsVersionOne) {
  const std::string flags = "gptq --bits 3 --group-size 4 --asym";
  const std::string v1 = Quantize("gptq3_v1", flags);
  const std::string v2 = Quantize("gptq3_v2", flags + " --format gptq_v2");
  std::ifstream qc(v2 + "/quantize_config.json");
  EXPECT_EQ(nlohmann::json::parse(qc)["checkpoint_format"], "gptq_v2");
  EXPECT_EQ(Perplexity(v1), Perplexity(v2));
}

TEST_F(QuantCliTest, IndependentNumpyUnpackingMatchesTesseraBitForBit) {
  if (RunCommand("/usr/bin/python3 -c 'import numpy' 2>/dev/null").exit_code != 0) GTEST_SKIP() << "no NumPy";
  for (const auto& [name, flags] : {std::pair<std::string, std::string>{"gptq3_actorder", "gptq --bits 3 --group-size 4 --act-order"},
                                    {"gptq2_v2", "gptq --bits 2 --group-size -1 --asym --format gptq_v2"}}) {
    const std::string dir = Quantize(name, flags);
    auto d = RunCommand(Dump() + " --model " + dir + " --out " + dir + "/dense.safetensors 2>&1");
    ASSERT_EQ(d.exit_code, 0) << d.out;
    auto r = RunCommand("/usr/bin/python3 " + testing::RepoPath("bench/device/gptq_interop_check.py") + " --model " +
                        dir + " --dump " + dir + "/dense.safetensors 2>&1");
    EXPECT_EQ(r.exit_code, 0) << r.out;
    EXPECT_THAT(r.out, HasSubstr("interop OK: 35 linears bit-identical"));
  }
}

TEST_F(QuantCliTest, BadArgumentsAreClearErrors) {
  auto r = RunCommand(Tessera() + " quantize gptq --model " + testing::DefaultModelDir() + " --out " + *root_ +
                      "/x --bits 5 2>&1");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.out, HasSubstr("--bits 5 is not supported"));
  r = RunCommand(Tessera() + " quantize rtn --model " + testing::DefaultModelDir() + " --out " + *root_ +
                 "/x --group-size 128 2>&1");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.out, HasSubstr("--group-size 128 does not divide in_features 64"));
  r = RunCommand(Tessera() + " quantize gptq --method rtn --model a --out b 2>&1");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.out, HasSubstr("conflicts with --method"));
  r = RunCommand(Tessera() + " perplexity --text " + EvalText() + " --ctx 64 --stride 65 2>&1");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.out, HasSubstr("--stride must not exceed --ctx"));
}

TEST_F(QuantCliTest, CorruptCheckpointFailsToLoadWithOneClearLine) {
  const std::string dir = Quantize("gptq4", "gptq --bits 4 --group-size 4");
  const std::string bad = *root_ + "/gptq4_bad";
  fs::create_directories(bad);
  for (const auto& e : fs::directory_iterator(dir)) fs::copy_file(e.path(), bad + "/" + e.path().filename().string(),
                                                                  fs::copy_options::overwrite_existing);
  std::ofstream(bad + "/quantize_config.json") << R"({"bits": 4, "group_size": 8, "desc_act": false, "sym": true})";
  auto r = RunCommand(Tessera() + " generate --device cpu --model " + bad + " --prompt hi --max-tokens 2 2>&1");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.out, HasSubstr("q_proj.qzeros' has shape [16, 8], expected [8, 8]"));
}

}  // namespace
}  // namespace tessera
