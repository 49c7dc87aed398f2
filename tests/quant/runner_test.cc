// The layer-wise calibration runner computes exactly the model's forward, and the
// sliding-window perplexity scores every token once.
#include <cmath>

#include "gtest/gtest.h"
#include "quant/eval/perplexity.h"
#include "quant/gptq/layer_runner.h"
#include "runtime/model/llama_model.h"
#include "tests/testing/paths.h"

namespace tessera {
namespace {

std::vector<int32_t> Tokens(int64_t n, int32_t vocab, int32_t seed) {
  std::vector<int32_t> t = {1};
  for (int64_t i = 1; i < n; ++i) t.push_back(static_cast<int32_t>((i * 7919 + seed * 104729) % (vocab - 3) + 3));
  return t;
}

// Logits of one sequence through LlamaModel, every position.
std::vector<float> ModelLogits(LlamaModel& model, const std::vector<int32_t>& ids) {
  const int32_t bs = 16, nb = static_cast<int32_t>((ids.size() + bs - 1) / bs);
  auto kv = PagedKvStorage::Create(model.backend(), model.config(), nb, bs);
  EXPECT_TRUE(kv.ok());
  BatchLayout layout;
  layout.block_size = bs;
  layout.max_blocks_per_seq = nb;
  for (int32_t b = 0; b < nb; ++b) layout.block_tables.push_back(b);
  layout.query_start = {0, static_cast<int32_t>(ids.size())};
  layout.context_lens = {static_cast<int32_t>(ids.size())};
  for (size_t i = 0; i < ids.size(); ++i) {
    layout.token_ids.push_back(ids[i]);
    layout.positions.push_back(static_cast<int32_t>(i));
    layout.slot_mapping.push_back(static_cast<int32_t>(i));
    layout.logits_rows.push_back(static_cast<int32_t>(i));
  }
  auto logits = model.Forward(layout, **kv);
  EXPECT_TRUE(logits.ok()) << logits.status();
  return *logits;
}

class ModelTest : public ::testing::Test {
 protected:
  void SetUp() override {
    backend_ = std::move(*CreateBackend("cpu"));
    auto m = LlamaModel::Load(testing::DefaultModelDir(), backend_.get());
    ASSERT_TRUE(m.ok()) << m.status();
    model_ = std::move(*m);
  }
  std::unique_ptr<Backend> backend_;
  std::unique_ptr<LlamaModel> model_;
};

TEST_F(ModelTest, LayerwiseRunnerReproducesModelLogits) {
  auto runner = quant::LayerwiseRunner::Load(testing::DefaultModelDir());
  ASSERT_TRUE(runner.ok()) << runner.status();
  const int32_t V = static_cast<int32_t>(model_->config().vocab_size);
  const std::vector<std::vector<int32_t>> seqs = {Tokens(40, V, 1), Tokens(40, V, 2), Tokens(40, V, 3)};
  auto acts = (*runner)->Embed(seqs);
  ASSERT_TRUE(acts.ok());
  quant::Activations x = *acts;
  for (int64_t l = 0; l < model_->config().num_hidden_layers; ++l) x = (*runner)->RunLayer(l, x, nullptr);
  const std::vector<float> got = (*runner)->Logits(x);
  for (size_t s = 0; s < seqs.size(); ++s) {
    const std::vector<float> want = ModelLogits(*model_, seqs[s]);
    ASSERT_EQ(want.size(), 40u * V);
    double max_diff = 0.0;
    for (size_t i = 0; i < want.size(); ++i)
      max_diff = std::max(max_diff, std::abs(static_cast<double>(got[s * want.size() + i]) - want[i]));
    EXPECT_LT(max_diff, 1e-4) << "sequence " << s;
  }
}

TEST_F(ModelTest, PerplexityOfOneWindowIsTheMeanNegativeLogLikelihood) {
  const std::vector<int32_t> ids = Tokens(60, static_cast<int32_t>(model_->config().vocab_size), 4);
  const std::vector<float> logits = ModelLogits(*model_, ids);
  const int64_t V = model_->config().vocab_size;
  double nll = 0.0;
  for (size_t t = 1; t < ids.size(); ++t) {
    const float* row = logits.data() + (t - 1) * V;
    double mx = row[0], sum = 0.0;
    for (int64_t j = 0; j < V; ++j) mx = std::max<double>(mx, row[j]);
    for (int64_t j = 0; j < V; ++j) sum += std::exp(row[j] - mx);
    nll += std::log(sum) + mx - row[ids[t]];
  }
  quant::PerplexityOptions o;
  o.ctx = 64;
  o.stride = 64;
  auto r = quant::ComputePerplexity(*model_, ids, o);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->scored_tokens, 59);
  EXPECT_EQ(r->windows, 1);
  EXPECT_NEAR(r->perplexity, std::exp(nll / 59.0), 1e-6 * r->perplexity);
}

TEST_F(ModelTest, SlidingWindowsScoreEveryTokenOnce) {
  const std::vector<int32_t> ids = Tokens(100, static_cast<int32_t>(model_->config().vocab_size), 5);
  for (auto [ctx, stride] : {std::pair<int64_t, int64_t>{32, 32}, {32, 8}, {40, 13}, {16, 1}}) {
    quant::PerplexityOptions o;
    o.ctx = ctx;
    o.stride = stride;
    auto r = quant::ComputePerplexity(*model_, ids, o);
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->scored_tokens, 99) << ctx << "/" << stride;
    EXPECT_GT(r->perplexity, 1.0);
  }
}

TEST_F(ModelTest, PerplexityRejectsStrideLongerThanTheWindow) {
  quant::PerplexityOptions o;
  o.ctx = 16;
  o.stride = 17;
  EXPECT_FALSE(quant::ComputePerplexity(*model_, Tokens(40, 512, 1), o).ok());
}

}  // namespace
}  // namespace tessera
