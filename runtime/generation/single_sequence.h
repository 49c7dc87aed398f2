// Generates one sequence at a time, straight through the model with a private KV cache.
// The simplest correct path: the reference the batched engine is tested against.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "runtime/model/llama_model.h"
#include "runtime/sampling/sampler.h"
#include "runtime/tokenizer/tokenizer.h"

namespace tessera {

struct SingleSequenceOptions {
  int32_t max_tokens = 256;
  std::vector<int32_t> stop_token_ids;  // finishing tokens (included in the output ids)
  SamplingParams sampling;
  int32_t block_size = 16;
  // The KV cache's dtype; the backend's activation dtype when unset.
  std::optional<DType> kv_cache_dtype;
};

struct GenerationResult {
  std::vector<int32_t> prompt_ids;
  std::vector<int32_t> ids;  // new tokens, a stop token included if produced
  std::string text;          // text of the new tokens
  std::string finish_reason;  // "stop" | "length"
  std::vector<SampleResult> samples;
};

// Runs prompt_ids through `model` and samples up to max_tokens new tokens. on_text
// receives text deltas as they become final.
absl::StatusOr<GenerationResult> GenerateSingleSequence(
    LlamaModel& model, const Tokenizer* tokenizer, const std::vector<int32_t>& prompt_ids,
    const SingleSequenceOptions& options, const std::function<void(const std::string&)>& on_text = nullptr);

}  // namespace tessera
