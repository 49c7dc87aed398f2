// One request as the scheduler sees it: its token list (prompt + generated), how much of it
// has KV computed, its status, and the stop conditions applied to each sampled token.
#pragma once

#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

namespace tessera {

enum class SeqStatus { kWaiting, kRunning, kPreempted, kFinished };

enum class FinishReason { kNone, kStop, kLength, kAbort };

// "stop", "length", "abort" (OpenAI finish_reason vocabulary); "" for kNone.
std::string_view FinishReasonName(FinishReason reason);

struct SequenceSpec {
  uint64_t id = 0;
  std::vector<int32_t> prompt_token_ids;
  int max_new_tokens = 16;
  // The model's end-of-sequence token, or -1. Kept apart from stop_token_ids so that
  // ignore_eos turns off only this one.
  int32_t eos_token_id = -1;
  // Further tokens that end the sequence; the stop token is kept in the output.
  std::vector<int32_t> stop_token_ids;
  // Model + adapter identity: prefixes are shared only between equal salts.
  uint64_t cache_salt = 0;
  bool ignore_eos = false;
};

struct Sequence {
  Sequence(SequenceSpec spec, int64_t arrival);

  uint64_t id() const { return spec.id; }
  int num_tokens() const { return static_cast<int>(tokens.size()); }
  int num_prompt_tokens() const { return static_cast<int>(spec.prompt_token_ids.size()); }
  int num_output_tokens() const { return num_tokens() - num_prompt_tokens(); }
  std::span<const int32_t> output_token_ids() const {
    return std::span<const int32_t>(tokens).subspan(spec.prompt_token_ids.size());
  }
  // The longest this sequence can grow: prompt + max_new_tokens, capped by max_model_len.
  int MaxLength(int max_model_len) const;
  // Appends a sampled token and says whether the sequence ends with it.
  FinishReason AppendToken(int32_t token, int max_model_len);

  SequenceSpec spec;
  int64_t arrival;  // AddRequest order; smaller is older
  std::vector<int32_t> tokens;
  // Tokens whose KV is written. Reset to 0 by preemption; generated tokens are kept, so
  // recompute resumes where the sequence was.
  int num_computed_tokens = 0;
  SeqStatus status = SeqStatus::kWaiting;
  int num_preemptions = 0;

  // Per-step state, owned by the scheduler.
  int step_tokens = 0;   // scheduled this step
  bool step_sample = false;
  int64_t sampled_stamp = -1;  // the UpdateFromOutput call that set sampled_token
  int32_t sampled_token = 0;
  bool executed_since_admission = false;  // false: the runner has no state for it yet
};

}  // namespace tessera
