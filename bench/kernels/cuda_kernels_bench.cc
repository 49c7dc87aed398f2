// CUDA kernel micro-benchmark: paged decode attention bandwidth (K/V bytes read / time)
// against a device-to-device copy measured in the same run, prefill attention and
// cuBLASLt GEMM throughput for 7B shapes, the skinny GEMM kernel against cuBLASLt
// at decode batch sizes, and the per-token elementwise kernels of a layer. Prints a table, writes JSON (argv[1]); argv[2] (optional) names
// the sections to run: attention, gemm, gemv, elementwise (default: all).
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "kernels/cuda/cuda_backend.h"
#include "absl/strings/str_split.h"
#include "bench/kernels/cuda_bench_util.h"
#include "kernels/cuda/cuda_attention_args.h"
#include "kernels/cuda/cuda_backend_impl.h"
#include "kernels/cuda/cuda_launch.h"
#include "kernels/cuda/cuda_matmul.h"
#include "nlohmann/json.hpp"

namespace tessera {
namespace {

using bench::Must;
using bench::MustOk;

// Median seconds of `reps` timed calls of fn (after `warmup` untimed ones).
template <typename Fn>
double MedianSeconds(cudaStream_t stream, int warmup, int reps, Fn fn) {
  return bench::MedianSeconds(stream, warmup, reps, 1, fn);
}

// Median seconds per call of fn over a captured graph of 20 calls (GPU time only).
template <typename Fn>
double GraphSeconds(cudaStream_t stream, Fn fn) {
  return bench::GraphMedianSeconds(stream, 3, 15, 20, fn);
}

// Fills device memory with random bf16 values: one random 64 MiB chunk, tiled by copies.
void FillRandom(CudaBackend& be, void* dst, size_t bytes, std::mt19937& rng) {
  static std::vector<uint16_t> chunk;
  static DeviceBuffer dev_chunk;
  const size_t chunk_bytes = size_t{64} << 20;
  if (chunk.empty()) {
    chunk.resize(chunk_bytes / 2);
    std::normal_distribution<float> d(0.0f, 1.0f);
    for (uint16_t& x : chunk) x = F32ToBF16(d(rng));
    dev_chunk = Must(be.Allocate(chunk_bytes));
    MustOk(be.CopyToDevice(dev_chunk.data(), chunk.data(), chunk_bytes));
  }
  for (size_t off = 0; off < bytes; off += chunk_bytes) {
    CHECK_CUDA(cudaMemcpyAsync(static_cast<char*>(dst) + off, dev_chunk.data(), std::min(chunk_bytes, bytes - off),
                               cudaMemcpyDeviceToDevice, be.stream()));
  }
  MustOk(be.Synchronize());
}


struct AttnShape {
  const char* name;
  int hq, hk, d;
};

// Seconds per layer of decode (or prefill when qlen > 1) attention over `layers` separate
// caches so the working set exceeds L2, like a real forward pass going through the layers:
// a captured graph of the layers (GPU time, as decode steps run), and eagerly launched
// (host launch cost included) in *eager_seconds.
// With fp8, the caches hold E4M3 codes and a scale per (slot, kv head).
// Decode attention over FP8 caches under a chosen tensor-core layout instead of the
// planner's (TESSERA_ATTN_FP8_LAYOUTS=1 times each): -1 the planner's own.
// kWarp*: one warp per (sequence, kv head) (DecodeWarpKernel) with tokens as rows.
enum Fp8Layout { kPlanned = -1, kHeadRows = 0, kTokenRows2 = 1, kTokenRows3 = 2, kWarp2 = 3, kWarp3 = 4 };

double TimeAttention(CudaBackend& be, const AttnShape& s, int batch, int ctx, int qlen, std::mt19937& rng,
                     size_t* kv_bytes_per_layer, double* eager_seconds = nullptr, bool fp8 = false,
                     int layout_choice = kPlanned, int forced_splits = 0, bool flip_early = false) {
  const int bs = 16;
  const int blocks_per_seq = (ctx + bs - 1) / bs;
  const int64_t blocks = static_cast<int64_t>(batch) * blocks_per_seq;
  const size_t slots = static_cast<size_t>(blocks) * bs;
  const size_t layer_bytes = slots * s.hk * s.d * (fp8 ? 1 : 2);  // one of K or V
  const size_t scale_bytes = fp8 ? slots * s.hk * sizeof(float) : 0;
  const int layers = static_cast<int>(std::clamp<size_t>((size_t{1} << 30) / (2 * layer_bytes) + 1, 1, 32));
  DeviceBuffer kpool = Must(be.Allocate(layer_bytes * layers)), vpool = Must(be.Allocate(layer_bytes * layers));
  FillRandom(be, kpool.data(), layer_bytes * layers, rng);
  FillRandom(be, vpool.data(), layer_bytes * layers, rng);
  DeviceBuffer kscale, vscale;
  if (fp8) {
    kscale = Must(be.Allocate(scale_bytes * layers));
    vscale = Must(be.Allocate(scale_bytes * layers));
    // Random codes (a few are NaN: timing only) and finite scales (0x3c3c3c3c ~ 0.0115).
    CHECK_CUDA(cudaMemset(kscale.data(), 0x3c, scale_bytes * layers));
    CHECK_CUDA(cudaMemset(vscale.data(), 0x3c, scale_bytes * layers));
  }

  BatchLayout layout;
  layout.block_size = bs;
  layout.max_blocks_per_seq = blocks_per_seq;
  std::vector<int32_t> perm(blocks);
  std::iota(perm.begin(), perm.end(), 0);
  std::shuffle(perm.begin(), perm.end(), rng);
  layout.query_start.push_back(0);
  for (int sq = 0; sq < batch; ++sq) {
    for (int i = 0; i < qlen; ++i) {
      layout.token_ids.push_back(0);
      layout.positions.push_back(ctx - qlen + i);
      layout.slot_mapping.push_back(0);
    }
    layout.query_start.push_back(layout.query_start.back() + qlen);
    layout.context_lens.push_back(ctx);
    layout.block_tables.insert(layout.block_tables.end(), perm.begin() + sq * blocks_per_seq,
                               perm.begin() + (sq + 1) * blocks_per_seq);
  }
  const int n = layout.num_tokens();
  DeviceBatch db = Must(be.UploadBatch(layout));
  DeviceBuffer q = Must(be.Allocate(static_cast<size_t>(n) * s.hq * s.d * 2));
  DeviceBuffer out = Must(be.Allocate(static_cast<size_t>(n) * s.hq * s.d * 2));
  FillRandom(be, q.data(), q.bytes(), rng);
  AttentionParams p{s.hq, s.hk, s.d, 1.0f / std::sqrt(static_cast<float>(s.d))};
  TensorView qv = q.View(DType::kBF16, n, s.hq * s.d), ov = out.View(DType::kBF16, n, s.hq * s.d);
  // A forced layout launches the decode kernel directly with the planner's split of the
  // context and that layout.
  cuda::DecodePlan forced;
  DeviceBuffer forced_ws;
  if (layout_choice != kPlanned || forced_splits > 0 || flip_early) {
    KvLayerView kv{kpool.data(), vpool.data(), fp8 ? DType::kF8E4M3 : DType::kBF16, static_cast<int32_t>(blocks), bs,
                   s.hk, s.d};
    kv.k_scale = static_cast<float*>(kscale.data());
    kv.v_scale = static_cast<float*>(vscale.data());
    cuda::AttentionArgs a = cuda::AttentionArgsOf(qv, db, kv, p, ov);
    a.max_query_len = 1;
    a.max_context_len = ctx;
    cuda::DecodePlan layout;
    layout.token_rows = layout_choice != kHeadRows;
    layout.ring_stages = layout_choice == kTokenRows2 || layout_choice == kWarp2 ? 2 : 3;
    layout.warp_items = layout_choice == kWarp2 || layout_choice == kWarp3;
    forced = layout_choice != kPlanned ? cuda::PlanDecodeAttention(a, be.num_sms(), &layout)
                                       : cuda::PlanDecodeAttention(a, be.num_sms());
    if (forced_splits > 0 && !forced.warp_items) {
      // The planner's plan with another split count: every CTA one partition of equal length.
      const int subs = (ctx + 15) / 16;
      forced.splits = forced.grid_splits = forced_splits;
      forced.partition_tokens = std::max((subs + forced_splits - 1) / forced_splits * 16, forced.min_partition_tokens);
      forced.fused_merge = true;
      forced.workspace_bytes = cuda::kDecodeCounterBytes +
                               sizeof(float) * static_cast<size_t>(batch) * s.hq * forced_splits * (s.d + 2);
    }
    if (flip_early) forced.early_stream = !forced.early_stream;
    if (forced.workspace_bytes > 0) {
      forced_ws = Must(be.Allocate(forced.workspace_bytes));
      CHECK_CUDA(cudaMemset(forced_ws.data(), 0, cuda::kDecodeCounterBytes));
    }
  }
  auto pass = [&] {
    for (int l = 0; l < layers; ++l) {
      KvLayerView kv{static_cast<char*>(kpool.data()) + l * layer_bytes, static_cast<char*>(vpool.data()) + l * layer_bytes,
                     fp8 ? DType::kF8E4M3 : DType::kBF16, static_cast<int32_t>(blocks), bs, s.hk, s.d};
      if (fp8) {
        kv.k_scale = reinterpret_cast<float*>(static_cast<char*>(kscale.data()) + l * scale_bytes);
        kv.v_scale = reinterpret_cast<float*>(static_cast<char*>(vscale.data()) + l * scale_bytes);
      }
      if (layout_choice == kPlanned && forced_splits == 0 && !flip_early) {
        be.PagedAttention(qv, db, kv, p, ov);
        continue;
      }
      cuda::AttentionArgs a = cuda::AttentionArgsOf(qv, db, kv, p, ov);
      a.max_query_len = 1;
      a.max_context_len = ctx;
      cuda::LaunchDecodeAttention(a, forced, static_cast<float*>(forced_ws.data()), be.stream());
    }
  };
  const double t = bench::GraphMedianSeconds(be.stream(), 2, 7, 1, pass) / layers;
  MustOk(be.Synchronize());
  if (eager_seconds) *eager_seconds = MedianSeconds(be.stream(), 1, 5, pass) / layers;
  *kv_bytes_per_layer = 2 * static_cast<size_t>(batch) * ctx * s.hk * (fp8 ? s.d + sizeof(float) : s.d * 2);
  return t;
}

}  // namespace
}  // namespace tessera

int main(int argc, char** argv) {
  using namespace tessera;
  const std::string json_path = argc > 1 ? argv[1] : "bench_kernels.json";
  const std::string sections = argc > 2 ? argv[2] : "attention,gemm,gemv,elementwise";
  auto wants = [&](const char* name) { return sections.find(name) != std::string::npos; };
  if (CudaDeviceCount() == 0) {
    std::printf("no CUDA device visible; nothing to measure\n");
    return 0;
  }
  std::unique_ptr<CudaBackend> be = Must(CudaBackend::Create(CudaBackendOptions{}));
  cudaDeviceProp prop{};
  CHECK_CUDA(cudaGetDeviceProperties(&prop, 0));
  const std::string device = prop.name;
  std::mt19937 rng(42);
  nlohmann::json rows = nlohmann::json::array();

  const double copy_bw = bench::CopyBandwidthGbs(*be, size_t{2} << 30);
  std::printf("device %s, %d SMs; device-to-device copy %.0f GB/s (read + write)\n\n", device.c_str(),
              prop.multiProcessorCount, copy_bw);

  if (wants("attention")) {
  std::printf("%-34s %6s %7s %10s %10s %8s %10s\n", "paged decode attention (graph)", "batch", "ctx", "us/layer", "GB/s",
              "of copy", "eager us");
  const AttnShape shapes[] = {{"llama7b 32q/32kv D128", 32, 32, 128}, {"gqa 32q/8kv D128", 32, 8, 128}};
  // TESSERA_ATTN_CASES="kv_heads:ctx:batch,..." limits the decode cases (e.g. for a profiler).
  const bench::CaseFilter only("TESSERA_ATTN_CASES");
  auto selected = [&](int kv_heads, int ctx, int batch) {
    return only.Selected(std::to_string(kv_heads) + ":" + std::to_string(ctx) + ":" + std::to_string(batch));
  };
  // TESSERA_ATTN_KV=bf16|fp8 limits the cache formats (both by default).
  const char* kv_env = std::getenv("TESSERA_ATTN_KV");
  const std::string kv_only = kv_env ? kv_env : "";
  // TESSERA_ATTN_FP8_LAYOUTS=1 also times the FP8 cases under each tensor-core layout.
  const char* layouts_env = std::getenv("TESSERA_ATTN_FP8_LAYOUTS");
  const bool fp8_layouts = layouts_env != nullptr && std::string(layouts_env) == "1";
  // TESSERA_ATTN_SPLITS="8,16,33" also times the four-warp CTA plans with those split counts.
  std::vector<int> split_counts;
  if (const char* v = std::getenv("TESSERA_ATTN_SPLITS")) {
    for (const std::string& x : std::vector<std::string>(absl::StrSplit(v, ',', absl::SkipEmpty()))) {
      split_counts.push_back(std::atoi(x.c_str()));
    }
  }
  // TESSERA_ATTN_FLIP_EARLY=1 also times each planned case with the other choice of
  // DecodePlan::early_stream (starting the stream before the previous kernel ends).
  // =2 times the other choice before the planned one as well (so neither is always first).
  const char* flip_env = std::getenv("TESSERA_ATTN_FLIP_EARLY");
  const bool flip_early = flip_env != nullptr && (std::string(flip_env) == "1" || std::string(flip_env) == "2");
  const bool flip_first = flip_early && std::string(flip_env) == "2";
  for (bool fp8 : {false, true}) {
  if (!kv_only.empty() && kv_only != (fp8 ? "fp8" : "bf16")) continue;
  for (const AttnShape& s : shapes) {
    for (int ctx : {128, 192, 256, 1024, 4096, 16384}) {
      for (int batch : {1, 4, 16, 64, 256, 512}) {
        // Short contexts (serving's 128 -> 128 tokens) also at serving's batches.
        if ((ctx < 256 && batch < 64) || (ctx > 256 && batch > 64)) continue;
        if (!selected(s.hk, ctx, batch)) continue;
        for (int layout : {kPlanned, kHeadRows, kTokenRows2, kTokenRows3, kWarp2, kWarp3}) {
          if (layout != kPlanned && !(fp8 && fp8_layouts)) break;
          auto time_flipped = [&] {
            size_t b2 = 0;
            double e2 = 0;
            const double t2 = TimeAttention(*be, s, batch, ctx, 1, rng, &b2, &e2, fp8, kPlanned, 0, true);
            std::printf("%-34s %6d %7d %10.1f %10.0f %7.1f%% %10.1f\n",
                        (std::string(s.name) + (fp8 ? " fp8" : "") + " [early flipped]").c_str(), batch, ctx,
                        t2 * 1e6, b2 / t2 / 1e9, 100 * b2 / t2 / 1e9 / copy_bw, e2 * 1e6);
          };
          if (layout == kPlanned && flip_first) time_flipped();
          size_t bytes = 0;
          double eager = 0;
          const double t = TimeAttention(*be, s, batch, ctx, 1, rng, &bytes, &eager, fp8, layout);
          const double bw = bytes / t / 1e9;
          const char* layout_name[] = {"planned", "head rows", "token rows, ring 2", "token rows, ring 3",
                                       "warp, token rows, ring 2", "warp, token rows, ring 3"};
          const std::string name = std::string(s.name) + (fp8 ? " fp8 KV" : "") +
                                   (layout != kPlanned ? std::string(" [") + layout_name[layout + 1] + "]" : "");
          std::printf("%-34s %6d %7d %10.1f %10.0f %7.1f%% %10.1f\n", name.c_str(), batch, ctx, t * 1e6, bw,
                      100 * bw / copy_bw, eager * 1e6);
          if (layout == kPlanned && flip_early) time_flipped();
          for (int sc : layout == kPlanned ? split_counts : std::vector<int>{}) {
            size_t b2 = 0;
            double e2 = 0;
            const double t2 = TimeAttention(*be, s, batch, ctx, 1, rng, &b2, &e2, fp8, kPlanned, sc);
            std::printf("%-34s %6d %7d %10.1f %10.0f %7.1f%% %10.1f\n",
                        (std::string(s.name) + (fp8 ? " fp8" : "") + " [splits " + std::to_string(sc) + "]").c_str(),
                        batch, ctx, t2 * 1e6, b2 / t2 / 1e9, 100 * b2 / t2 / 1e9 / copy_bw, e2 * 1e6);
          }
          rows.push_back({{"device", device}, {"kernel", "decode_attention"},
                          {"shape", std::string(s.name) + " ctx " + std::to_string(ctx)}, {"batch", batch},
                          {"kv_cache_dtype", fp8 ? "float8_e4m3" : "bfloat16"}, {"layout", layout_name[layout + 1]},
                          {"context", ctx}, {"us", t * 1e6}, {"eager_us", eager * 1e6}, {"bandwidth_gbs", bw},
                          {"copy_bandwidth_gbs", copy_bw}, {"fraction", bw / copy_bw}, {"timing", "cuda graph"}});
        }
      }
    }
  }
  }

  std::printf("\n%-34s %6s %7s %10s %10s\n", "prefill attention (causal)", "seqs", "tokens", "us/layer", "TFLOP/s");
  for (const AttnShape& s : shapes) {
    for (int qlen : {512, 2048}) {
      if (only.active()) break;
      size_t bytes = 0;
      const int batch = 4;
      const double t = TimeAttention(*be, s, batch, qlen, qlen, rng, &bytes);
      // q·k and p·v over the causal triangle: 4 * D flops per (query, visible key, head).
      const double flops = 4.0 * s.hq * s.d * batch * (static_cast<double>(qlen) * (qlen + 1) / 2);
      std::printf("%-34s %6d %7d %10.1f %10.1f\n", s.name, batch, qlen, t * 1e6, flops / t / 1e12);
      rows.push_back({{"device", device}, {"kernel", "prefill_attention"},
                      {"shape", std::string(s.name) + " qlen " + std::to_string(qlen)}, {"batch", batch},
                      {"us", t * 1e6}, {"tflops", flops / t / 1e12}, {"bandwidth_gbs", bytes / t / 1e9},
                      {"copy_bandwidth_gbs", copy_bw}, {"fraction", bytes / t / 1e9 / copy_bw}});
    }
  }

  }

  if (wants("gemm")) {
  std::printf("\n%-34s %6s %10s %10s %10s %8s\n", "gemm bf16 (y = x W^T)", "n", "us", "TFLOP/s", "GB/s", "of copy");
  struct Gemm { const char* name; int64_t k, m; };
  for (Gemm g : {Gemm{"7B qkv 4096->12288", 4096, 12288}, Gemm{"7B o 4096->4096", 4096, 4096},
                 Gemm{"7B gate_up 4096->22016", 4096, 22016}, Gemm{"7B down 11008->4096", 11008, 4096},
                 Gemm{"square 8192", 8192, 8192}}) {
    for (int64_t n : {1, 16, 64, 256, 512, 1024, 2048, 8192}) {
      if ((n == 8192) != (g.k == 8192)) continue;
      const size_t wbytes = static_cast<size_t>(g.k) * g.m * 2;
      const int copies = static_cast<int>(std::clamp<size_t>((size_t{256} << 20) / wbytes + 1, 1, 8));
      DeviceBuffer w = Must(be->Allocate(wbytes * copies));
      DeviceBuffer x = Must(be->Allocate(static_cast<size_t>(n) * g.k * 2));
      DeviceBuffer y = Must(be->Allocate(static_cast<size_t>(n) * g.m * 2));
      FillRandom(*be, w.data(), wbytes * copies, rng);
      FillRandom(*be, x.data(), x.bytes(), rng);
      int next = 0;
      const double t = GraphSeconds(be->stream(), [&] {
        LinearWeight lw{TensorView{static_cast<char*>(w.data()) + (next++ % copies) * wbytes, DType::kBF16, g.m, g.k}};
        be->Matmul(x.View(DType::kBF16, n, g.k), lw, y.View(DType::kBF16, n, g.m));
      });
      MustOk(be->Synchronize());
      const double tflops = 2.0 * n * g.k * g.m / t / 1e12;
      const double bw = (wbytes + x.bytes() + y.bytes()) / t / 1e9;
      std::printf("%-34s %6ld %10.1f %10.1f %10.0f %7.1f%%\n", g.name, static_cast<long>(n), t * 1e6, tflops, bw,
                  100 * bw / copy_bw);
      rows.push_back({{"device", device}, {"kernel", "gemm"}, {"shape", g.name}, {"batch", n}, {"us", t * 1e6},
                      {"tflops", tflops}, {"bandwidth_gbs", bw}, {"copy_bandwidth_gbs", copy_bw},
                      {"fraction", bw / copy_bw}});
    }
  }
  }

  if (wants("gemv")) {
    // The same product through the skinny kernel and through cuBLASLt, W rotated among
    // copies so that it comes from HBM, not L2.
    DeviceBuffer lt_ws = Must(be->Allocate(size_t{32} << 20));
    auto lt = Must(cuda::CublasLtMatmul::Create(lt_ws.data(), lt_ws.bytes()));
    std::printf("\n%-34s %6s %10s %10s %10s %10s\n", "skinny gemm bf16 (W read once)", "n", "gemv us", "of copy",
                "cublasLt us", "of copy");
    struct Gemm { const char* name; int64_t k, m; };
    for (Gemm g : {Gemm{"7B q/k/v/o 4096->4096", 4096, 4096}, Gemm{"7B gate_up 4096->22016", 4096, 22016},
                   Gemm{"7B down 11008->4096", 11008, 4096}, Gemm{"7B lm_head 4096->32000", 4096, 32000},
                   Gemm{"tinyllama q/o 2048->2048", 2048, 2048}, Gemm{"tinyllama k/v 2048->256", 2048, 256},
                   Gemm{"tinyllama gate_up 2048->11264", 2048, 11264},
                   Gemm{"tinyllama down 5632->2048", 5632, 2048}}) {
      const size_t wbytes = static_cast<size_t>(g.k) * g.m * 2;
      const int copies = static_cast<int>(std::clamp<size_t>((size_t{512} << 20) / wbytes + 1, 1, 64));
      DeviceBuffer w = Must(be->Allocate(wbytes * copies));
      FillRandom(*be, w.data(), wbytes * copies, rng);
      for (int64_t n : {1, 2, 4, 8}) {
        DeviceBuffer x = Must(be->Allocate(static_cast<size_t>(n) * g.k * 2));
        DeviceBuffer y = Must(be->Allocate(static_cast<size_t>(n) * g.m * 2));
        FillRandom(*be, x.data(), x.bytes(), rng);
        int next = 0;
        auto wptr = [&] { return static_cast<char*>(w.data()) + (next++ % copies) * wbytes; };
        const bool gemv = cuda::GemvSupported(n, g.k, x.data(), w.data());
        const double t_gemv = !gemv ? NAN : GraphSeconds(be->stream(), [&] {
          cuda::LaunchGemv(x.data(), wptr(), y.data(), DType::kBF16, n, g.k, g.m, be->stream());
        });
        const double t_lt = GraphSeconds(be->stream(), [&] {
          MustOk(lt->Run(x.data(), wptr(), y.data(), DType::kBF16, n, g.k, g.m, be->stream()));
        });
        CHECK_CUDA(cudaGetLastError());
        const double bytes = static_cast<double>(wbytes + x.bytes() + y.bytes());
        std::printf("%-34s %6ld %10.1f %9.1f%% %10.1f %9.1f%%\n", g.name, static_cast<long>(n), t_gemv * 1e6,
                    100 * bytes / t_gemv / 1e9 / copy_bw, t_lt * 1e6, 100 * bytes / t_lt / 1e9 / copy_bw);
        rows.push_back({{"device", device}, {"kernel", "skinny_gemm"}, {"shape", g.name}, {"batch", n},
                        {"gemv_us", gemv ? nlohmann::json(t_gemv * 1e6) : nlohmann::json()}, {"cublaslt_us", t_lt * 1e6},
                        {"gemv_fraction_of_copy", gemv ? nlohmann::json(bytes / t_gemv / 1e9 / copy_bw) : nlohmann::json()},
                        {"cublaslt_fraction_of_copy", bytes / t_lt / 1e9 / copy_bw},
                        {"copy_bandwidth_gbs", copy_bw}});
      }
    }
  }
  if (wants("elementwise")) {
    // The per-token kernels of a 7B layer at decode and mixed-step token counts, inputs
    // rotated among copies (>= 256 MB in all) so they come from HBM: bytes read + written
    // per call over its time.
    std::printf("\n%-34s %6s %10s %10s %8s\n", "elementwise (7B layer)", "tokens", "us", "GB/s", "of copy");
    const int64_t hidden = 4096, heads = 32, head_dim = 128, ffn = 11008, qkv_cols = 3 * hidden;
    for (int64_t n : {1, 64, 256, 1024, 4096}) {
      BatchLayout layout;
      layout.block_size = 16;
      layout.max_blocks_per_seq = 1;
      layout.query_start.push_back(0);
      std::vector<int32_t> perm(n);
      std::iota(perm.begin(), perm.end(), 0);
      std::shuffle(perm.begin(), perm.end(), rng);
      for (int64_t t = 0; t < n; ++t) {  // n one-token sequences, each in a block of its own
        layout.token_ids.push_back(0);
        layout.positions.push_back(static_cast<int32_t>(rng() % 4096));
        layout.slot_mapping.push_back(perm[t] * 16 + static_cast<int32_t>(rng() % 16));
        layout.query_start.push_back(static_cast<int32_t>(t + 1));
        layout.context_lens.push_back(1);
        layout.block_tables.push_back(perm[t]);
      }
      DeviceBatch db = Must(be->UploadBatch(layout));
      std::vector<float> inv(head_dim / 2);
      for (int64_t i = 0; i < head_dim / 2; ++i) inv[i] = std::pow(10000.0f, -2.0f * i / head_dim);
      DeviceBuffer inv_dev = Must(be->Allocate(inv.size() * sizeof(float)));
      MustOk(be->CopyToDevice(inv_dev.data(), inv.data(), inv.size() * sizeof(float)));
      const int64_t slots = n * 16;
      auto run = [&](const char* name, size_t in_bytes, size_t moved_bytes, auto&& op) {
        const int copies = static_cast<int>(std::clamp<size_t>((size_t{256} << 20) / in_bytes + 1, 1, 64));
        DeviceBuffer in = Must(be->Allocate(in_bytes * copies));
        FillRandom(*be, in.data(), in_bytes * copies, rng);
        int next = 0;
        const double t = GraphSeconds(be->stream(), [&] { op(static_cast<char*>(in.data()) + (next++ % copies) * in_bytes); });
        MustOk(be->Synchronize());
        const double bw = moved_bytes / t / 1e9;
        std::printf("%-34s %6ld %10.2f %10.0f %7.1f%%\n", name, static_cast<long>(n), t * 1e6, bw, 100 * bw / copy_bw);
        rows.push_back({{"device", device}, {"kernel", name}, {"shape", "llama2-7b"}, {"batch", n}, {"us", t * 1e6},
                        {"bandwidth_gbs", bw}, {"copy_bandwidth_gbs", copy_bw}, {"fraction", bw / copy_bw},
                        {"timing", "cuda graph"}});
      };
      DeviceBuffer res = Must(be->Allocate(n * hidden * 2)), out = Must(be->Allocate(n * ffn * 2));
      DeviceBuffer norm_w = Must(be->Allocate(hidden * sizeof(float)));
      FillRandom(*be, res.data(), res.bytes(), rng);
      CHECK_CUDA(cudaMemset(norm_w.data(), 0, norm_w.bytes()));
      const size_t act = n * hidden * 2;
      run("add_rms_norm 4096", act, 4 * act, [&](void* x) {
        be->AddRmsNorm(TensorView{x, DType::kBF16, n, hidden}, res.View(DType::kBF16, n, hidden),
                       norm_w.View(DType::kF32, 1, hidden), 1e-5f, out.View(DType::kBF16, n, hidden));
      });
      run("silu_mul 2x11008", n * 2 * ffn * 2, n * 3 * ffn * 2, [&](void* gu) {
        be->SiluMul(TensorView{gu, DType::kBF16, n, 2 * ffn}, out.View(DType::kBF16, n, ffn));
      });
      for (bool fp8 : {false, true}) {
        const int64_t elem = fp8 ? 1 : 2;
        DeviceBuffer kc = Must(be->Allocate(slots * hidden * elem)), vc = Must(be->Allocate(slots * hidden * elem));
        DeviceBuffer ks, vs;
        KvLayerView kv{kc.data(), vc.data(), fp8 ? DType::kF8E4M3 : DType::kBF16, static_cast<int32_t>(n), 16,
                       static_cast<int32_t>(heads), static_cast<int32_t>(head_dim)};
        if (fp8) {
          ks = Must(be->Allocate(slots * heads * sizeof(float)));
          vs = Must(be->Allocate(slots * heads * sizeof(float)));
          kv.k_scale = static_cast<float*>(ks.data());
          kv.v_scale = static_cast<float*>(vs.data());
        }
        const size_t written = n * hidden * 2 + 2 * n * (hidden * elem + (fp8 ? heads * sizeof(float) : 0));
        run(fp8 ? "rope_store_kv fp8 cache" : "rope_store_kv bf16 cache", n * qkv_cols * 2, n * qkv_cols * 2 + written,
            [&](void* qkv) {
              be->RopeStoreKv(TensorView{qkv, DType::kBF16, n, qkv_cols}, out.View(DType::kBF16, n, hidden),
                              db.positions, static_cast<const float*>(inv_dev.data()), static_cast<int32_t>(head_dim),
                              db, kv);
            });
      }
    }
  }
  std::ofstream(json_path) << rows.dump(1) << "\n";
  std::printf("\nwrote %s\n", json_path.c_str());
  return 0;
}
