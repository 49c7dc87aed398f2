// The default model reproduces llama2.c's greedy test vectors token for token.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <optional>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "runtime/generation/single_sequence.h"
#include "runtime/model/llama_model.h"
#include "runtime/tokenizer/tokenizer.h"
#include "tests/testing/paths.h"
#include "tests/testing/teacher_forced.h"

namespace tessera {
namespace {

struct GoldenCase {
  std::string prompt;
  int steps;
  std::vector<int32_t> prompt_ids;
  std::vector<int32_t> generated_ids;
  std::string text;
};

std::vector<GoldenCase> LoadCases() {
  std::ifstream in(testing::DefaultModelDir() + "/expected_greedy.json");
  nlohmann::json j = nlohmann::json::parse(in);
  std::vector<GoldenCase> cases;
  for (const auto& c : j["cases"]) {
    cases.push_back({c["prompt"], c["steps"], c["prompt_ids"].get<std::vector<int32_t>>(),
                     c["generated_ids"].get<std::vector<int32_t>>(), c["text"]});
  }
  return cases;
}

class GoldenGreedyTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto b = CreateBackend("cpu");
    ASSERT_TRUE(b.ok());
    backend_ = std::move(*b);
    auto m = LlamaModel::Load(testing::DefaultModelDir(), backend_.get());
    ASSERT_TRUE(m.ok()) << m.status();
    model_ = std::move(*m);
    auto t = LoadTokenizer(testing::DefaultModelDir());
    ASSERT_TRUE(t.ok()) << t.status();
    tokenizer_ = std::move(*t);
  }
  std::unique_ptr<Backend> backend_;
  std::unique_ptr<LlamaModel> model_;
  std::unique_ptr<Tokenizer> tokenizer_;
};

TEST_F(GoldenGreedyTest, ReproducesEveryExpectedGreedyCase) {
  const auto cases = LoadCases();
  ASSERT_EQ(cases.size(), 4u);
  for (const GoldenCase& c : cases) {
    SCOPED_TRACE("prompt '" + c.prompt + "' steps " + std::to_string(c.steps));
    std::vector<int32_t> prompt_ids = tokenizer_->Encode(c.prompt, tokenizer_->add_bos());
    EXPECT_EQ(prompt_ids, c.prompt_ids);
    // llama2.c: 'steps' counts positions including the prompt; the last prompt position
    // produces the first new token, so steps - len(prompt) + 1 tokens come out. It stops
    // early on BOS.
    SingleSequenceOptions opts;
    opts.sampling.temperature = 0.0f;
    opts.max_tokens = c.steps - static_cast<int>(prompt_ids.size()) + 1;
    opts.stop_token_ids = {1};
    auto r = GenerateSingleSequence(*model_, tokenizer_.get(), prompt_ids, opts);
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->ids, c.generated_ids);
    std::vector<int32_t> all(prompt_ids.begin() + 1, prompt_ids.end());
    all.insert(all.end(), r->ids.begin(), r->ids.end());
    EXPECT_EQ(tokenizer_->Decode(all), c.text);
  }
}

TEST_F(GoldenGreedyTest, StreamedDeltasConcatenateToTheFullText) {
  SingleSequenceOptions opts;
  opts.sampling.temperature = 0.0f;
  opts.max_tokens = 80;
  std::vector<int32_t> prompt = tokenizer_->Encode("Once upon a time", true);
  std::string streamed;
  auto r = GenerateSingleSequence(*model_, tokenizer_.get(), prompt, opts,
                                  [&](const std::string& d) { streamed += d; });
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(streamed, r->text);
  std::vector<int32_t> all(prompt.begin() + 1, prompt.end());
  all.insert(all.end(), r->ids.begin(), r->ids.end());
  EXPECT_EQ("Once upon a time" + streamed, tokenizer_->Decode(all));
}

TEST_F(GoldenGreedyTest, StopsAtAStopTokenAndIncludesIt) {
  SingleSequenceOptions opts;
  opts.sampling.temperature = 0.0f;
  opts.max_tokens = 50;
  std::vector<int32_t> prompt = {1};
  auto free_run = GenerateSingleSequence(*model_, tokenizer_.get(), prompt, opts);
  ASSERT_TRUE(free_run.ok());
  const int32_t stop = free_run->ids[5];
  opts.stop_token_ids = {stop};
  auto r = GenerateSingleSequence(*model_, tokenizer_.get(), prompt, opts);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->finish_reason, "stop");
  auto first = std::find(free_run->ids.begin(), free_run->ids.end(), stop);
  EXPECT_EQ(r->ids, std::vector<int32_t>(free_run->ids.begin(), first + 1));
  EXPECT_EQ(free_run->finish_reason, "length");
}

// E4M3 keeps three mantissa bits of each K and V element: the logits move by a few percent
// and the top-1 token stays the f32 one at nearly every position.
TEST_F(GoldenGreedyTest, Fp8KvCacheKeepsTeacherForcedLogitsCloseToF32) {
  for (const GoldenCase& c : LoadCases()) {
    const auto ref = testing::TeacherForcedLogits(*model_, c.prompt_ids, c.generated_ids);
    const auto got = testing::TeacherForcedLogits(*model_, c.prompt_ids, c.generated_ids, DType::kF8E4M3);
    ASSERT_EQ(ref.size(), got.size());
    double num = 0, den = 0;
    int same_top1 = 0;
    for (size_t r = 0; r < ref.size(); ++r) {
      for (size_t v = 0; v < ref[r].size(); ++v) {
        num += (got[r][v] - ref[r][v]) * double(got[r][v] - ref[r][v]);
        den += ref[r][v] * double(ref[r][v]);
      }
      same_top1 += std::max_element(got[r].begin(), got[r].end()) - got[r].begin() == c.generated_ids[r];
    }
    const double rel = std::sqrt(num / den), agree = double(same_top1) / ref.size();
    std::printf("prompt '%s': fp8 KV logits relative error %.4f, top-1 agreement %.3f over %zu positions\n",
                c.prompt.c_str(), rel, agree, ref.size());
    EXPECT_GT(rel, 0.0) << "the FP8 cache should not be exact";
    EXPECT_LT(rel, 0.05);
    EXPECT_GT(agree, 0.9);
  }
}

}  // namespace
}  // namespace tessera
