// Per-request drift features and their builder.
#include "runtime/drift/features.h"

#include <algorithm>

namespace tessera::drift {

std::string_view NumericFeatureName(int feature) {
  static constexpr std::string_view kNames[kNumNumericFeatures] = {
      "prompt_length", "output_length", "mean_logprob", "mean_entropy", "mean_top1_prob"};
  return feature >= 0 && feature < kNumNumericFeatures ? kNames[feature] : "unknown";
}

std::array<double, kNumNumericFeatures> RequestFeatures::NumericValues() const {
  return {static_cast<double>(prompt_tokens), static_cast<double>(output_tokens), mean_logprob,
          mean_entropy, mean_top1_prob};
}

int TokenBucket(int32_t token_id, int32_t vocab_size) {
  if (vocab_size <= 0 || token_id < 0) return 0;
  const int64_t bucket = static_cast<int64_t>(token_id) * kNumTokenBuckets / vocab_size;
  return static_cast<int>(std::min<int64_t>(bucket, kNumTokenBuckets - 1));
}

void RequestFeatureBuilder::AddToken(int32_t token_id, double logprob, double entropy,
                                     double top1_prob) {
  ++tokens_;
  sum_logprob_ += logprob;
  sum_entropy_ += entropy;
  sum_top1_ += top1_prob;
  ++buckets_[TokenBucket(token_id, vocab_size_)];
}

RequestFeatures RequestFeatureBuilder::Finish(std::string model, std::string adapter,
                                              int64_t prompt_tokens,
                                              std::string finish_reason) const {
  RequestFeatures f;
  f.model = std::move(model);
  f.adapter = std::move(adapter);
  f.prompt_tokens = prompt_tokens;
  f.output_tokens = tokens_;
  f.finish_reason = std::move(finish_reason);
  if (tokens_ > 0) {
    const double n = static_cast<double>(tokens_);
    f.mean_logprob = sum_logprob_ / n;
    f.mean_entropy = sum_entropy_ / n;
    f.mean_top1_prob = sum_top1_ / n;
  }
  f.token_buckets = buckets_;
  return f;
}

}  // namespace tessera::drift
