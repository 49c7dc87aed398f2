// Perplexity of a model over a token stream, Hugging Face sliding-window style: windows of
// ctx tokens advance by stride and score only tokens no earlier window scored, so every
// token after the first is scored exactly once (a window's last position predicts the
// token after it, so disjoint windows lose no token either).
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "absl/status/statusor.h"
#include "runtime/model/llama_model.h"

namespace tessera::quant {

struct PerplexityOptions {
  int64_t ctx = 0;     // window length; 0: the model's max_position_embeddings
  int64_t stride = 0;  // window advance; 0: ctx / 2
  absl::Status Validate() const;
};

struct PerplexityResult {
  double perplexity = 0.0;
  double nll_sum = 0.0;  // natural log
  int64_t scored_tokens = 0;
  int64_t windows = 0;
};

// `progress(window, scored_so_far, running_perplexity)` after each window.
absl::StatusOr<PerplexityResult> ComputePerplexity(
    LlamaModel& model, const std::vector<int32_t>& tokens, const PerplexityOptions& options,
    const std::function<void(int64_t, int64_t, double)>& progress = nullptr);

}  // namespace tessera::quant
