// Sequence: stop conditions for sampled tokens.
#include "runtime/scheduler/sequence.h"

#include <algorithm>
#include <utility>

namespace tessera {

std::string_view FinishReasonName(FinishReason reason) {
  switch (reason) {
    case FinishReason::kStop:
      return "stop";
    case FinishReason::kLength:
      return "length";
    case FinishReason::kAbort:
      return "abort";
    case FinishReason::kNone:
      break;
  }
  return "";
}

Sequence::Sequence(SequenceSpec s, int64_t arrival_order)
    : spec(std::move(s)), arrival(arrival_order), tokens(spec.prompt_token_ids) {}

int Sequence::MaxLength(int max_model_len) const {
  const int64_t want = int64_t{num_prompt_tokens()} + spec.max_new_tokens;
  return static_cast<int>(std::min<int64_t>(want, max_model_len));
}

FinishReason Sequence::AppendToken(int32_t token, int max_model_len) {
  tokens.push_back(token);
  // A stop token wins over a length limit reached by the same token: it says more.
  if (!spec.ignore_eos && spec.eos_token_id >= 0 && token == spec.eos_token_id) {
    return FinishReason::kStop;
  }
  if (std::find(spec.stop_token_ids.begin(), spec.stop_token_ids.end(), token) !=
      spec.stop_token_ids.end()) {
    return FinishReason::kStop;
  }
  if (num_output_tokens() >= spec.max_new_tokens || num_tokens() >= max_model_len) {
    return FinishReason::kLength;
  }
  return FinishReason::kNone;
}

}  // namespace tessera
