// LoRA through the engine on CUDA (bf16, decode graphs): a request with an adapter follows
// the base model with that adapter merged into its weights, and a mixed batch of 32
// adapters plus base requests gives each request's output alone. bf16 results depend on
// the batch shape by a small rounding error, so greedy tokens are compared up to the first
// position whose top-2 logit margin is within that error (a near-tie), as
// cuda_engine_test.cc does for the base model. Skipped when no CUDA device is visible.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <mutex>

#include "gtest/gtest.h"
#include "runtime/engine/engine.h"
#include "runtime/lora/lora_registry.h"
#include "tests/lora/lora_test_util.h"
#include "tests/testing/paths.h"

namespace tessera {
namespace {

using Logits = std::vector<std::vector<float>>;  // one row per predicted position

double MaxAbsDiff(const Logits& a, const Logits& b) {
  double m = 0;
  for (size_t r = 0; r < a.size() && r < b.size(); ++r)
    for (size_t v = 0; v < a[r].size(); ++v) m = std::max(m, std::abs(double(a[r][v]) - b[r][v]));
  return m;
}

double RelError(const Logits& got, const Logits& ref) {
  double num = 0, den = 0;
  for (size_t r = 0; r < got.size() && r < ref.size(); ++r)
    for (size_t v = 0; v < got[r].size(); ++v) {
      num += (got[r][v] - ref[r][v]) * double(got[r][v] - ref[r][v]);
      den += ref[r][v] * double(ref[r][v]);
    }
  return std::sqrt(num / den);
}

int32_t Top1(const std::vector<float>& l) { return static_cast<int32_t>(std::max_element(l.begin(), l.end()) - l.begin()); }

float Margin(std::vector<float> l) {
  std::partial_sort(l.begin(), l.begin() + 2, l.end(), std::greater<float>());
  return l[0] - l[1];
}

// First position whose margin is within `tol` (a near-tie), or rows.size().
size_t FirstNearTie(const Logits& rows, double tol) {
  for (size_t r = 0; r < rows.size(); ++r)
    if (Margin(rows[r]) <= tol) return r;
  return rows.size();
}

size_t CommonPrefix(const std::vector<int32_t>& a, const std::vector<int32_t>& b) {
  size_t n = 0;
  while (n < a.size() && n < b.size() && a[n] == b[n]) ++n;
  return n;
}

class CudaLoraEngineTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!CudaBackendAvailable()) GTEST_SKIP() << "no CUDA device visible";
    cpu_ = std::move(*CreateBackend("cpu"));
    gpu_ = std::move(*CreateBackend("cuda"));
    // Merged models and their engines get their own backend: an engine's decode graphs
    // belong to its backend, and a second engine on the same one would clear them.
    merged_gpu_ = std::move(*CreateBackend("cuda"));
    model_ = Load(testing::DefaultModelDir(), *gpu_);
    tokenizer_ = std::move(*LoadTokenizer(testing::DefaultModelDir()));
    root_ = testing::MakeTempDir("cuda_lora_engine");
  }

  void TearDown() override {
    if (!root_.empty()) std::filesystem::remove_all(root_);
  }

  std::unique_ptr<LlamaModel> Load(const std::string& dir, Backend& backend) {
    auto m = LlamaModel::Load(dir, &backend);
    EXPECT_TRUE(m.ok()) << m.status();
    return m.ok() ? std::move(*m) : nullptr;
  }

  std::string WriteAdapter(const std::string& name, const testing::RandomAdapterSpec& spec) {
    adapters_[name] = testing::MakeRandomAdapter(model_->config(), spec);
    const std::string dir = root_ + "/" + name;
    testing::WritePeftAdapter(dir, adapters_[name].config_json, adapters_[name].tensors, spec.dtype);
    return dir;
  }

  std::string MergedDir(const std::string& name) {
    const std::string dir = root_ + "/merged-" + name;
    testing::WriteMergedModel(testing::DefaultModelDir(), adapters_.at(name), dir);
    return dir;
  }

  std::unique_ptr<LoraRegistry> MakeRegistry(int slots, int cpu) {
    LoraRegistryOptions o;
    o.max_gpu_adapters = slots;
    o.max_cpu_adapters = cpu;
    o.max_lora_rank = 16;
    auto r = LoraRegistry::Create(gpu_.get(), model_->config(), o);
    EXPECT_TRUE(r.ok()) << r.status();
    return std::move(*r);
  }

  std::unique_ptr<Engine> MakeEngine(LlamaModel* model, LoraRegistry* lora, bool enforce_eager = false) {
    EngineOptions o;
    o.num_kv_blocks = 1024;
    o.max_num_seqs = 64;
    o.max_num_batched_tokens = 256;
    o.enforce_eager = enforce_eager;
    auto e = Engine::Create(model, tokenizer_.get(), o, lora);
    EXPECT_TRUE(e.ok()) << e.status();
    return std::move(*e);
  }

  GenerationRequest Greedy(const std::string& prompt, int max_tokens, const std::string& adapter = "") {
    GenerationRequest r;
    r.prompt_ids = tokenizer_->Encode(prompt, true);
    r.sampling.temperature = 0.0f;
    r.max_tokens = max_tokens;
    r.ignore_eos = true;
    r.adapter = adapter;
    return r;
  }

  std::vector<std::vector<int32_t>> RunAll(Engine& engine, const std::vector<GenerationRequest>& reqs) {
    std::vector<std::vector<int32_t>> ids(reqs.size());
    std::mutex mu;
    for (size_t i = 0; i < reqs.size(); ++i) {
      auto id = engine.Submit(reqs[i], [&, i](RequestOutput o) {
        std::lock_guard<std::mutex> lock(mu);
        EXPECT_TRUE(o.status.ok()) << o.status;
        ids[i].insert(ids[i].end(), o.token_ids.begin(), o.token_ids.end());
      });
      EXPECT_TRUE(id.ok()) << id.status();
    }
    engine.Drain();
    return ids;
  }

  // Teacher-forced logits of each sequence prompt + generated[:-1], all sequences in one
  // prefill batch: row i of sequence s predicts generated[s][i]. slots[s] is the adapter
  // slot of sequence s (-1: base model); `slots` empty: no LoRA at all.
  std::vector<Logits> TeacherForced(LlamaModel& model, const std::vector<std::vector<int32_t>>& prompts,
                                    const std::vector<std::vector<int32_t>>& generated,
                                    const std::vector<int32_t>& slots) {
    const int32_t bs = 16, per_seq = 8;
    auto kv = PagedKvStorage::Create(model.backend(), model.config(), per_seq * prompts.size(), bs);
    EXPECT_TRUE(kv.ok()) << kv.status();
    BatchLayout l;
    l.block_size = bs;
    l.max_blocks_per_seq = per_seq;
    l.query_start.push_back(0);
    for (size_t s = 0; s < prompts.size(); ++s) {
      std::vector<int32_t> seq = prompts[s];
      seq.insert(seq.end(), generated[s].begin(), generated[s].end() - 1);
      EXPECT_LE(seq.size(), size_t(bs * per_seq));
      for (size_t i = 0; i < seq.size(); ++i) {
        l.token_ids.push_back(seq[i]);
        l.positions.push_back(static_cast<int32_t>(i));
        l.slot_mapping.push_back(static_cast<int32_t>(s * per_seq * bs + i));
        if (!slots.empty()) l.lora_slots.push_back(slots[s]);
      }
      for (size_t i = prompts[s].size() - 1; i < seq.size(); ++i) l.logits_rows.push_back(l.query_start.back() + i);
      l.query_start.push_back(l.query_start.back() + static_cast<int32_t>(seq.size()));
      l.context_lens.push_back(static_cast<int32_t>(seq.size()));
      for (int32_t b = 0; b < per_seq; ++b) l.block_tables.push_back(static_cast<int32_t>(s * per_seq + b));
    }
    auto logits = model.Forward(l, **kv);
    EXPECT_TRUE(logits.ok()) << logits.status();
    const int64_t vocab = model.config().vocab_size;
    std::vector<Logits> out(prompts.size());
    size_t row = 0;
    for (size_t s = 0; s < prompts.size(); ++s) {
      for (size_t i = 0; i < generated[s].size() && logits.ok(); ++i, ++row)
        out[s].emplace_back(logits->begin() + row * vocab, logits->begin() + (row + 1) * vocab);
    }
    return out;
  }

  // Slot of a registered adapter, pinned only while the caller's forward runs (no
  // other user of the registry meanwhile).
  int32_t SlotOf(LoraRegistry& registry, const std::string& name) {
    std::vector<uint64_t> ids = {*registry.Resolve(name)};
    auto slots = registry.AcquireSlots(ids);
    EXPECT_TRUE(slots.ok()) << slots.status();
    registry.ReleaseSlots(ids);
    return slots.ok() ? (*slots)[0] : -1;
  }

  std::unique_ptr<Backend> cpu_, gpu_, merged_gpu_;
  std::unique_ptr<LlamaModel> model_;
  std::unique_ptr<Tokenizer> tokenizer_;
  std::string root_;
  std::map<std::string, testing::RandomAdapter> adapters_;
};

TEST_F(CudaLoraEngineTest, AdapterGreedyOutputFollowsTheMergedModel) {
  testing::RandomAdapterSpec full;  // every projection, rank 8, alpha 16, f32 file
  testing::RandomAdapterSpec partial;  // rsLoRA on a few projections, bf16 file
  partial.rank = 4;
  partial.alpha = 6;
  partial.use_rslora = true;
  partial.targets = {"q_proj", "v_proj", "gate_proj", "down_proj"};
  partial.seed = 2;
  partial.dtype = DType::kBF16;
  auto registry = MakeRegistry(2, 4);
  ASSERT_TRUE(registry->Load("full", WriteAdapter("full", full)).ok());
  ASSERT_TRUE(registry->Load("partial", WriteAdapter("partial", partial)).ok());
  auto engine = MakeEngine(model_.get(), registry.get());
  const std::vector<std::string> prompts = {"Once upon a time", "The little dog was", "Lily"};
  // "partial" first: its decode graphs skip the projections it leaves alone, so the
  // graphs must be captured again once "full" adapts those too.
  for (const std::string& name : {"partial", "full"}) {
    const std::string merged_dir = MergedDir(name);
    auto merged_gpu = Load(merged_dir, *merged_gpu_);
    auto merged_cpu = Load(merged_dir, *cpu_);
    auto merged_engine = MakeEngine(merged_gpu.get(), nullptr);
    for (const std::string& p : prompts) {
      const GenerationRequest with_adapter = Greedy(p, 32, name);
      const auto got = RunAll(*engine, {with_adapter})[0];
      const auto want = RunAll(*merged_engine, {Greedy(p, 32)})[0];
      ASSERT_EQ(want.size(), 32u);
      const std::vector<std::vector<int32_t>> prompt_ids = {with_adapter.prompt_ids}, gen = {want};
      const Logits lora = TeacherForced(*model_, prompt_ids, gen, {SlotOf(*registry, name)})[0];
      const Logits merged = TeacherForced(*merged_gpu, prompt_ids, gen, {})[0];
      const Logits f32 = TeacherForced(*merged_cpu, prompt_ids, gen, {})[0];
      const Logits base = TeacherForced(*model_, prompt_ids, gen, {})[0];
      const double err = MaxAbsDiff(lora, merged);
      // Both bf16 paths stay within bf16 error of the f32 merged model (the merged weights
      // are rounded to bf16 once more than the base ones), and the adapter moves the
      // logits far more than the two paths differ.
      EXPECT_LT(RelError(lora, f32), 5e-2) << name << ": " << p;
      EXPECT_LT(RelError(merged, f32), 5e-2) << name << ": " << p;
      EXPECT_GT(MaxAbsDiff(base, merged), 4 * err) << name << " barely changes the logits";
      const size_t tie = FirstNearTie(merged, 2 * err);
      for (size_t r = 0; r < merged.size(); ++r) {
        if (Margin(merged[r]) > 2 * err) EXPECT_EQ(Top1(lora[r]), want[r]) << name << ": " << p << " position " << r;
      }
      std::printf("%s / \"%s\": %zu of %zu greedy tokens as the merged model; max |logit diff| %.4f; first near-tie %zu\n",
                  name.c_str(), p.c_str(), CommonPrefix(got, want), want.size(), err, tie);
      EXPECT_GE(CommonPrefix(got, want), tie) << name << ": " << p << " diverged before the first near-tie";
    }
  }
  EXPECT_GT(engine->num_decode_graphs(), 0) << "adapter decode steps should replay captured graphs";
}

TEST_F(CudaLoraEngineTest, MixedBatchOf32AdaptersMatchesEachAlone) {
  const std::vector<std::string> prompts = {"Once upon a time", "Lily and Ben went to the park", "Tim", "The sun"};
  std::vector<GenerationRequest> reqs;
  auto registry = MakeRegistry(32, 40);
  for (int i = 0; i < 32; ++i) {
    testing::RandomAdapterSpec spec;
    spec.seed = 1000 + i;
    spec.rank = (i % 3 == 0) ? 16 : (i % 3 == 1 ? 4 : 8);
    spec.alpha = 2.0 * spec.rank;
    if (i % 2) spec.targets = {"q_proj", "o_proj", "up_proj", "down_proj"};
    const std::string name = "a" + std::to_string(i);
    ASSERT_TRUE(registry->Load(name, WriteAdapter(name, spec)).ok());
    reqs.push_back(Greedy(prompts[i % prompts.size()], 10 + i % 7, name));
    if (i % 4 == 0) reqs.push_back(Greedy(prompts[(i / 4) % prompts.size()], 12));  // base requests in between
  }
  std::vector<std::vector<int32_t>> alone;
  {
    auto engine = MakeEngine(model_.get(), registry.get());
    for (const auto& r : reqs) alone.push_back(RunAll(*engine, {r})[0]);
  }
  std::vector<std::vector<int32_t>> prompt_ids;
  std::vector<int32_t> slots;
  for (const auto& r : reqs) {
    prompt_ids.push_back(r.prompt_ids);
    slots.push_back(r.adapter.empty() ? -1 : SlotOf(*registry, r.adapter));
  }
  // Every sequence alone and all of them in one batch: the difference bounds what the
  // batch shape changes in a prefill. Decode steps of other batch sizes take other matmul
  // kernels, whose rounding differs by up to bf16's error, so the near-tie margin is at
  // least the bf16 error of this model's logits (CUDA against the f32 CPU reference).
  const std::vector<Logits> batched = TeacherForced(*model_, prompt_ids, alone, slots);
  std::vector<Logits> single;
  double err = 0;
  for (size_t i = 0; i < reqs.size(); ++i) {
    single.push_back(TeacherForced(*model_, {prompt_ids[i]}, {alone[i]}, {slots[i]})[0]);
    err = std::max(err, MaxAbsDiff(single[i], batched[i]));
  }
  const std::vector<Logits> base = TeacherForced(*model_, prompt_ids, alone, {});
  auto cpu_model = Load(testing::DefaultModelDir(), *cpu_);
  const std::vector<Logits> f32_base = TeacherForced(*cpu_model, prompt_ids, alone, {});
  double bf16_err = 0;
  for (size_t i = 0; i < reqs.size(); ++i) bf16_err = std::max(bf16_err, MaxAbsDiff(base[i], f32_base[i]));
  int changed = 0;
  for (size_t i = 0; i < reqs.size(); ++i) {
    ASSERT_EQ(alone[i].size(), static_cast<size_t>(reqs[i].max_tokens));
    if (!reqs[i].adapter.empty()) changed += MaxAbsDiff(base[i], single[i]) > 4 * err;
  }
  EXPECT_GE(changed, 24) << "most adapters should move their request's logits well past the batch-shape error";

  for (bool eager : {false, true}) {
    auto engine = MakeEngine(model_.get(), registry.get(), eager);
    const auto together = RunAll(*engine, reqs);
    if (!eager) EXPECT_GT(engine->num_decode_graphs(), 0) << "mixed adapter decode steps should replay graphs";
    int identical = 0;
    for (size_t i = 0; i < reqs.size(); ++i) {
      const size_t tie = FirstNearTie(single[i], 2 * std::max(err, bf16_err));
      const size_t same = CommonPrefix(together[i], alone[i]);
      identical += same == alone[i].size();
      EXPECT_GE(same, tie) << (eager ? "eager" : "graphs") << ", request " << i << " (adapter '" << reqs[i].adapter
                           << "') diverged before its first near-tie";
    }
    std::printf("%s: %d of %zu requests identical to their run alone; batch-shape logit error %.4f, bf16 %.4f\n",
                eager ? "eager" : "graphs", identical, reqs.size(), err, bf16_err);
    EXPECT_GE(identical, static_cast<int>(reqs.size()) * 3 / 4) << "most requests should not meet a near-tie";
  }
}

}  // namespace
}  // namespace tessera
