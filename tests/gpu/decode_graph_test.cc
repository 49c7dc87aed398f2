// DecodeGraphRunner on the CUDA backend: a replayed decode step gives the eager step's
// logits (up to the summation order of the attention partitions), padding rows write no
// KV, replays are deterministic, and non-decode steps are refused. Skipped without a GPU.
#include <cmath>
#include <random>

#include "gtest/gtest.h"
#include "kernels/backend.h"
#include "runtime/model/decode_graph_runner.h"
#include "runtime/model/llama_model.h"
#include "tests/testing/paths.h"

namespace tessera {
namespace {

constexpr int32_t kBlock = 16;
constexpr int32_t kBlocksPerSeq = 8;  // sequences own disjoint blocks [s*8, s*8+8)

// One step over sequences s < lens.size(): sequence s feeds tokens[s] (all of them, from
// position start[s]), and its last token's logits are wanted.
BatchLayout Layout(const std::vector<std::vector<int32_t>>& tokens, const std::vector<int32_t>& start) {
  BatchLayout l;
  l.block_size = kBlock;
  l.max_blocks_per_seq = kBlocksPerSeq;
  l.query_start.push_back(0);
  for (size_t s = 0; s < tokens.size(); ++s) {
    for (size_t i = 0; i < tokens[s].size(); ++i) {
      const int32_t pos = start[s] + static_cast<int32_t>(i);
      l.token_ids.push_back(tokens[s][i]);
      l.positions.push_back(pos);
      l.slot_mapping.push_back(static_cast<int32_t>(s) * kBlocksPerSeq * kBlock + pos);
    }
    l.query_start.push_back(l.query_start.back() + static_cast<int32_t>(tokens[s].size()));
    l.context_lens.push_back(start[s] + static_cast<int32_t>(tokens[s].size()));
    for (int32_t b = 0; b < kBlocksPerSeq; ++b) l.block_tables.push_back(static_cast<int32_t>(s) * kBlocksPerSeq + b);
    l.logits_rows.push_back(l.query_start.back() - 1);
  }
  return l;
}

std::vector<float> ToHost(Backend& b, const TensorView& v, int64_t rows) {
  std::vector<float> out(rows * v.cols);
  EXPECT_TRUE(b.Synchronize().ok());
  EXPECT_TRUE(b.CopyToHost(out.data(), v.data, out.size() * sizeof(float)).ok());
  return out;
}

double RelError(const std::vector<float>& a, const std::vector<float>& b) {
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    if (!std::isfinite(a[i])) return INFINITY;
    num += (a[i] - b[i]) * double(a[i] - b[i]);
    den += b[i] * double(b[i]);
  }
  return std::sqrt(num / den);
}

class DecodeGraphTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!CudaBackendAvailable()) GTEST_SKIP() << "no CUDA device visible";
    gpu_ = std::move(CreateBackend("cuda")).value();
    auto m = LlamaModel::Load(testing::DefaultModelDir(), gpu_.get());
    ASSERT_TRUE(m.ok()) << m.status();
    model_ = std::move(*m);
    kv_ = std::move(PagedKvStorage::Create(*gpu_, model_->config(), 8 * kBlocksPerSeq, kBlock)).value();
    DecodeGraphOptions o;
    o.max_model_len = kBlock * kBlocksPerSeq;
    o.block_size = kBlock;
    o.buckets = {1, 2, 4, 8};
    o.reserve_tokens = 256;
    o.reserve_logits = 8;
    runner_ = std::move(DecodeGraphRunner::Create(model_.get(), kv_.get(), o)).value();
    // Prefill 6 sequences of different lengths eagerly.
    std::mt19937 rng(5);
    std::vector<std::vector<int32_t>> prompts;
    for (int s = 0; s < 6; ++s) {
      std::vector<int32_t> p(3 + 9 * s);
      for (int32_t& t : p) t = 2 + static_cast<int32_t>(rng() % 500);
      prompts.push_back(p);
      lens_.push_back(static_cast<int32_t>(p.size()));
    }
    ASSERT_TRUE(model_->ForwardLogits(Layout(prompts, std::vector<int32_t>(6, 0)), *kv_).ok());
  }

  std::vector<std::vector<int32_t>> NextTokens(int n) {
    std::vector<std::vector<int32_t>> t;
    for (int s = 0; s < n; ++s) t.push_back({static_cast<int32_t>(10 + 17 * s)});
    return t;
  }

  std::unique_ptr<Backend> gpu_;
  std::unique_ptr<LlamaModel> model_;
  std::unique_ptr<PagedKvStorage> kv_;
  std::unique_ptr<DecodeGraphRunner> runner_;
  std::vector<int32_t> lens_;
};

TEST_F(DecodeGraphTest, ReplayMatchesEagerDecodeForPaddedBatchSizes) {
  for (int n : {1, 3, 5, 6}) {
    std::vector<int32_t> start(lens_.begin(), lens_.begin() + n);
    BatchLayout step = Layout(NextTokens(n), start);
    ASSERT_TRUE(runner_->Accepts(step));
    auto eager = model_->ForwardLogits(step, *kv_);
    ASSERT_TRUE(eager.ok()) << eager.status();
    const std::vector<float> want = ToHost(*gpu_, *eager, n);
    auto graph = runner_->Run(step);
    ASSERT_TRUE(graph.ok()) << graph.status();
    const std::vector<float> got = ToHost(*gpu_, *graph, n);
    EXPECT_LT(RelError(got, want), 1e-2) << "batch " << n;
    // Padding rows wrote no KV: a second eager step still sees the same cache.
    auto again = model_->ForwardLogits(step, *kv_);
    ASSERT_TRUE(again.ok());
    EXPECT_LT(RelError(ToHost(*gpu_, *again, n), want), 1e-2) << "batch " << n;
  }
  EXPECT_EQ(runner_->num_graphs(), 3);  // buckets 1, 4 and 8
}

TEST_F(DecodeGraphTest, ReplaysAreDeterministic) {
  BatchLayout step = Layout(NextTokens(3), {lens_[0], lens_[1], lens_[2]});
  auto first = runner_->Run(step);
  ASSERT_TRUE(first.ok()) << first.status();
  const std::vector<float> a = ToHost(*gpu_, *first, 3);
  auto second = runner_->Run(step);
  ASSERT_TRUE(second.ok());
  EXPECT_EQ(ToHost(*gpu_, *second, 3), a);
}

TEST_F(DecodeGraphTest, RefusesPrefillAndOversizedSteps) {
  EXPECT_FALSE(runner_->Accepts(Layout({{5, 6}}, {lens_[0]})));
  std::vector<std::vector<int32_t>> nine(9, std::vector<int32_t>{7});
  EXPECT_FALSE(runner_->Accepts(Layout(nine, std::vector<int32_t>(9, 1))));
  EXPECT_FALSE(runner_->Run(Layout({{5, 6}}, {lens_[0]})).ok());
}

}  // namespace
}  // namespace tessera
