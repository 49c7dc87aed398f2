// Token sampling from one row of logits: greedy, temperature, top-k, top-p, min-p,
// repetition/presence/frequency penalties, per-request seeds, and logprobs.
#pragma once

#include <cstdint>
#include <optional>
#include <random>
#include <string>
#include <unordered_map>
#include <vector>

#include "absl/status/status.h"

namespace tessera {

struct SamplingParams {
  float temperature = 1.0f;  // 0 = greedy
  float top_p = 1.0f;        // (0, 1]
  int32_t top_k = 0;         // 0 or -1 = off
  float min_p = 0.0f;        // [0, 1]
  float repetition_penalty = 1.0f;  // > 0; 1 = off (prompt and output tokens)
  float presence_penalty = 0.0f;    // [-2, 2] (output tokens)
  float frequency_penalty = 0.0f;   // [-2, 2] (output tokens)
  std::optional<uint64_t> seed;
  int32_t logprobs = -1;  // -1: none; N >= 0: chosen token's logprob plus the top N
  // Fill SampleResult's distribution statistics (entropy, top-1 probability, logprob)
  // for every token: drift monitoring asks for them.
  bool collect_stats = false;

  absl::Status Validate() const;
  bool greedy() const { return temperature < 1e-5f; }
};

struct TokenLogprob {
  int32_t id;
  float logprob;
};

struct SampleResult {
  int32_t token = -1;
  float logprob = 0.0f;             // of the chosen token under the model's distribution
  std::vector<TokenLogprob> top;    // the top-N alternatives (N = params.logprobs)
  // With collect_stats: entropy (nats) and top-1 probability of the model's distribution.
  float entropy = 0.0f;
  float top1_prob = 0.0f;
};

// Per-sequence sampling state: its random stream and the token counts penalties need.
class SequenceSampler {
 public:
  SequenceSampler(const SamplingParams& params, const std::vector<int32_t>& prompt_ids);

  // Samples the next token from logits[vocab] and records it in the history.
  SampleResult Sample(const float* logits, int32_t vocab);
  // Records a token chosen elsewhere (e.g. replayed after preemption).
  void Record(int32_t token);
  const SamplingParams& params() const { return params_; }

 private:
  void ApplyPenalties(std::vector<float>& logits) const;

  SamplingParams params_;
  std::mt19937_64 rng_;
  std::unordered_map<int32_t, int32_t> prompt_tokens_;  // id -> 1
  std::unordered_map<int32_t, int32_t> output_counts_;  // id -> count
};

// Index of the largest logit (first one on ties).
int32_t ArgMax(const float* logits, int32_t vocab);

}  // namespace tessera
