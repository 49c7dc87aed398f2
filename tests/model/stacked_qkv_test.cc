// q, k and v as one product against their stacked weight give the logits of three separate
// products, for a dense checkpoint (the default model) and a GPTQ one, over a batch that
// prefills two sequences and then decodes them.
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <string>

#include "gtest/gtest.h"
#include "kernels/backend.h"
#include "runtime/model/llama_model.h"
#include "tests/testing/paths.h"
#include "tests/testing/subprocess.h"

namespace tessera {
namespace {

constexpr int kBlockSize = 4, kBlocksPerSeq = 4;

// Two sequences: prefill `lens` tokens each (step 0), then one decode token each (step 1).
BatchLayout Step(int step, const std::vector<int>& lens) {
  BatchLayout l;
  l.block_size = kBlockSize;
  l.max_blocks_per_seq = kBlocksPerSeq;
  l.query_start.push_back(0);
  for (int s = 0; s < static_cast<int>(lens.size()); ++s) {
    const int begin = step == 0 ? 0 : lens[s], end = step == 0 ? lens[s] : lens[s] + 1;
    for (int p = begin; p < end; ++p) {
      l.token_ids.push_back(3 + (7 * p + 11 * s) % 200);
      l.positions.push_back(p);
      l.slot_mapping.push_back(s * kBlocksPerSeq * kBlockSize + p);
      l.logits_rows.push_back(l.num_tokens() - 1);
    }
    l.query_start.push_back(l.num_tokens());
    l.context_lens.push_back(end);
    for (int b = 0; b < kBlocksPerSeq; ++b) l.block_tables.push_back(s * kBlocksPerSeq + b);
  }
  return l;
}

std::vector<float> RunTwoSteps(const std::string& dir, bool stack_qkv, bool* stacked) {
  auto backend = std::move(CreateBackend("cpu")).value();
  ModelLoadOptions o;
  o.stack_qkv = stack_qkv;
  auto model = LlamaModel::Load(dir, backend.get(), o);
  EXPECT_TRUE(model.ok()) << model.status();
  if (!model.ok()) return {};
  *stacked = (*model)->layer_uses_stacked_qkv(0);
  auto kv = PagedKvStorage::Create(*backend, (*model)->config(), 2 * kBlocksPerSeq, kBlockSize);
  EXPECT_TRUE(kv.ok()) << kv.status();
  std::vector<float> all;
  for (int step = 0; step < 2; ++step) {
    auto logits = (*model)->Forward(Step(step, {5, 9}), **kv);
    EXPECT_TRUE(logits.ok()) << logits.status();
    if (!logits.ok()) return {};
    all.insert(all.end(), logits->begin(), logits->end());
  }
  return all;
}

void ExpectSameLogits(const std::string& dir) {
  bool stacked = false, apart = true;
  const std::vector<float> a = RunTwoSteps(dir, /*stack_qkv=*/true, &stacked);
  const std::vector<float> b = RunTwoSteps(dir, /*stack_qkv=*/false, &apart);
  EXPECT_TRUE(stacked);
  EXPECT_FALSE(apart);
  ASSERT_EQ(a.size(), b.size());
  ASSERT_FALSE(a.empty());
  double max_diff = 0, max_abs = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    max_diff = std::max(max_diff, std::abs(static_cast<double>(a[i]) - b[i]));
    max_abs = std::max(max_abs, std::abs(static_cast<double>(b[i])));
  }
  EXPECT_GT(max_abs, 0.0);
  EXPECT_LE(max_diff, 1e-5 * (1.0 + max_abs)) << "stacked and separate q/k/v disagree";
}

TEST(StackedQkvTest, DenseCheckpointGivesTheLogitsOfSeparateProducts) { ExpectSameLogits(testing::DefaultModelDir()); }

TEST(StackedQkvTest, GptqCheckpointGivesTheLogitsOfSeparateProducts) {
  const std::string dir =
      (std::filesystem::temp_directory_path() / ("tessera_stacked_qkv_" + std::to_string(::getpid()))).string();
  auto made = testing::RunCommand(std::string(TESSERA_BINARY_DIR) + "/bin/tessera-make-random-model --shape tiny-test " +
                                  "--layers 2 --gptq-bits 4 --group-size 16 --out " + dir + " 2>&1");
  ASSERT_EQ(made.exit_code, 0) << made.out;
  ExpectSameLogits(dir);
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace tessera
