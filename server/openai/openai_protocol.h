// OpenAI-compatible request parsing and response building for /v1/completions and
// /v1/chat/completions. Pure functions over JSON: no transport, no engine.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"
#include "runtime/engine/request.h"
#include "runtime/tokenizer/chat_template.h"
#include "runtime/tokenizer/tokenizer.h"

namespace tessera::openai {

struct ApiLimits {
  std::string model_name;
  int32_t max_model_len = 0;
  int32_t max_n = 8;
  int32_t default_max_tokens = 16;
};

// A parsed request: the common generation parameters plus the API's own options.
struct ParsedRequest {
  bool chat = false;
  GenerationRequest base;  // prompt_ids, sampling, max_tokens, stops (seed per choice added later)
  int32_t n = 1;
  bool stream = false;
  bool include_usage = false;
  int32_t top_logprobs = -1;  // -1: no logprobs
  std::string model;
  std::string adapter;        // when `model` names a LoRA adapter
};

// Parses a request body. InvalidArgument carries a message for the client; NotFound for an
// unknown model. `resolve_adapter` maps a non-base model name to an adapter id (or NotFound).
absl::StatusOr<ParsedRequest> ParseRequest(
    const std::string& body, bool chat, const ApiLimits& limits, const Tokenizer& tokenizer,
    ChatTemplateKind chat_template,
    const std::function<absl::StatusOr<uint64_t>(const std::string&)>& resolve_adapter = nullptr);

// Token text for logprobs: the piece with sentencepiece's word marker shown as a space.
std::string TokenText(const Tokenizer& tokenizer, int32_t id);

// Logprobs object for one choice (completions or chat shape).
nlohmann::json LogprobsJson(const Tokenizer& tokenizer, const std::vector<SampleResult>& samples, bool chat,
                            size_t text_offset_base);

nlohmann::json UsageJson(int prompt_tokens, int completion_tokens, int cached_tokens);

}  // namespace tessera::openai
