#include "quant/eval/perplexity.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "runtime/common/status_macros.h"

namespace tessera::quant {

absl::Status PerplexityOptions::Validate() const {
  if (ctx < 0) return absl::InvalidArgumentError("--ctx must not be negative");
  if (stride < 0) return absl::InvalidArgumentError("--stride must not be negative");
  if (ctx > 0 && ctx < 2) return absl::InvalidArgumentError("--ctx must be at least 2");
  if (ctx > 0 && stride > ctx) return absl::InvalidArgumentError("--stride must not exceed --ctx");
  return absl::OkStatus();
}

absl::StatusOr<PerplexityResult> ComputePerplexity(LlamaModel& model, const std::vector<int32_t>& tokens,
                                                   const PerplexityOptions& options,
                                                   const std::function<void(int64_t, int64_t, double)>& progress) {
  RETURN_IF_ERROR(options.Validate());
  const ModelConfig& c = model.config();
  const int64_t ctx = options.ctx > 0 ? options.ctx : c.max_position_embeddings;
  if (ctx > c.max_position_embeddings)
    return absl::InvalidArgumentError(absl::StrCat("--ctx ", ctx, " exceeds max_position_embeddings ",
                                                   c.max_position_embeddings));
  const int64_t stride = options.stride > 0 ? options.stride : std::max<int64_t>(1, ctx / 2);
  if (stride > ctx) return absl::InvalidArgumentError("--stride must not exceed --ctx");
  const int64_t n = static_cast<int64_t>(tokens.size());
  if (n < 2) return absl::InvalidArgumentError("perplexity needs at least 2 tokens");

  const int32_t bs = 16;
  const int32_t num_blocks = static_cast<int32_t>((ctx + bs - 1) / bs);
  ASSIGN_OR_RETURN(auto kv, PagedKvStorage::Create(model.backend(), c, num_blocks, bs));
  PerplexityResult r;
  int64_t next_target = 1;  // the first token is never predicted
  for (int64_t begin = 0; next_target < n; begin += stride) {
    const int64_t end = std::min(begin + ctx, n);
    // Window [begin, end): logits row r predicts token begin + r + 1, so it can score
    // tokens begin + 1 .. end; it scores those no earlier window did.
    const int64_t first = std::max(next_target, begin + 1);
    const int64_t last = std::min(end, n - 1);
    if (first <= last) {
      BatchLayout layout;
      layout.block_size = bs;
      layout.max_blocks_per_seq = num_blocks;
      for (int32_t b = 0; b < num_blocks; ++b) layout.block_tables.push_back(b);
      layout.query_start = {0, static_cast<int32_t>(end - begin)};
      layout.context_lens = {static_cast<int32_t>(end - begin)};
      for (int64_t t = begin; t < end; ++t) {
        layout.token_ids.push_back(tokens[t]);
        layout.positions.push_back(static_cast<int32_t>(t - begin));
        layout.slot_mapping.push_back(static_cast<int32_t>(t - begin));
      }
      for (int64_t t = first; t <= last; ++t) layout.logits_rows.push_back(static_cast<int32_t>(t - 1 - begin));
      ASSIGN_OR_RETURN(std::vector<float> logits, model.Forward(layout, *kv));
      const int64_t V = c.vocab_size;
      for (int64_t t = first; t <= last; ++t) {
        const float* row = logits.data() + (t - first) * V;
        double mx = row[0];
        for (int64_t j = 1; j < V; ++j) mx = std::max<double>(mx, row[j]);
        double sum = 0.0;
        for (int64_t j = 0; j < V; ++j) sum += std::exp(static_cast<double>(row[j]) - mx);
        r.nll_sum += std::log(sum) + mx - static_cast<double>(row[tokens[t]]);
        ++r.scored_tokens;
      }
      next_target = last + 1;
    }
    ++r.windows;
    if (progress) progress(r.windows, r.scored_tokens, std::exp(r.nll_sum / std::max<int64_t>(1, r.scored_tokens)));
  }
  r.perplexity = std::exp(r.nll_sum / static_cast<double>(r.scored_tokens));
  return r;
}

}  // namespace tessera::quant
