#include "runtime/generation/single_sequence.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "runtime/common/status_macros.h"
#include "runtime/tokenizer/detokenizer.h"

namespace tessera {

absl::StatusOr<GenerationResult> GenerateSingleSequence(LlamaModel& model, const Tokenizer* tokenizer,
                                                        const std::vector<int32_t>& prompt_ids,
                                                        const SingleSequenceOptions& options,
                                                        const std::function<void(const std::string&)>& on_text) {
  RETURN_IF_ERROR(options.sampling.Validate());
  if (prompt_ids.empty()) return absl::InvalidArgumentError("the prompt has no tokens");
  if (options.max_tokens < 0) return absl::InvalidArgumentError("max_tokens must not be negative");
  const ModelConfig& c = model.config();
  const int64_t max_len = c.max_position_embeddings;
  const int64_t total = std::min<int64_t>(static_cast<int64_t>(prompt_ids.size()) + options.max_tokens, max_len);
  if (static_cast<int64_t>(prompt_ids.size()) > max_len)
    return absl::InvalidArgumentError(absl::StrCat("prompt of ", prompt_ids.size(), " tokens exceeds the context of ", max_len));
  const int32_t bs = options.block_size;
  const int32_t num_blocks = static_cast<int32_t>((total + bs) / bs);
  ASSIGN_OR_RETURN(auto kv, PagedKvStorage::Create(model.backend(), c, num_blocks, bs, options.kv_cache_dtype));
  // Blocks are handed out in reverse so the test of paging is not a test of contiguity.
  std::vector<int32_t> table(num_blocks);
  for (int32_t i = 0; i < num_blocks; ++i) table[i] = num_blocks - 1 - i;

  GenerationResult result;
  result.prompt_ids = prompt_ids;
  result.finish_reason = "length";
  SequenceSampler sampler(options.sampling, prompt_ids);
  std::unique_ptr<IncrementalDetokenizer> detok;
  if (tokenizer) detok = std::make_unique<IncrementalDetokenizer>(tokenizer, prompt_ids);
  std::vector<int32_t> pending = prompt_ids;
  int32_t pos = 0;
  while (static_cast<int32_t>(result.ids.size()) < options.max_tokens && pos + static_cast<int64_t>(pending.size()) <= max_len) {
    BatchLayout layout;
    layout.block_size = bs;
    layout.max_blocks_per_seq = num_blocks;
    layout.block_tables = table;
    layout.query_start = {0, static_cast<int32_t>(pending.size())};
    for (size_t i = 0; i < pending.size(); ++i) {
      const int32_t p = pos + static_cast<int32_t>(i);
      layout.token_ids.push_back(pending[i]);
      layout.positions.push_back(p);
      layout.slot_mapping.push_back(table[p / bs] * bs + p % bs);
    }
    layout.context_lens = {pos + static_cast<int32_t>(pending.size())};
    layout.logits_rows = {static_cast<int32_t>(pending.size()) - 1};
    ASSIGN_OR_RETURN(std::vector<float> logits, model.Forward(layout, *kv));
    pos += static_cast<int32_t>(pending.size());
    SampleResult s = sampler.Sample(logits.data(), static_cast<int32_t>(c.vocab_size));
    result.ids.push_back(s.token);
    result.samples.push_back(s);
    const bool stop = std::find(options.stop_token_ids.begin(), options.stop_token_ids.end(), s.token) !=
                      options.stop_token_ids.end();
    if (detok && !stop) {
      std::string delta = detok->Append(s.token);
      if (on_text && !delta.empty()) on_text(delta);
    }
    if (stop) {
      result.finish_reason = "stop";
      break;
    }
    pending = {s.token};
  }
  if (detok) {
    std::string delta = detok->Flush();
    if (on_text && !delta.empty()) on_text(delta);
    result.text = detok->text();
  }
  return result;
}

}  // namespace tessera
