// The engine against the single-sequence reference: batching, chunked prefill, preemption
// and prefix caching change nothing in greedy outputs; cancellation frees everything.
#include "runtime/engine/engine.h"

#include <chrono>
#include <condition_variable>
#include <future>
#include <mutex>

#include "gtest/gtest.h"
#include "runtime/generation/single_sequence.h"
#include "tests/testing/paths.h"

namespace tessera {
namespace {

struct Collected {
  std::vector<int32_t> ids;
  std::string text;
  std::string finish_reason;
  Usage usage;
  int outputs = 0;
};

class EngineTest : public ::testing::Test {
 protected:
  void SetUp() override {
    backend_ = std::move(*CreateBackend("cpu"));
    auto m = LlamaModel::Load(testing::DefaultModelDir(), backend_.get());
    ASSERT_TRUE(m.ok()) << m.status();
    model_ = std::move(*m);
    tokenizer_ = std::move(*LoadTokenizer(testing::DefaultModelDir()));
  }

  std::unique_ptr<Engine> MakeEngine(EngineOptions o) {
    auto e = Engine::Create(model_.get(), tokenizer_.get(), o);
    EXPECT_TRUE(e.ok()) << e.status();
    return std::move(*e);
  }

  GenerationRequest Greedy(const std::string& prompt, int max_tokens) {
    GenerationRequest r;
    r.prompt_ids = tokenizer_->Encode(prompt, true);
    r.sampling.temperature = 0.0f;
    r.max_tokens = max_tokens;
    return r;
  }

  // Submits all and waits for all to finish.
  std::vector<Collected> RunAll(Engine& engine, const std::vector<GenerationRequest>& reqs) {
    std::vector<Collected> results(reqs.size());
    std::mutex mu;
    for (size_t i = 0; i < reqs.size(); ++i) {
      auto id = engine.Submit(reqs[i], [&, i](RequestOutput o) {
        std::lock_guard<std::mutex> lock(mu);
        Collected& c = results[i];
        c.ids.insert(c.ids.end(), o.token_ids.begin(), o.token_ids.end());
        c.text += o.text;
        c.outputs++;
        if (o.finished) {
          c.finish_reason = o.finish_reason;
          c.usage = o.usage;
        }
      });
      EXPECT_TRUE(id.ok()) << id.status();
    }
    engine.Drain();
    return results;
  }

  GenerationResult Alone(const GenerationRequest& r, std::optional<DType> kv_cache_dtype = std::nullopt) {
    SingleSequenceOptions o;
    o.kv_cache_dtype = kv_cache_dtype;
    o.max_tokens = r.max_tokens;
    o.sampling = r.sampling;
    o.stop_token_ids = model_->config().eos_token_ids;
    return *GenerateSingleSequence(*model_, tokenizer_.get(), r.prompt_ids, o);
  }

  std::vector<GenerationRequest> MixedRequests() {
    const char* prompts[] = {"Once upon a time", "Zoo", "", "The little dog", "Lily and Ben went to the park",
                             "One day, a big fish", "Tim", "Sue had a red ball. She"};
    std::vector<GenerationRequest> reqs;
    for (int i = 0; i < 8; ++i) reqs.push_back(Greedy(prompts[i], 20 + 9 * i));
    return reqs;
  }

  std::unique_ptr<Backend> backend_;
  std::unique_ptr<LlamaModel> model_;
  std::unique_ptr<Tokenizer> tokenizer_;
};

// Chunked prefill mixed with decodes, with request callbacks on the output thread or on the
// engine thread: every output equals the request run alone.
TEST_F(EngineTest, ConcurrentGreedyOutputsEqualEachRequestAlone) {
  for (bool output_thread : {true, false}) {
    SCOPED_TRACE(output_thread ? "output thread" : "callbacks on the engine thread");
    EngineOptions o;
    o.max_num_batched_tokens = 32;  // forces chunked prefill mixed with decodes
    o.max_num_seqs = 8;
    o.output_thread = output_thread;
    auto engine = MakeEngine(o);
    auto reqs = MixedRequests();
    auto got = RunAll(*engine, reqs);
    for (size_t i = 0; i < reqs.size(); ++i) {
      GenerationResult ref = Alone(reqs[i]);
      EXPECT_EQ(got[i].ids, ref.ids) << "request " << i;
      EXPECT_EQ(got[i].text, ref.text) << "request " << i;
      EXPECT_EQ(got[i].finish_reason, ref.finish_reason);
      EXPECT_EQ(got[i].usage.completion_tokens, static_cast<int>(ref.ids.size()));
      EXPECT_EQ(got[i].usage.prompt_tokens, static_cast<int>(reqs[i].prompt_ids.size()));
    }
    EXPECT_EQ(engine->Stats().kv.used_blocks, 0);
    EXPECT_EQ(engine->Stats().num_in_flight, 0);
  }
}

// Callbacks run on the engine's output thread: one that blocks holds back the outputs
// queued behind it, not the steps; once it returns everything arrives, in order, and a
// request counts as in flight until its final output is delivered.
TEST_F(EngineTest, ABlockedCallbackHoldsBackDeliveryButNotGeneration) {
  auto engine = MakeEngine(EngineOptions());
  std::mutex mu;
  std::condition_variable stepped;
  int steps = 0;
  engine->SetStepObserver([&](const StepInfo&) {
    std::lock_guard<std::mutex> lock(mu);
    ++steps;
    stepped.notify_all();
  });
  std::promise<void> release;
  std::shared_future<void> released = release.get_future().share();
  const auto reqs = MixedRequests();  // the longest generates 83 tokens
  std::vector<Collected> got(reqs.size());
  for (size_t i = 0; i < reqs.size(); ++i) {
    auto id = engine->Submit(reqs[i], [&, i](RequestOutput o) {
      if (i == 0 && got[0].outputs == 0) released.wait();
      Collected& c = got[i];  // only the output thread touches these
      c.ids.insert(c.ids.end(), o.token_ids.begin(), o.token_ids.end());
      c.text += o.text;
      c.outputs++;
      if (o.finished) c.finish_reason = o.finish_reason;
    });
    ASSERT_TRUE(id.ok()) << id.status();
  }
  {
    std::unique_lock<std::mutex> lock(mu);
    ASSERT_TRUE(stepped.wait_for(lock, std::chrono::seconds(120), [&] { return steps >= 40; }))
        << "the engine stopped stepping while a callback was blocked";
  }
  EXPECT_EQ(engine->Stats().num_in_flight, static_cast<int>(reqs.size()));  // nothing delivered yet
  release.set_value();
  engine->Drain();
  for (size_t i = 0; i < reqs.size(); ++i) {
    GenerationResult ref = Alone(reqs[i]);
    EXPECT_EQ(got[i].ids, ref.ids) << "request " << i;
    EXPECT_EQ(got[i].text, ref.text) << "request " << i;
    EXPECT_EQ(got[i].finish_reason, ref.finish_reason) << "request " << i;
  }
  EXPECT_EQ(engine->Stats().num_in_flight, 0);
}

TEST_F(EngineTest, PreemptionUnderATinyKvPoolChangesNoOutput) {
  EngineOptions o;
  o.num_kv_blocks = 12;  // 192 token slots for 8 requests of up to ~90 tokens each
  o.max_num_batched_tokens = 64;
  o.max_num_seqs = 8;
  auto engine = MakeEngine(o);
  auto reqs = MixedRequests();
  auto got = RunAll(*engine, reqs);
  EXPECT_GT(engine->Stats().num_preemptions_total, 0) << "the pool was meant to run out";
  for (size_t i = 0; i < reqs.size(); ++i) EXPECT_EQ(got[i].ids, Alone(reqs[i]).ids) << "request " << i;
  EXPECT_EQ(engine->Stats().kv.used_blocks, 0);
}

TEST_F(EngineTest, SeededSamplingIsBatchInvariant) {
  auto engine = MakeEngine(EngineOptions());
  std::vector<GenerationRequest> reqs = MixedRequests();
  for (size_t i = 0; i < reqs.size(); ++i) {
    reqs[i].sampling.temperature = 0.9f;
    reqs[i].sampling.top_p = 0.95f;
    reqs[i].sampling.seed = 100 + i;
  }
  auto together = RunAll(*engine, reqs);
  for (size_t i = 0; i < reqs.size(); ++i) EXPECT_EQ(together[i].ids, Alone(reqs[i]).ids) << "request " << i;
}

TEST_F(EngineTest, SharedPrefixReusesCachedBlocksWithIdenticalOutput) {
  auto engine = MakeEngine(EngineOptions());
  GenerationRequest a = Greedy("Once upon a time, there was a little girl named Lily. She loved to play outside in the park.", 30);
  auto first = RunAll(*engine, {a});
  auto second = RunAll(*engine, {a});
  EXPECT_EQ(first[0].ids, second[0].ids);
  EXPECT_EQ(first[0].usage.cached_prompt_tokens, 0);
  EXPECT_GE(second[0].usage.cached_prompt_tokens, 16);
  EXPECT_GT(engine->Stats().kv.prefix_hit_tokens, 0);
}

TEST_F(EngineTest, DifferentAdaptersNeverSharePrefixBlocks) {
  auto engine = MakeEngine(EngineOptions());
  GenerationRequest a = Greedy("Once upon a time, there was a little girl named Lily. She loved to play outside.", 5);
  a.adapter_id = 1;
  GenerationRequest b = a;
  b.adapter_id = 2;
  RunAll(*engine, {a});
  auto second = RunAll(*engine, {b});
  EXPECT_EQ(second[0].usage.cached_prompt_tokens, 0);
  auto third = RunAll(*engine, {a});
  EXPECT_GT(third[0].usage.cached_prompt_tokens, 0);
}

TEST_F(EngineTest, CancelStopsARequestAndFreesItsBlocks) {
  for (const char* overlap : {"off", "on"}) {
  SCOPED_TRACE(std::string("overlap outputs ") + overlap);
  EngineOptions o;
  o.overlap_outputs = overlap;
  auto engine = MakeEngine(o);
  std::promise<void> first_token;
  std::promise<std::string> done;
  bool signalled = false;
  auto id = engine->Submit(Greedy("Once upon a time", 400), [&](RequestOutput o) {
    if (!signalled) {
      signalled = true;
      first_token.set_value();
    }
    if (o.finished) done.set_value(o.finish_reason);
  });
  ASSERT_TRUE(id.ok());
  first_token.get_future().wait();
  engine->Cancel(*id);
  EXPECT_EQ(done.get_future().get(), "abort");
  engine->Drain();
  EXPECT_EQ(engine->Stats().kv.used_blocks, 0);
  }
}

TEST_F(EngineTest, StopStringsEndTheTextBeforeTheStopString) {
  auto engine = MakeEngine(EngineOptions());
  GenerationRequest r = Greedy("Once upon a time", 60);
  r.stop_strings = {"park"};
  auto got = RunAll(*engine, {r});
  EXPECT_EQ(got[0].finish_reason, "stop");
  EXPECT_EQ(got[0].text, ", there was a little girl named Lily. She loved to play outside in the ");
}

// Outputs made while the next step's forward runs are the outputs made between steps: the
// same tokens, text, finish reasons and usage for greedy, seeded, host-sampled (logprobs),
// stop-string and stop-token requests, although a stop string now ends its sequence one
// step later (the token it sampled meanwhile is dropped). Everything is freed at the end.
TEST_F(EngineTest, OverlappedOutputsEqualOutputsMadeBetweenSteps) {
  std::vector<GenerationRequest> reqs = MixedRequests();
  GenerationRequest stop_string = Greedy("Once upon a time", 60);
  stop_string.stop_strings = {"park"};
  reqs.push_back(stop_string);
  GenerationRequest early_stop = Greedy("One day", 60);
  early_stop.stop_strings = {"a"};  // found within the first few tokens
  reqs.push_back(early_stop);
  GenerationRequest seeded = Greedy("The little dog", 40);
  seeded.sampling.temperature = 0.9f;
  seeded.sampling.seed = 7;
  reqs.push_back(seeded);
  GenerationRequest logprobs = Greedy("Tim", 30);
  logprobs.sampling.logprobs = 2;
  reqs.push_back(logprobs);
  GenerationRequest stop_token = Greedy("Lily and Ben went to the park", 50);
  stop_token.stop_token_ids = {tokenizer_->Encode(" the", false).back()};
  reqs.push_back(stop_token);
  for (bool output_thread : {true, false}) {
    SCOPED_TRACE(output_thread ? "output thread" : "callbacks on the engine thread");
    std::vector<Collected> runs[2];
    int overlapped_steps[2] = {0, 0};
    for (int overlap = 0; overlap < 2; ++overlap) {
      EngineOptions o;
      o.max_num_batched_tokens = 32;  // chunked prefill mixed with decodes
      o.max_num_seqs = 16;
      o.output_thread = output_thread;
      o.overlap_outputs = overlap ? "on" : "off";
      auto engine = MakeEngine(o);
      engine->SetStepObserver([&](const StepInfo& s) { overlapped_steps[overlap] += s.outputs_overlapped ? 1 : 0; });
      runs[overlap] = RunAll(*engine, reqs);
      EXPECT_EQ(engine->Stats().kv.used_blocks, 0);
      EXPECT_EQ(engine->Stats().num_in_flight, 0);
    }
    EXPECT_EQ(overlapped_steps[0], 0);
    EXPECT_GT(overlapped_steps[1], 0);
    for (size_t i = 0; i < reqs.size(); ++i) {
      SCOPED_TRACE(::testing::Message() << "request " << i);
      EXPECT_EQ(runs[1][i].ids, runs[0][i].ids);
      EXPECT_EQ(runs[1][i].text, runs[0][i].text);
      EXPECT_EQ(runs[1][i].finish_reason, runs[0][i].finish_reason);
      EXPECT_EQ(runs[1][i].usage.completion_tokens, runs[0][i].usage.completion_tokens);
      EXPECT_EQ(runs[1][i].usage.completion_tokens, static_cast<int>(runs[1][i].ids.size()));
    }
    EXPECT_EQ(runs[1][reqs.size() - 5].finish_reason, "stop");  // the stop strings did fire
    EXPECT_EQ(runs[1][reqs.size() - 4].finish_reason, "stop");
    EXPECT_EQ(runs[1][reqs.size() - 1].finish_reason, "stop");
  }
}

TEST_F(EngineTest, UnknownOverlapModeIsRejectedByName) {
  EngineOptions o;
  o.overlap_outputs = "sometimes";
  auto e = Engine::Create(model_.get(), tokenizer_.get(), o);
  ASSERT_FALSE(e.ok());
  EXPECT_NE(e.status().message().find("--overlap-outputs 'sometimes'"), std::string::npos) << e.status();
}

TEST_F(EngineTest, RejectsRequestsThatCanNeverRun) {
  EngineOptions o;
  o.num_kv_blocks = 4;
  auto engine = MakeEngine(o);
  GenerationRequest r = Greedy("Once", 200);
  EXPECT_EQ(engine->Submit(r, nullptr).status().code(), absl::StatusCode::kInvalidArgument);
  r.max_tokens = 0;
  EXPECT_EQ(engine->Submit(r, nullptr).status().code(), absl::StatusCode::kInvalidArgument);
  r.max_tokens = 5;
  r.prompt_ids = std::vector<int32_t>(600, 5);
  EXPECT_EQ(engine->Submit(r, nullptr).status().code(), absl::StatusCode::kInvalidArgument);
  r.prompt_ids = {1, 99999};
  EXPECT_EQ(engine->Submit(r, nullptr).status().code(), absl::StatusCode::kInvalidArgument);
  r.prompt_ids = {1};
  r.sampling.top_p = 0;
  EXPECT_EQ(engine->Submit(r, nullptr).status().code(), absl::StatusCode::kInvalidArgument);
}

// An FP8 cache quantizes each token's K and V on their own, so chunked prefill beside
// decodes, prefix caching and preemption still change nothing: every output equals the
// request run alone over an FP8 cache.
TEST_F(EngineTest, Fp8KvCacheOutputsEqualEachRequestAloneOverAnFp8Cache) {
  for (int blocks : {0, 12}) {  // 12: preemptions
    SCOPED_TRACE("kv blocks " + std::to_string(blocks));
    EngineOptions o;
    o.kv_cache_dtype = "fp8";
    o.num_kv_blocks = blocks;
    o.max_num_batched_tokens = 32;
    o.max_num_seqs = 8;
    auto engine = MakeEngine(o);
    auto reqs = MixedRequests();
    reqs.push_back(reqs[4]);  // a repeated prompt reads its cached FP8 blocks
    auto got = RunAll(*engine, reqs);
    if (blocks > 0) EXPECT_GT(engine->Stats().num_preemptions_total, 0) << "the pool was meant to run out";
    for (size_t i = 0; i < reqs.size(); ++i) {
      EXPECT_EQ(got[i].ids, Alone(reqs[i], DType::kF8E4M3).ids) << "request " << i;
    }
    EXPECT_EQ(engine->Stats().kv.used_blocks, 0);
  }
}

TEST_F(EngineTest, Fp8KvCacheFitsTheBlocksItsBytesAllow) {
  const int64_t budget = 1 << 20;
  EngineOptions o;
  o.kv_cache_memory_bytes = budget;
  auto f32 = MakeEngine(o);
  o.kv_cache_dtype = "fp8";
  auto fp8 = MakeEngine(o);
  const ModelConfig& c = model_->config();
  // E4M3 codes and one f32 scale per token and kv head, against f32 values.
  EXPECT_EQ(fp8->num_kv_blocks(), budget / PagedKvStorage::BytesPerBlock(c, o.block_size, DType::kF8E4M3));
  EXPECT_EQ(f32->num_kv_blocks(), budget / PagedKvStorage::BytesPerBlock(c, o.block_size, DType::kF32));
  EXPECT_EQ(PagedKvStorage::BytesPerBlock(c, o.block_size, DType::kF8E4M3),
            2ull * c.num_hidden_layers * o.block_size * c.num_key_value_heads * (c.head_dim + 4));
  EXPECT_GT(fp8->num_kv_blocks(), 2 * f32->num_kv_blocks());
}

TEST_F(EngineTest, UnknownKvCacheDtypeIsRejectedByName) {
  EngineOptions o;
  o.kv_cache_dtype = "int4";
  auto e = Engine::Create(model_.get(), tokenizer_.get(), o);
  ASSERT_FALSE(e.ok());
  EXPECT_EQ(e.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(e.status().message().find("--kv-cache-dtype 'int4'"), std::string::npos) << e.status();
}

}  // namespace
}  // namespace tessera
