// Per-request features the drift monitor compares between the reference and live traffic,
// and a builder that gathers them token by token in the engine's step loop.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

#include "absl/time/time.h"

namespace tessera::drift {

// Generated tokens are counted over this many equal ranges of token ids.
inline constexpr int kNumTokenBuckets = 16;

// Numeric features, compared with KS, PSI and KL over reference-quantile bins.
enum NumericFeature : int {
  kPromptLength = 0,
  kOutputLength,
  kMeanLogprob,   // mean log-probability of the generated tokens
  kMeanEntropy,   // mean entropy of the next-token distribution (nats)
  kMeanTop1Prob,  // mean probability of the most likely next token
  kNumNumericFeatures
};
std::string_view NumericFeatureName(int feature);

// Categorical features, compared with PSI and KL over their categories.
inline constexpr std::string_view kFinishReasonFeature = "finish_reason";
inline constexpr std::string_view kTokenBucketFeature = "output_token_bucket";

struct RequestFeatures {
  std::string model;
  std::string adapter;  // empty for the base model
  int64_t prompt_tokens = 0;
  int64_t output_tokens = 0;
  std::string finish_reason;  // "stop", "length", "abort", ...
  double mean_logprob = 0;
  double mean_entropy = 0;
  double mean_top1_prob = 0;
  // Generated tokens per id range; a categorical distribution over kNumTokenBuckets.
  std::array<uint32_t, kNumTokenBuckets> token_buckets{};
  // When the request finished; DriftMonitor::Observe stamps it from its clock if unset.
  absl::Time observed_at = absl::InfinitePast();

  std::array<double, kNumNumericFeatures> NumericValues() const;
};

// Bucket of `token_id` when [0, vocab_size) is cut into kNumTokenBuckets equal ranges.
int TokenBucket(int32_t token_id, int32_t vocab_size);

// Accumulates one request's per-token observations; O(1) per token.
class RequestFeatureBuilder {
 public:
  explicit RequestFeatureBuilder(int32_t vocab_size) : vocab_size_(vocab_size) {}

  // logprob: of the sampled token; entropy and top1_prob: of the distribution it came from.
  void AddToken(int32_t token_id, double logprob, double entropy, double top1_prob);

  RequestFeatures Finish(std::string model, std::string adapter, int64_t prompt_tokens,
                         std::string finish_reason) const;

 private:
  int32_t vocab_size_;
  int64_t tokens_ = 0;
  double sum_logprob_ = 0;
  double sum_entropy_ = 0;
  double sum_top1_ = 0;
  std::array<uint32_t, kNumTokenBuckets> buckets_{};
};

}  // namespace tessera::drift
