// LoRA through the engine on the default model: a request with an adapter generates what
// the base model with that adapter merged into its weights generates; mixed batches of
// many adapters (with enough slots, and with few slots that must be reused) match each
// request alone; adapters load while streams run; unload refuses new requests only.
#include <filesystem>
#include <future>
#include <mutex>
#include <thread>

#include "gtest/gtest.h"
#include "runtime/engine/engine.h"
#include "runtime/generation/single_sequence.h"
#include "runtime/lora/lora_registry.h"
#include "tests/lora/lora_test_util.h"
#include "tests/testing/paths.h"

namespace tessera {
namespace {

struct Collected {
  std::vector<int32_t> ids;
  std::string finish_reason;
  absl::Status status;
};

class LoraEngineTest : public ::testing::Test {
 protected:
  void SetUp() override {
    backend_ = std::move(*CreateBackend("cpu"));
    auto m = LlamaModel::Load(testing::DefaultModelDir(), backend_.get());
    ASSERT_TRUE(m.ok()) << m.status();
    model_ = std::move(*m);
    tokenizer_ = std::move(*LoadTokenizer(testing::DefaultModelDir()));
    root_ = testing::MakeTempDir("lora_engine");
  }

  void TearDown() override { std::filesystem::remove_all(root_); }

  // Writes a random adapter; returns its directory.
  std::string WriteAdapter(const std::string& name, const testing::RandomAdapterSpec& spec) {
    adapters_[name] = testing::MakeRandomAdapter(model_->config(), spec);
    const std::string dir = root_ + "/" + name;
    testing::WritePeftAdapter(dir, adapters_[name].config_json, adapters_[name].tensors, spec.dtype);
    return dir;
  }

  // The base model with `name` merged into its weights.
  std::unique_ptr<LlamaModel> MergedModel(const std::string& name) {
    const std::string dir = root_ + "/merged-" + name;
    testing::WriteMergedModel(testing::DefaultModelDir(), adapters_.at(name), dir);
    auto m = LlamaModel::Load(dir, backend_.get());
    EXPECT_TRUE(m.ok()) << m.status();
    return std::move(*m);
  }

  std::unique_ptr<LoraRegistry> MakeRegistry(int slots, int cpu) {
    LoraRegistryOptions o;
    o.max_gpu_adapters = slots;
    o.max_cpu_adapters = cpu;
    o.max_lora_rank = 16;
    auto r = LoraRegistry::Create(backend_.get(), model_->config(), o);
    EXPECT_TRUE(r.ok()) << r.status();
    return std::move(*r);
  }

  std::unique_ptr<Engine> MakeEngine(LoraRegistry* lora, int max_num_seqs = 64) {
    EngineOptions o;
    o.num_kv_blocks = 1024;
    o.max_num_seqs = max_num_seqs;
    o.max_num_batched_tokens = 256;
    auto e = Engine::Create(model_.get(), tokenizer_.get(), o, lora);
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

  std::vector<Collected> RunAll(Engine& engine, const std::vector<GenerationRequest>& reqs) {
    std::vector<Collected> results(reqs.size());
    std::mutex mu;
    for (size_t i = 0; i < reqs.size(); ++i) {
      auto id = engine.Submit(reqs[i], [&, i](RequestOutput o) {
        std::lock_guard<std::mutex> lock(mu);
        results[i].ids.insert(results[i].ids.end(), o.token_ids.begin(), o.token_ids.end());
        if (o.finished) {
          results[i].finish_reason = o.finish_reason;
          results[i].status = o.status;
        }
      });
      EXPECT_TRUE(id.ok()) << id.status();
    }
    engine.Drain();
    return results;
  }

  // Greedy tokens of `model` alone (no engine, no adapter).
  std::vector<int32_t> Reference(LlamaModel& model, const GenerationRequest& r) {
    SingleSequenceOptions o;
    o.max_tokens = r.max_tokens;
    o.sampling = r.sampling;
    auto g = GenerateSingleSequence(model, tokenizer_.get(), r.prompt_ids, o);
    EXPECT_TRUE(g.ok()) << g.status();
    return g.ok() ? g->ids : std::vector<int32_t>();
  }

  // Last-position logits of one prompt run as a single prefill, with every token in `slot`.
  std::vector<float> PrefillLogits(LlamaModel& model, const std::vector<int32_t>& ids, int32_t slot) {
    auto kv = PagedKvStorage::Create(*backend_, model.config(), 8, 16);
    EXPECT_TRUE(kv.ok());
    BatchLayout l;
    l.block_size = 16;
    l.max_blocks_per_seq = 8;
    for (int32_t i = 0; i < static_cast<int32_t>(ids.size()); ++i) {
      l.token_ids.push_back(ids[i]);
      l.positions.push_back(i);
      l.slot_mapping.push_back(i);
      if (slot >= 0) l.lora_slots.push_back(slot);
    }
    l.query_start = {0, static_cast<int32_t>(ids.size())};
    l.context_lens = {static_cast<int32_t>(ids.size())};
    for (int32_t b = 0; b < 8; ++b) l.block_tables.push_back(b);
    l.logits_rows = {static_cast<int32_t>(ids.size()) - 1};
    auto logits = model.Forward(l, **kv);
    EXPECT_TRUE(logits.ok()) << logits.status();
    return logits.ok() ? *logits : std::vector<float>();
  }

  std::unique_ptr<Backend> backend_;
  std::unique_ptr<LlamaModel> model_;
  std::unique_ptr<Tokenizer> tokenizer_;
  std::string root_;
  std::map<std::string, testing::RandomAdapter> adapters_;
};

double MaxAbsDiff(const std::vector<float>& a, const std::vector<float>& b) {
  EXPECT_EQ(a.size(), b.size());
  double m = 0;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) m = std::max(m, std::abs(double(a[i]) - b[i]));
  return m;
}

TEST_F(LoraEngineTest, AdapterOutputEqualsTheMergedModel) {
  testing::RandomAdapterSpec full;  // every projection, rank 8, alpha 16, f32
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
  auto engine = MakeEngine(registry.get());
  const std::vector<std::string> prompts = {"Once upon a time", "The little dog was"};
  for (const std::string& name : {"full", "partial"}) {
    auto merged = MergedModel(name);
    for (const std::string& p : prompts) {
      GenerationRequest req = Greedy(p, 24, name);
      auto got = RunAll(*engine, {req});
      ASSERT_EQ(got[0].finish_reason, "length") << got[0].status;
      EXPECT_EQ(got[0].ids, Reference(*merged, req)) << name << ": " << p;
      EXPECT_NE(got[0].ids, Reference(*model_, req)) << name << " should change the output for: " << p;
    }
    // Logits, not just argmaxes: the adapter path against the merged weights.
    const uint64_t id = *registry->Resolve(name);
    std::vector<uint64_t> ids = {id};
    auto slots = registry->AcquireSlots(ids);
    ASSERT_TRUE(slots.ok()) << slots.status();
    auto prompt = tokenizer_->Encode(prompts[0], true);
    auto with_lora = PrefillLogits(*model_, prompt, (*slots)[0]);
    registry->ReleaseSlots(ids);
    auto merged_logits = PrefillLogits(*merged, prompt, -1);
    auto base_logits = PrefillLogits(*model_, prompt, -1);
    EXPECT_LT(MaxAbsDiff(with_lora, merged_logits), 1e-3) << name;
    EXPECT_GT(MaxAbsDiff(base_logits, merged_logits), 0.1) << name << " barely changes the logits";
  }
}

TEST_F(LoraEngineTest, MixedBatchOf32AdaptersMatchesEachAloneWithManyOrFewSlots) {
  const std::vector<std::string> prompts = {"Once upon a time", "Lily and Ben went to the park", "Tim", "The sun"};
  std::vector<GenerationRequest> reqs;
  std::vector<std::string> dirs;
  for (int i = 0; i < 32; ++i) {
    testing::RandomAdapterSpec spec;
    spec.seed = 1000 + i;
    spec.rank = (i % 3 == 0) ? 2 : (i % 3 == 1 ? 4 : 8);
    if (i % 2) spec.targets = {"q_proj", "o_proj", "up_proj", "down_proj"};
    dirs.push_back(WriteAdapter("a" + std::to_string(i), spec));
    reqs.push_back(Greedy(prompts[i % prompts.size()], 8 + i % 5, "a" + std::to_string(i)));
    if (i % 4 == 0) reqs.push_back(Greedy(prompts[(i / 4) % prompts.size()], 10));  // base requests in between
  }
  auto load_all = [&](LoraRegistry& r) {
    for (int i = 0; i < 32; ++i) ASSERT_TRUE(r.Load("a" + std::to_string(i), dirs[i]).ok());
  };
  // Each request alone, one at a time.
  auto many = MakeRegistry(32, 40);
  load_all(*many);
  std::vector<Collected> alone;
  {
    auto engine = MakeEngine(many.get());
    for (const auto& r : reqs) alone.push_back(RunAll(*engine, {r})[0]);
  }
  int changed = 0;
  for (size_t i = 0; i < reqs.size(); ++i) {
    ASSERT_EQ(alone[i].finish_reason, "length") << alone[i].status;
    if (!reqs[i].adapter.empty()) changed += alone[i].ids != Reference(*model_, reqs[i]);
  }
  EXPECT_GE(changed, 24) << "most adapters should change their request's output";

  {
    auto engine = MakeEngine(many.get());
    auto together = RunAll(*engine, reqs);
    for (size_t i = 0; i < reqs.size(); ++i) EXPECT_EQ(together[i].ids, alone[i].ids) << "32 slots, request " << i;
  }
  auto few = MakeRegistry(4, 40);
  load_all(*few);
  {
    auto engine = MakeEngine(few.get());
    auto together = RunAll(*engine, reqs);
    for (size_t i = 0; i < reqs.size(); ++i) EXPECT_EQ(together[i].ids, alone[i].ids) << "4 slots, request " << i;
  }
  EXPECT_GT(few->Stats().slot_evictions, 0) << "4 slots for 32 adapters must be reused";
  EXPECT_EQ(many->Stats().slot_evictions, 0);
}

TEST_F(LoraEngineTest, LoadsAdaptersWhileServing100Streams) {
  testing::RandomAdapterSpec s0, s1, s_new, s_racing;
  s0.seed = 11;
  s1.seed = 12;
  s_new.seed = 13;
  s_racing.seed = 14;
  auto registry = MakeRegistry(4, 8);
  ASSERT_TRUE(registry->Load("s0", WriteAdapter("s0", s0)).ok());
  ASSERT_TRUE(registry->Load("s1", WriteAdapter("s1", s1)).ok());
  const std::string new_dir = WriteAdapter("new", s_new);
  const std::string racing_dir = WriteAdapter("racing", s_racing);
  auto engine = MakeEngine(registry.get(), 32);

  const std::vector<std::string> prompts = {"Once upon a time", "The cat", "Sue had a red ball. She", "Zoo"};
  std::mutex mu;
  std::vector<Collected> results(100);
  std::promise<void> first_output, loaded;
  std::shared_future<void> loaded_f = loaded.get_future().share();
  bool first_seen = false;
  for (int i = 0; i < 100; ++i) {
    const std::string adapter = i % 3 == 0 ? "" : (i % 3 == 1 ? "s0" : "s1");
    auto id = engine->Submit(Greedy(prompts[i % prompts.size()], 6 + i % 7, adapter), [&, i](RequestOutput o) {
      bool hold = false;
      {
        std::lock_guard<std::mutex> lock(mu);
        results[i].ids.insert(results[i].ids.end(), o.token_ids.begin(), o.token_ids.end());
        if (o.finished) {
          results[i].finish_reason = o.finish_reason;
          results[i].status = o.status;
        }
        if (!first_seen) {
          first_seen = true;
          hold = true;
        }
      }
      // The engine thread waits here, mid-stream, until "new" is loaded by another thread:
      // the load must need nothing from the engine.
      if (hold) {
        first_output.set_value();
        loaded_f.wait();
      }
    });
    ASSERT_TRUE(id.ok()) << id.status();
  }
  std::thread loader([&] {
    first_output.get_future().wait();
    EXPECT_TRUE(registry->Load("new", new_dir).ok());
    loaded.set_value();
    // This one races with running steps (slot uploads, retains, releases).
    EXPECT_TRUE(registry->Load("racing", racing_dir).ok());
  });
  loaded_f.wait();
  EXPECT_GT(engine->Stats().num_in_flight, 0);
  GenerationRequest next = Greedy("Once upon a time", 16, "new");
  auto served = RunAll(*engine, {next});
  loader.join();
  engine->Drain();
  for (int i = 0; i < 100; ++i) {
    EXPECT_EQ(results[i].finish_reason, "length") << "stream " << i << ": " << results[i].status;
    EXPECT_EQ(results[i].ids.size(), static_cast<size_t>(6 + i % 7)) << "stream " << i;
  }
  EXPECT_EQ(served[0].ids, Reference(*MergedModel("new"), next));
  GenerationRequest racing = Greedy("Once upon a time", 16, "racing");
  EXPECT_EQ(RunAll(*engine, {racing})[0].ids, Reference(*MergedModel("racing"), racing));
}

TEST_F(LoraEngineTest, UnloadRefusesNewRequestsWhileInFlightOnesFinish) {
  testing::RandomAdapterSpec spec;
  spec.seed = 21;
  auto registry = MakeRegistry(2, 4);
  ASSERT_TRUE(registry->Load("a", WriteAdapter("a", spec)).ok());
  auto engine = MakeEngine(registry.get());
  GenerationRequest req = Greedy("Once upon a time", 20, "a");
  std::promise<void> started, unloaded;
  std::shared_future<void> unloaded_f = unloaded.get_future().share();
  Collected got;
  bool first = true;
  auto id = engine->Submit(req, [&](RequestOutput o) {
    got.ids.insert(got.ids.end(), o.token_ids.begin(), o.token_ids.end());
    if (o.finished) got.finish_reason = o.finish_reason;
    if (first) {
      first = false;
      started.set_value();
      unloaded_f.wait();
    }
  });
  ASSERT_TRUE(id.ok());
  started.get_future().wait();
  ASSERT_TRUE(registry->Unload("a").ok());
  EXPECT_EQ(engine->Submit(Greedy("Tim", 4, "a"), nullptr).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(registry->Stats().num_adapters, 1) << "the running request still holds it";
  unloaded.set_value();
  engine->Drain();
  EXPECT_EQ(got.finish_reason, "length");
  EXPECT_EQ(got.ids, Reference(*MergedModel("a"), req));
  EXPECT_EQ(registry->Stats().num_adapters, 0) << "released with its last request";
}

TEST_F(LoraEngineTest, UnknownAdaptersAreNotFoundAtSubmit) {
  auto registry = MakeRegistry(1, 1);
  auto engine = MakeEngine(registry.get());
  EXPECT_EQ(engine->Submit(Greedy("Tim", 4, "nope"), nullptr).status().code(), absl::StatusCode::kNotFound);
  GenerationRequest by_id = Greedy("Tim", 4);
  by_id.adapter_id = 77;
  EXPECT_EQ(engine->Submit(by_id, nullptr).status().code(), absl::StatusCode::kNotFound);
  engine.reset();
  auto plain = MakeEngine(nullptr);
  EXPECT_EQ(plain->Submit(Greedy("Tim", 4, "x"), nullptr).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(plain->Stats().num_in_flight, 0);
}

}  // namespace
}  // namespace tessera
