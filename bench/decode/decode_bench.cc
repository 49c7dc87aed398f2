// Decode throughput through the engine against the memory roofline measured in the same
// run: a device-to-device copy gives the bandwidth, and a decode step must read the
// weights once plus each sequence's KV cache, so
//   roofline tok/s = batch * bandwidth / (weight bytes read + batch * KV bytes read).
//   tessera-bench-decode --model DIR --shape NAME [--batches 1,8,32] [--prompt-len 128]
//       [--new-tokens 256] [--out FILE] [engine flags, e.g. --device cuda --enforce-eager]
//       [--lora-dir DIR --num-adapters N [--max-lora-rank R]] [--profile-batches 1,256]
// --profile-batches runs one eager forward per batch between cudaProfilerStart/Stop (for
// ncu --profile-from-start off) and exits; with --mixed-prefills P that forward also
// prefills P prompts of --prompt-len tokens (a serving step), and its wall time is printed.
// --trace-batches 1,4 (CUDA) records 20 decode forwards per batch, eager then graph
// replays, with CUPTI and prints where their device time goes: per kernel, the time by which
// its calls moved the end of finished work forward (kernels that start early under a
// programmatic launch are charged only for what they add), and the time no kernel ran.
// With --lora-dir (adapters DIR/a0 .. DIR/a{N-1}, e.g. from tessera-make-random-adapter
// --count N) each batch also runs with sequence i on adapter i mod N, in the same engine,
// and the bench prints the LoRA rate over the base rate.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <map>
#include <mutex>
#include <random>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "nlohmann/json.hpp"
#include "runtime/engine/engine.h"
#include "runtime/lora/lora_registry.h"
#include "runtime/model/decode_graph_runner.h"
#include "server/cli/args.h"
#include "server/cli/engine_flags.h"
#include "runtime/common/status_macros.h"

#ifdef TESSERA_BENCH_CUDA
#include <cuda_profiler_api.h>
#include <cuda_runtime.h>

#include "bench/decode/kernel_trace.h"
#endif

namespace {

using namespace tessera;
using Clock = std::chrono::steady_clock;

struct Device {
  std::string name = "cpu";
  double copy_gbs = 0.0;  // bytes read + written per second / 1e9
};

// Median of several 1 GiB device-to-device copies, counting bytes read and written.
Device MeasureDevice(bool cuda) {
  Device d;
#ifdef TESSERA_BENCH_CUDA
  if (!cuda) return d;
  cudaDeviceProp prop{};
  cudaGetDeviceProperties(&prop, 0);
  d.name = prop.name;
  const size_t bytes = size_t{1} << 30;
  void *a = nullptr, *b = nullptr;
  if (cudaMalloc(&a, bytes) != cudaSuccess || cudaMalloc(&b, bytes) != cudaSuccess) return d;
  cudaMemset(a, 1, bytes);
  cudaEvent_t e0, e1;
  cudaEventCreate(&e0);
  cudaEventCreate(&e1);
  std::vector<float> ms;
  for (int i = 0; i < 12; ++i) {
    cudaEventRecord(e0);
    cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice);
    cudaEventRecord(e1);
    cudaEventSynchronize(e1);
    float t = 0;
    cudaEventElapsedTime(&t, e0, e1);
    if (i >= 2) ms.push_back(t);  // the first copies warm the clocks up
  }
  std::sort(ms.begin(), ms.end());
  d.copy_gbs = 2.0 * bytes / (ms[ms.size() / 2] * 1e-3) / 1e9;
  cudaEventDestroy(e0);
  cudaEventDestroy(e1);
  cudaFree(a);
  cudaFree(b);
#else
  (void)cuda;
#endif
  return d;
}

struct RunResult {
  double decode_tokens_per_s = 0;
  int64_t tokens = 0;
  // From submitting the batch until every request has its first token: the prompts'
  // prefill (in chunks of the engine's batched-token budget) and the first sampling.
  double prefill_seconds = 0;
};

// Submits `batch` requests of random prompts at once and measures the decode rate from
// the moment every request has its first token until the last one finishes.
// Request i uses adapters[i % adapters.size()] (none when `adapters` is empty).
absl::StatusOr<RunResult> RunBatch(Engine& engine, int batch, int prompt_len, int new_tokens, int64_t vocab,
                                   uint64_t seed, const std::vector<std::string>& adapters = {}) {
  std::mt19937 rng(static_cast<uint32_t>(seed));
  std::mutex mu;
  std::vector<Clock::time_point> first(batch);
  std::vector<std::vector<Clock::time_point>> stamps(batch);
  const auto submitted = Clock::now();
  for (int i = 0; i < batch; ++i) {
    GenerationRequest r;
    for (int t = 0; t < prompt_len; ++t) r.prompt_ids.push_back(3 + static_cast<int32_t>(rng() % (vocab - 3)));
    r.sampling.temperature = 0.0f;
    r.max_tokens = new_tokens;
    r.ignore_eos = true;
    if (!adapters.empty()) r.adapter = adapters[i % adapters.size()];
    auto id = engine.Submit(r, [&, i](RequestOutput o) {
      const auto now = Clock::now();
      std::lock_guard<std::mutex> lock(mu);
      for (size_t k = 0; k < o.token_ids.size(); ++k) stamps[i].push_back(now);
    });
    if (!id.ok()) return id.status();
  }
  engine.Drain();
  Clock::time_point ready = Clock::time_point::min(), end = Clock::time_point::min();
  for (const auto& s : stamps) {
    if (s.empty()) return absl::InternalError("a request produced no tokens");
    ready = std::max(ready, s.front());
    end = std::max(end, s.back());
  }
  RunResult r;
  for (const auto& s : stamps) r.tokens += std::count_if(s.begin(), s.end(), [&](auto t) { return t > ready; });
  const double secs = std::chrono::duration<double>(end - ready).count();
  r.decode_tokens_per_s = secs > 0 ? r.tokens / secs : 0.0;
  r.prefill_seconds = std::chrono::duration<double>(ready - submitted).count();
  return r;
}


// Seconds per decode forward of `batch` sequences at context `ctx` straight through the
// model (graph replay, or eager), no engine: the step's device time plus the index upload.
// Sequence s uses adapter slot lora_slots[s % size] when `lora_slots` is not empty. With
// `probe` kProfile, the one step after the warm-up runs between cudaProfilerStart/Stop (for
// `ncu --profile-from-start off`) and its wall time is returned; with kTrace the timed steps
// are recorded by CUPTI and their kernel account printed.
// With `prefills` > 0 the step is a serving-style mixed one (eager only): those sequences
// follow the decodes, each a first prompt chunk of `prefill_len` tokens.
enum class Probe { kNone, kProfile, kTrace };
absl::StatusOr<double> ForwardSeconds(LlamaModel& model, DType kv_dtype, int batch, int ctx, int max_model_len,
                                      bool graphs, const std::vector<int32_t>& lora_slots = {}, Probe probe = Probe::kNone,
                                      int prefills = 0, int prefill_len = 0) {
  const int bs = 16, per_seq = (ctx + bs) / bs, per_prefill = (prefill_len + bs - 1) / bs;
  ASSIGN_OR_RETURN(auto kv, PagedKvStorage::Create(model.backend(), model.config(),
                                                   batch * per_seq + prefills * per_prefill, bs, kv_dtype));
  BatchLayout l;
  l.block_size = bs;
  l.max_blocks_per_seq = std::max(per_seq, per_prefill);
  l.query_start.push_back(0);
  for (int s = 0; s < batch; ++s) {
    l.token_ids.push_back(5 + s);
    l.positions.push_back(ctx);
    l.slot_mapping.push_back(s * per_seq * bs + ctx);
    l.query_start.push_back(s + 1);
    l.context_lens.push_back(ctx + 1);
    for (int b = 0; b < l.max_blocks_per_seq; ++b) l.block_tables.push_back(b < per_seq ? s * per_seq + b : 0);
    l.logits_rows.push_back(s);
    if (!lora_slots.empty()) l.lora_slots.push_back(lora_slots[s % lora_slots.size()]);
  }
  for (int p = 0; p < prefills; ++p) {
    const int first_block = batch * per_seq + p * per_prefill;
    for (int t = 0; t < prefill_len; ++t) {
      l.token_ids.push_back(7 + (p * 31 + t) % 400);
      l.positions.push_back(t);
      l.slot_mapping.push_back((first_block + t / bs) * bs + t % bs);
      if (!lora_slots.empty()) l.lora_slots.push_back(lora_slots[(batch + p) % lora_slots.size()]);
    }
    l.query_start.push_back(l.query_start.back() + prefill_len);
    l.context_lens.push_back(prefill_len);
    for (int b = 0; b < l.max_blocks_per_seq; ++b) l.block_tables.push_back(b < per_prefill ? first_block + b : 0);
    l.logits_rows.push_back(l.query_start.back() - 1);
  }
  if (prefills > 0) graphs = false;
  std::unique_ptr<DecodeGraphRunner> runner;
  if (graphs) {
    DecodeGraphOptions o;
    o.buckets = {1};
    while (o.buckets.back() < batch) o.buckets.push_back(o.buckets.back() * 2);
    o.max_model_len = max_model_len;
    o.block_size = bs;
    o.reserve_tokens = o.reserve_logits = std::max(256, o.buckets.back());
    ASSIGN_OR_RETURN(runner, DecodeGraphRunner::Create(&model, kv.get(), o));
  }
  auto step = [&]() -> absl::Status {
    auto logits = graphs ? runner->Run(l) : model.ForwardLogits(l, *kv);
    if (!logits.ok()) return logits.status();
    return model.backend().Synchronize();
  };
  for (int i = 0; i < 3; ++i) RETURN_IF_ERROR(step());
  const int reps = probe == Probe::kProfile ? 1 : 20;
#ifdef TESSERA_BENCH_CUDA
  if (probe == Probe::kProfile) cudaProfilerStart();
  if (probe == Probe::kTrace) RETURN_IF_ERROR(bench::StartKernelTrace());
#endif
  std::vector<uint64_t> step_starts;
  const auto t0 = Clock::now();
  for (int i = 0; i < reps; ++i) {
#ifdef TESSERA_BENCH_CUDA
    if (probe == Probe::kTrace) step_starts.push_back(bench::KernelTraceTimestamp());
#endif
    RETURN_IF_ERROR(step());
  }
  const double seconds = std::chrono::duration<double>(Clock::now() - t0).count() / reps;
#ifdef TESSERA_BENCH_CUDA
  if (probe == Probe::kProfile) cudaProfilerStop();
  if (probe == Probe::kTrace) {
    ASSIGN_OR_RETURN(std::vector<bench::KernelSpan> spans, bench::StopKernelTrace());
    const size_t kernels = spans.size();
    std::printf("== kernel account: %s decode forward, batch %d, context %d, %d steps (%zu kernels); wall %.1f us "
                "per step (host time between steps left out below)\n%s",
                graphs ? "graph" : "eager", batch, ctx, reps, kernels, seconds * 1e6,
                bench::FormatKernelTimeline(bench::AccountKernelSteps(std::move(spans), step_starts), reps).c_str());
  }
#endif
  return seconds;
}

}  // namespace

int main(int argc, char** argv) {
  std::set<std::string> values = {"shape",    "batches",      "prompt-len",   "new-tokens",
                                  "out",      "lora-dir",     "num-adapters", "max-lora-rank",
                                  "profile-batches", "mixed-prefills", "trace-batches"};
  std::set<std::string> switches;
  cli::AddEngineFlags(&values, &switches);
  auto args = cli::Args::Parse(std::vector<std::string>(argv + 1, argv + argc), values, switches);
  if (!args.ok() || !args->Has("model")) {
    std::fprintf(stderr, "usage: tessera-bench-decode --model DIR --shape NAME [--batches 1,8] [--prompt-len 128] "
                         "[--new-tokens 256] [--out FILE] [--lora-dir DIR --num-adapters N] "
                         "[--profile-batches 1,256 [--mixed-prefills P]] [--trace-batches 1,4] [engine flags]\n");
    return 2;
  }
  auto opts = cli::ParseEngineOptions(*args);
  if (!opts.ok()) {
    std::fprintf(stderr, "%s\n", std::string(opts.status().message()).c_str());
    return 2;
  }
  const int prompt_len = static_cast<int>(*args->GetInt("prompt-len", 128));
  const int new_tokens = static_cast<int>(*args->GetInt("new-tokens", 256));
  std::vector<int> batches;
  for (auto part : absl::StrSplit(args->GetOr("batches", "1"), ',')) {
    int v;
    if (absl::SimpleAtoi(part, &v) && v > 0) batches.push_back(v);
  }
  auto backend = CreateBackend(args->GetOr("device", "auto"));
  if (!backend.ok()) {
    std::fprintf(stderr, "%s\n", std::string(backend.status().message()).c_str());
    return 1;
  }
  const Device dev = MeasureDevice((*backend)->kind() == DeviceKind::kCuda);
  ModelLoadOptions load;
  load.dtype = args->GetOr("dtype", "auto");
  const auto t_load = Clock::now();
  auto model = LlamaModel::Load(*args->Get("model"), backend->get(), load);
  if (!model.ok()) {
    std::fprintf(stderr, "%s\n", std::string(model.status().message()).c_str());
    return 1;
  }
  std::fprintf(stderr, "loaded in %.1f s\n", std::chrono::duration<double>(Clock::now() - t_load).count());
  const ModelConfig& c = (*model)->config();
  const int max_batch = *std::max_element(batches.begin(), batches.end());
  EngineOptions eo = *opts;
  eo.max_num_seqs = std::max(eo.max_num_seqs, max_batch);
  if (eo.max_model_len == 0) eo.max_model_len = std::min<int32_t>(static_cast<int32_t>(c.max_position_embeddings), 4096);
  const DType kv_dtype = KvCacheDTypeOf(eo, **backend);
  // Adapters (optional): all in device slots at once, one per sequence of a batch.
  std::unique_ptr<LoraRegistry> lora;
  std::vector<std::string> adapter_names;
  std::vector<int32_t> adapter_slots;
  if (args->Has("lora-dir")) {
    LoraRegistryOptions lo;
    lo.max_gpu_adapters = lo.max_cpu_adapters = static_cast<int32_t>(*args->GetInt("num-adapters", 32));
    lo.max_lora_rank = static_cast<int32_t>(*args->GetInt("max-lora-rank", 16));
    auto r = LoraRegistry::Create(backend->get(), c, lo);
    if (!r.ok()) {
      std::fprintf(stderr, "%s\n", std::string(r.status().message()).c_str());
      return 1;
    }
    lora = std::move(*r);
    std::vector<uint64_t> ids;
    for (int i = 0; i < lo.max_gpu_adapters; ++i) {
      adapter_names.push_back("a" + std::to_string(i));
      auto id = lora->Load(adapter_names.back(), *args->Get("lora-dir") + "/" + adapter_names.back());
      if (!id.ok()) {
        std::fprintf(stderr, "%s\n", std::string(id.status().message()).c_str());
        return 1;
      }
      ids.push_back(*id);
    }
    auto slots = lora->AcquireSlots(ids);  // uploads every adapter now
    if (!slots.ok()) {
      std::fprintf(stderr, "%s\n", std::string(slots.status().message()).c_str());
      return 1;
    }
    adapter_slots = *slots;
    lora->ReleaseSlots(ids);
    (*model)->SetLoraTables(&lora->tables());
  }
  const int mid_ctx = prompt_len + new_tokens / 2;
  if (args->Has("profile-batches")) {
    for (auto part : absl::StrSplit(*args->Get("profile-batches"), ',')) {
      int batch;
      if (!absl::SimpleAtoi(part, &batch) || batch <= 0) continue;
      const int prefills = static_cast<int>(*args->GetInt("mixed-prefills", 0));
      if (prefills > 0) {  // the mixed step's wall time over 20 runs first, outside the profile
        auto t = ForwardSeconds(**model, kv_dtype, batch, mid_ctx, eo.max_model_len, false, adapter_slots, Probe::kNone,
                                prefills, prompt_len);
        if (!t.ok()) {
          std::fprintf(stderr, "%s\n", std::string(t.status().message()).c_str());
          return 1;
        }
        std::fprintf(stderr, "eager mixed step, %d decodes at context %d + %d prefills of %d tokens: %.3f ms\n", batch,
                     mid_ctx, prefills, prompt_len, *t * 1e3);
      }
      auto s = ForwardSeconds(**model, kv_dtype, batch, mid_ctx, eo.max_model_len, /*graphs=*/false, adapter_slots,
                              Probe::kProfile, prefills, prompt_len);
      if (!s.ok()) {
        std::fprintf(stderr, "%s\n", std::string(s.status().message()).c_str());
        return 1;
      }
      std::fprintf(stderr, "profiled one eager step at batch %d, context %d (+%d prefills of %d): %.3f ms\n", batch,
                   mid_ctx, prefills, prompt_len, *s * 1e3);
    }
    return 0;
  }
  if (args->Has("trace-batches")) {
#ifdef TESSERA_BENCH_CUDA
    if ((*backend)->kind() != DeviceKind::kCuda) {
      std::fprintf(stderr, "--trace-batches records CUDA kernels: run it with --device cuda\n");
      return 2;
    }
    for (auto part : absl::StrSplit(*args->Get("trace-batches"), ',')) {
      int batch;
      if (!absl::SimpleAtoi(part, &batch) || batch <= 0) {
        std::fprintf(stderr, "--trace-batches takes positive batch sizes, not '%s'\n", std::string(part).c_str());
        return 2;
      }
      for (bool graphs : {false, true}) {
        if (graphs && !(*backend)->SupportsGraphs()) continue;
        auto s = ForwardSeconds(**model, kv_dtype, batch, mid_ctx, eo.max_model_len, graphs, adapter_slots,
                                Probe::kTrace);
        if (!s.ok()) {
          std::fprintf(stderr, "%s\n", std::string(s.status().message()).c_str());
          return 1;
        }
      }
    }
    return 0;
#else
    std::fprintf(stderr, "--trace-batches needs a build with the CUDA backend\n");
    return 2;
#endif
  }
  // Forward-only rates first (their KV cache is freed before the engine takes its pool).
  struct Forward {
    double graph = 0, eager = 0, lora_graph = 0, lora_eager = 0;  // seconds per step
  };
  std::map<int, Forward> forward;
  const bool graphs = (*backend)->SupportsGraphs();
  for (int batch : batches) {
    Forward& f = forward[batch];
    for (auto [out, use_graphs, slots] : {std::tuple<double*, bool, const std::vector<int32_t>*>{&f.graph, graphs, nullptr},
                                          {&f.eager, false, nullptr},
                                          {&f.lora_graph, graphs, &adapter_slots},
                                          {&f.lora_eager, false, &adapter_slots}}) {
      if (slots != nullptr && slots->empty()) continue;
      auto t = ForwardSeconds(**model, kv_dtype, batch, mid_ctx, eo.max_model_len, use_graphs,
                              slots ? *slots : std::vector<int32_t>());
      if (!t.ok()) {
        std::fprintf(stderr, "%s\n", std::string(t.status().message()).c_str());
        return 1;
      }
      *out = *t;
    }
  }
  (*backend)->ClearGraphs();
  auto engine = Engine::Create(model->get(), nullptr, eo, lora.get());
  if (!engine.ok()) {
    std::fprintf(stderr, "%s\n", std::string(engine.status().message()).c_str());
    return 1;
  }

  // Bytes a decode step must read: every weight except the embedding table (one row
  // per token), plus each sequence's K and V at the mean context of the run.
  const size_t es = DTypeSize((*model)->weight_dtype());
  const double embed_bytes = c.tie_word_embeddings ? 0.0 : static_cast<double>(c.vocab_size) * c.hidden_size * es;
  const double weight_read = static_cast<double>((*model)->weight_bytes()) - embed_bytes;
  const double mean_ctx = prompt_len + new_tokens / 2.0;
  // Bytes of K and V (with their scales in an FP8 cache) one sequence reads per step.
  const double kv_read = static_cast<double>(PagedKvStorage::BytesPerBlock(c, 1, kv_dtype)) * mean_ctx;
  const std::string shape = args->GetOr("shape", *args->Get("model"));
  nlohmann::json results = nlohmann::json::array();
  std::printf("device %s, copy bandwidth %.0f GB/s, %s: %.2f GB of weights read per step, %.1f MB KV per sequence\n",
              dev.name.c_str(), dev.copy_gbs, shape.c_str(), weight_read / 1e9, kv_read / 1e6);
  for (int batch : batches) {
    // Warm-up at this batch size: captures its decode graph and sizes every workspace.
    auto warm = RunBatch(**engine, batch, prompt_len, 8, c.vocab_size, 1);
    if (!warm.ok()) {
      std::fprintf(stderr, "%s\n", std::string(warm.status().message()).c_str());
      return 1;
    }
    auto run = RunBatch(**engine, batch, prompt_len, new_tokens, c.vocab_size, 2 + batch);
    if (!run.ok()) {
      std::fprintf(stderr, "%s\n", std::string(run.status().message()).c_str());
      return 1;
    }
    const double roofline = dev.copy_gbs > 0 ? batch * dev.copy_gbs * 1e9 / (weight_read + batch * kv_read) : 0.0;
    const Forward& f = forward[batch];
    const double graph_s = f.graph, eager_s = f.eager;
    std::printf("%-10s batch %4d: %9.1f tok/s decode   roofline %9.1f tok/s   %5.1f%% of roofline   "
                "(forward alone: %.3f ms graph, %.3f ms eager, %.1f%% of roofline); prefill of %d x %d tokens "
                "%.1f ms (%.0f tok/s)\n",
                shape.c_str(), batch, run->decode_tokens_per_s, roofline,
                roofline > 0 ? 100.0 * run->decode_tokens_per_s / roofline : 0.0, graph_s * 1e3, eager_s * 1e3,
                roofline > 0 ? 100.0 * batch / graph_s / roofline : 0.0, batch, prompt_len,
                run->prefill_seconds * 1e3, batch * prompt_len / std::max(run->prefill_seconds, 1e-9));
    std::fflush(stdout);
    nlohmann::json row = {{"device", dev.name},
                          {"shape", shape},
                          {"dtype", std::string(DTypeName((*model)->weight_dtype()))},
                          {"batch", batch},
                          {"prompt_len", prompt_len},
                          {"new_tokens", new_tokens},
                          {"tokens_per_s", run->decode_tokens_per_s},
                          {"prefill_seconds", run->prefill_seconds},
                          {"prefill_tokens_per_s", batch * prompt_len / std::max(run->prefill_seconds, 1e-9)},
                          {"roofline_tokens_per_s", roofline},
                          {"fraction_of_roofline", roofline > 0 ? run->decode_tokens_per_s / roofline : 0.0},
                          {"copy_bandwidth_gbs", dev.copy_gbs},
                          {"weight_bytes_read_per_step", weight_read},
                          {"kv_bytes_read_per_sequence_step", kv_read},
                          {"kv_cache_dtype", std::string(DTypeName(kv_dtype))},
                          {"cuda_graphs", !eo.enforce_eager && (*engine)->num_decode_graphs() > 0},
                          {"forward_only_graph_ms", graph_s * 1e3},
                          {"forward_only_eager_ms", eager_s * 1e3},
                          {"forward_only_graph_tokens_per_s", batch / graph_s}};
    if (lora) {
      // The same batch with sequence i on adapter i mod N, right after the base run.
      auto warm_lora = RunBatch(**engine, batch, prompt_len, 8, c.vocab_size, 1, adapter_names);
      auto with = warm_lora.ok() ? RunBatch(**engine, batch, prompt_len, new_tokens, c.vocab_size, 2 + batch, adapter_names)
                                 : warm_lora;
      if (!with.ok()) {
        std::fprintf(stderr, "%s\n", std::string(with.status().message()).c_str());
        return 1;
      }
      const int distinct = std::min<int>(batch, static_cast<int>(adapter_names.size()));
      const double ratio = with->decode_tokens_per_s / run->decode_tokens_per_s;
      std::printf("%-10s batch %4d: %9.1f tok/s decode with %d distinct adapters (rank <= %d): %.1f%% of the base "
                  "rate   (forward alone: %.3f ms graph = %.1f%% of base, %.3f ms eager)\n",
                  shape.c_str(), batch, with->decode_tokens_per_s, distinct, lora->tables().max_rank, 100.0 * ratio,
                  f.lora_graph * 1e3, 100.0 * graph_s / f.lora_graph, f.lora_eager * 1e3);
      std::fflush(stdout);
      row["lora_adapters"] = distinct;
      row["lora_dir"] = *args->Get("lora-dir");
      row["lora_tokens_per_s"] = with->decode_tokens_per_s;
      row["lora_over_base"] = ratio;
      row["lora_forward_only_graph_ms"] = f.lora_graph * 1e3;
      row["lora_forward_only_eager_ms"] = f.lora_eager * 1e3;
      row["lora_forward_only_over_base"] = graph_s / f.lora_graph;
    }
    results.push_back(std::move(row));
  }
  if (args->Has("out")) std::ofstream(*args->Get("out")) << results.dump(2) << "\n";
  return 0;
}
