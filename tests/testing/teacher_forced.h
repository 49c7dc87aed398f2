// Teacher-forced logits: a prompt and a continuation fed as one prefill through the model
// (attention reading the paged cache), one logits row per position from the last prompt
// token on (row i predicts continuation[i]).
#pragma once

#include <optional>
#include <vector>

#include "gtest/gtest.h"
#include "runtime/model/llama_model.h"

namespace tessera::testing {

inline std::vector<std::vector<float>> TeacherForcedLogits(LlamaModel& model, const std::vector<int32_t>& prompt,
                                                           const std::vector<int32_t>& continuation,
                                                           std::optional<DType> kv_dtype = std::nullopt) {
  std::vector<int32_t> seq = prompt;
  seq.insert(seq.end(), continuation.begin(), continuation.end() - 1);
  const int32_t n = static_cast<int32_t>(seq.size()), bs = 16, blocks = (n + bs - 1) / bs;
  auto kv = PagedKvStorage::Create(model.backend(), model.config(), blocks, bs, kv_dtype);
  EXPECT_TRUE(kv.ok()) << kv.status();
  if (!kv.ok()) return {};
  BatchLayout layout;
  layout.block_size = bs;
  layout.max_blocks_per_seq = blocks;
  layout.token_ids = seq;
  for (int32_t i = 0; i < n; ++i) {
    layout.positions.push_back(i);
    layout.slot_mapping.push_back(i);
  }
  layout.query_start = {0, n};
  layout.context_lens = {n};
  for (int32_t b = 0; b < blocks; ++b) layout.block_tables.push_back(b);
  for (int32_t i = static_cast<int32_t>(prompt.size()) - 1; i < n; ++i) layout.logits_rows.push_back(i);
  auto logits = model.Forward(layout, **kv);
  EXPECT_TRUE(logits.ok()) << logits.status();
  if (!logits.ok()) return {};
  const int64_t vocab = model.config().vocab_size;
  std::vector<std::vector<float>> rows;
  for (size_t r = 0; r < layout.logits_rows.size(); ++r)
    rows.emplace_back(logits->begin() + r * vocab, logits->begin() + (r + 1) * vocab);
  return rows;
}

}  // namespace tessera::testing
