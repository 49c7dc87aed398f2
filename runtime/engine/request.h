// What a client asks the engine for, and what the engine streams back.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "runtime/sampling/sampler.h"

namespace tessera {

struct GenerationRequest {
  std::string request_id;              // for logs; the engine assigns its own numeric id
  std::vector<int32_t> prompt_ids;     // BOS included when the tokenizer wants it
  SamplingParams sampling;
  int32_t max_tokens = 16;
  std::vector<int32_t> stop_token_ids;      // in addition to the model's EOS ids
  std::vector<std::string> stop_strings;    // finish when the text contains one (not emitted)
  bool ignore_eos = false;
  std::string adapter;                      // LoRA adapter name; empty = base model
  uint64_t adapter_id = 0;                  // resolved by the server; part of prefix-cache keys
};

struct Usage {
  int32_t prompt_tokens = 0;
  int32_t completion_tokens = 0;
  int32_t cached_prompt_tokens = 0;  // prompt tokens served from the prefix cache
};

// One streamed update. Non-final updates carry new tokens and their text; the final one
// has finished = true, finish_reason set and usage filled (it may carry tokens too).
struct RequestOutput {
  uint64_t id = 0;
  std::vector<int32_t> token_ids;
  std::string text;
  std::vector<SampleResult> logprobs;  // one per token when logprobs or stats were asked for
  bool finished = false;
  std::string finish_reason;  // "stop" | "length" | "abort" | "error"
  Usage usage;
  absl::Status status;        // non-OK when finish_reason == "error"
};

// Called on the engine thread; must return quickly (hand the output to another thread).
using OutputCallback = std::function<void(RequestOutput)>;

}  // namespace tessera
