// Sampler: greedy, seeds, truncation (top-k/top-p/min-p), penalties and logprobs.
#include "runtime/sampling/sampler.h"

#include <cmath>
#include <map>
#include <set>

#include "gtest/gtest.h"

namespace tessera {
namespace {

std::vector<float> Logits() { return {1.0f, 3.0f, 2.5f, -1.0f, 0.5f, 3.0f}; }

TEST(SamplerTest, GreedyPicksTheFirstLargestLogit) {
  SamplingParams p;
  p.temperature = 0;
  SequenceSampler s(p, {});
  auto l = Logits();
  EXPECT_EQ(s.Sample(l.data(), 6).token, 1);
}

TEST(SamplerTest, SameSeedSameTokensDifferentSeedDifferentTokens) {
  std::vector<float> flat(50, 0.0f);
  auto run = [&](uint64_t seed) {
    SamplingParams p;
    p.seed = seed;
    SequenceSampler s(p, {});
    std::vector<int32_t> out;
    for (int i = 0; i < 40; ++i) out.push_back(s.Sample(flat.data(), 50).token);
    return out;
  };
  EXPECT_EQ(run(7), run(7));
  EXPECT_NE(run(7), run(8));
}

TEST(SamplerTest, TopKOfOneAndTinyTopPAreGreedy) {
  auto l = Logits();
  for (int seed = 0; seed < 20; ++seed) {
    SamplingParams k1;
    k1.top_k = 1;
    k1.seed = seed;
    EXPECT_EQ(SequenceSampler(k1, {}).Sample(l.data(), 6).token, 1);
    SamplingParams p0;
    p0.top_p = 1e-6f;
    p0.seed = seed;
    EXPECT_EQ(SequenceSampler(p0, {}).Sample(l.data(), 6).token, 1);
  }
}

TEST(SamplerTest, TopKRestrictsToTheKLargest) {
  auto l = Logits();
  std::set<int32_t> seen;
  for (int seed = 0; seed < 300; ++seed) {
    SamplingParams p;
    p.top_k = 3;
    p.seed = seed;
    seen.insert(SequenceSampler(p, {}).Sample(l.data(), 6).token);
  }
  EXPECT_EQ(seen, (std::set<int32_t>{1, 2, 5}));
}

TEST(SamplerTest, MinPDropsUnlikelyTokens) {
  // probs ∝ e^l: tokens 1 and 5 have p_max; token 2 has e^-0.5 ≈ 0.61 of it; others < 0.23.
  auto l = Logits();
  std::set<int32_t> seen;
  for (int seed = 0; seed < 300; ++seed) {
    SamplingParams p;
    p.min_p = 0.5f;
    p.seed = seed;
    seen.insert(SequenceSampler(p, {}).Sample(l.data(), 6).token);
  }
  EXPECT_EQ(seen, (std::set<int32_t>{1, 2, 5}));
}

TEST(SamplerTest, SampledFrequenciesFollowTheSoftmax) {
  std::vector<float> l = {0.0f, std::log(3.0f)};  // p = 0.25, 0.75
  SamplingParams p;
  p.seed = 1;
  SequenceSampler s(p, {});
  int ones = 0;
  const int n = 20000;
  for (int i = 0; i < n; ++i) ones += s.Sample(l.data(), 2).token == 1;
  EXPECT_NEAR(static_cast<double>(ones) / n, 0.75, 0.015);
}

TEST(SamplerTest, RepetitionPenaltyDemotesSeenTokens) {
  SamplingParams p;
  p.temperature = 0;
  p.repetition_penalty = 2.0f;
  // Tokens 1 and 5 (logit 3) are in the prompt: 3/2 = 1.5 < 2.5, so token 2 wins.
  SequenceSampler s(p, {1, 5});
  auto l = Logits();
  EXPECT_EQ(s.Sample(l.data(), 6).token, 2);
}

TEST(SamplerTest, FrequencyAndPresencePenaltiesCountOutputTokens) {
  SamplingParams p;
  p.temperature = 0;
  p.frequency_penalty = 0.3f;
  SequenceSampler s(p, {});
  std::vector<float> l = {1.0f, 1.5f};
  EXPECT_EQ(s.Sample(l.data(), 2).token, 1);  // 1.5 > 1.0
  EXPECT_EQ(s.Sample(l.data(), 2).token, 1);  // 1.2 > 1.0
  EXPECT_EQ(s.Sample(l.data(), 2).token, 0);  // 0.9 < 1.0
  SamplingParams q;
  q.temperature = 0;
  q.presence_penalty = 0.6f;
  SequenceSampler t(q, {});
  EXPECT_EQ(t.Sample(l.data(), 2).token, 1);
  EXPECT_EQ(t.Sample(l.data(), 2).token, 0);  // 0.9 < 1.0
}

TEST(SamplerTest, LogprobsAreTheModelsLogSoftmax) {
  SamplingParams p;
  p.temperature = 0;
  p.logprobs = 3;
  SequenceSampler s(p, {});
  auto l = Logits();
  SampleResult r = s.Sample(l.data(), 6);
  double z = 0;
  for (float v : l) z += std::exp(v);
  EXPECT_NEAR(r.logprob, 3.0 - std::log(z), 1e-5);
  ASSERT_EQ(r.top.size(), 3u);
  EXPECT_EQ(r.top[0].id, 1);
  EXPECT_EQ(r.top[1].id, 5);
  EXPECT_EQ(r.top[2].id, 2);
  EXPECT_NEAR(r.top[2].logprob, 2.5 - std::log(z), 1e-5);
}

TEST(SamplerTest, ValidateRejectsOutOfRangeParameters) {
  SamplingParams p;
  EXPECT_TRUE(p.Validate().ok());
  p.temperature = -1;
  EXPECT_FALSE(p.Validate().ok());
  p = SamplingParams();
  p.top_p = 0;
  EXPECT_FALSE(p.Validate().ok());
  p = SamplingParams();
  p.min_p = 1.5f;
  EXPECT_FALSE(p.Validate().ok());
  p = SamplingParams();
  p.presence_penalty = 3;
  EXPECT_FALSE(p.Validate().ok());
  p = SamplingParams();
  p.logprobs = 50;
  EXPECT_FALSE(p.Validate().ok());
}

}  // namespace
}  // namespace tessera
