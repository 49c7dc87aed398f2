// GPTQ int4 matmul and multi-LoRA benchmark on CUDA. The packed-layout int4 kernel at
// batches 1-128 on the Llama-7B projection shapes against, in the same run, the backend's
// bf16 matmul (its skinny GEMV at the batches it takes, cuBLASLt above) and cuBLASLt called
// directly; the AutoGPTQ-layout kernels at batch 1 and 16 for reference; the achieved GB/s
// and its fraction of the device copy bandwidth. BGMV with 32 distinct rank-16 adapters in
// a batch of 32 against the base GEMM it rides on. The MLP's SiluMul + int4 down projection
// (4096x11008) against SiluMulMatmul, which forms the activations in the decode kernel. Times come from captured CUDA graphs (GPU
// time, as decode steps run); the int4 kernel is also timed launched eagerly. Weights
// rotate through copies larger than L2. Prints a table, writes JSON (argv[1]). With
// TESSERA_QUANT_SWEEP=1 it also times the decode kernel under other work splits than its
// planner's (ring depth, warps across columns, split-K, block-wide or per-slice staging) at
// every decode batch.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "kernels/cuda/cuda_backend.h"
#include "bench/kernels/cuda_bench_util.h"
#include "kernels/cuda/cuda_backend_impl.h"
#include "kernels/cuda/cuda_int4_launch.h"
#include "kernels/cuda/cuda_matmul.h"
#include "kernels/cuda/int4_layout.h"
#include "nlohmann/json.hpp"

namespace tessera {
namespace {

using bench::Must;
using bench::Upload;
using bench::MustOk;

constexpr int kCallsPerRep = 20;

// Median seconds per call: each timed repetition runs fn kCallsPerRep times back to back,
// launched eagerly (host launch cost included where it exceeds the kernel's).
template <typename Fn>
double MedianSeconds(CudaBackend& be, Fn fn) {
  const double t = bench::MedianSeconds(be.stream(), 3 * kCallsPerRep, 25, kCallsPerRep, fn);
  MustOk(be.Synchronize());  // ops report their errors here
  return t;
}

// The same from a captured graph of kCallsPerRep calls: GPU time only, as decode steps run.
template <typename Fn>
double GraphSeconds(CudaBackend& be, Fn fn) {
  const double t = bench::GraphMedianSeconds(be.stream(), 3, 25, kCallsPerRep, fn);
  MustOk(be.Synchronize());
  return t;
}

std::vector<uint16_t> RandomBf16(size_t n, std::mt19937& rng, float scale) {
  std::normal_distribution<float> d(0.0f, scale);
  std::vector<uint16_t> v(n);
  for (uint16_t& x : v) x = F32ToBF16(d(rng));
  return v;
}

// Enough copies of a weight of `bytes` that cycling through them always misses L2.
int CopiesFor(size_t bytes) { return static_cast<int>(std::clamp<size_t>((size_t{256} << 20) / bytes + 1, 2, 64)); }

// `copies` random int4 weights (group 128, v2 zeros): the AutoGPTQ arrays (the generic
// kernels' input) and the backend's packed layout, each copy with its own device memory.
struct Int4Weights {
  std::vector<DeviceBuffer> buffers;
  std::vector<QuantizedWeight> generic, packed;
  size_t bytes_each = 0;         // AutoGPTQ arrays
  size_t packed_bytes_each = 0;  // packed layout
};

Int4Weights MakeInt4(CudaBackend& be, int64_t k, int64_t m, std::mt19937& rng) {
  const int64_t groups = k / 128;
  std::vector<int32_t> qweight(k / 8 * m), qzeros(groups * m / 8);
  std::vector<uint16_t> scales(groups * m);
  for (int32_t& w : qweight) w = static_cast<int32_t>(rng());
  for (int32_t& w : qzeros) w = static_cast<int32_t>(rng());
  std::uniform_real_distribution<float> s(0.002f, 0.02f);
  for (uint16_t& v : scales) v = F32ToF16(s(rng));
  Int4Weights w;
  w.bytes_each = (qweight.size() + qzeros.size()) * 4 + scales.size() * 2;
  QuantizedWeight host;
  host.bits = 4;
  host.group_size = 128;
  host.in_features = k;
  host.out_features = m;
  host.qweight = qweight.data();
  host.qzeros = qzeros.data();
  host.scales = scales.data();
  QuantizedWeight first = host;
  w.buffers.push_back(Must(be.PackQuantizedWeight(host, &first)));
  w.packed_bytes_each = w.buffers.back().bytes();
  const int copies = CopiesFor(w.packed_bytes_each);
  for (int c = 0; c < copies; ++c) {
    QuantizedWeight p = first;
    if (c > 0) {
      w.buffers.push_back(Must(be.Allocate(w.packed_bytes_each)));
      CHECK_CUDA(cudaMemcpy(w.buffers.back().data(), first.packed, w.packed_bytes_each, cudaMemcpyDeviceToDevice));
      p.packed = w.buffers.back().data();
    }
    w.packed.push_back(p);
  }
  for (int c = 0; c < CopiesFor(w.bytes_each); ++c) {
    QuantizedWeight q = host;
    q.packed = nullptr;
    w.buffers.push_back(Upload(be, qweight));
    q.qweight = static_cast<const int32_t*>(w.buffers.back().data());
    w.buffers.push_back(Upload(be, qzeros));
    q.qzeros = static_cast<const int32_t*>(w.buffers.back().data());
    w.buffers.push_back(Upload(be, scales));
    q.scales = static_cast<const uint16_t*>(w.buffers.back().data());
    w.generic.push_back(q);
  }
  return w;
}


// The decode kernel under the planner's work split and around it, launched directly; one
// printed line and one JSON row per plan.
void SweepDecode(CudaBackend& be, const std::vector<QuantizedWeight>& views, const TensorView& xv,
                 const TensorView& yv, const std::string& shape, double planned_s, const std::string& device,
                 nlohmann::json& rows) {
  const int64_t n = xv.rows;
  const cuda::Int4Args w0 = cuda::Int4ArgsOf(views[0]);
  const int sms = be.num_sms();
  const cuda::Int4Plan planned = cuda::PlanInt4Matmul(w0, n, true, sms);
  DeviceBuffer ws = Must(be.Allocate(size_t{64} << 20));
  CHECK_CUDA(cudaMemset(ws.data(), 0, ws.bytes()));
  std::vector<cuda::Int4Args> args;
  for (const QuantizedWeight& q : views) args.push_back(cuda::Int4ArgsOf(q));
  std::vector<std::pair<std::string, cuda::Int4Plan>> plans;
  if (planned.decode) {
    plans.push_back({"planned", planned});
    cuda::Int4Plan p = planned;
    p.pdl = false;
    plans.push_back({"planned, no programmatic launch", p});
    p = planned;
    p.release_once = false;
    if (p.splits > 1) plans.push_back({"planned, every thread fences before the split-K arrival", p});
    p = planned;
    p.fold_zero = !p.fold_zero;
    plans.push_back({p.fold_zero ? "planned, zero point folded" : "planned, zero point per nibble pair", p});
    p = cuda::PlanInt4Decode(w0, n, true, sms, planned.nb, planned.warps_n, planned.splits, planned.min_blocks,
                             planned.ring, !planned.slice_stage);
    plans.push_back({p.slice_stage ? "planned, slice staging" : "planned, block-wide staging", p});
    p = planned;
    p.batched_meet = !p.batched_meet;
    if (p.splits > 1) {
      plans.push_back({p.batched_meet ? "planned, split-K meeting batched" : "planned, split-K meeting one load at a time", p});
    }
  }
  // Two column blocks per warp (four: the one grid row below) at each ring depth and
  // warps across columns, staged block-wide and per K slice: blocks owning all of K (no
  // split-K), and the device-filling split with half and twice as many splits.
  for (bool slice : {false, true}) {
    for (int ring : {2, 4, 8}) {
      for (int warps_n : {1, 2, 4, 8}) {
        const int base = cuda::PlanInt4Decode(w0, n, true, sms, 2, warps_n, 0, 2, ring, slice).splits;
        std::vector<int> seen;
        for (int splits : {1, std::max(1, base / 2), base, base * 2}) {
          if (std::find(seen.begin(), seen.end(), splits) != seen.end()) continue;
          seen.push_back(splits);
          const cuda::Int4Plan p = cuda::PlanInt4Decode(w0, n, true, sms, 2, warps_n, splits, 2, ring, slice);
          if (p.ring == ring) plans.push_back({"grid", p});
        }
      }
    }
  }
  plans.push_back({"grid", cuda::PlanInt4Decode(w0, n, true, sms, 2, 2, 0, 3, 2, false)});
  // The three-blocks/SM kernel on the planned grid (about two blocks per multiprocessor): a
  // slot stays free on every multiprocessor for the next call's blocks to stream weights into
  // while this call finishes.
  if (planned.decode && n <= 8) {
    const cuda::Int4Plan p =
        cuda::PlanInt4Decode(w0, n, true, sms, 2, planned.warps_n, planned.splits, 3, 2, planned.slice_stage);
    if (p.min_blocks == 3) plans.push_back({"three blocks/SM kernel on the planned grid", p});
  }
  plans.push_back({"grid", cuda::PlanInt4Decode(w0, n, true, sms, 4, 2, 0, 2, 2, planned.slice_stage)});
  for (const auto& [what, p] : plans) {
    if (!p.decode || p.workspace_bytes > ws.bytes()) continue;
    size_t next = 0;
    const double t = GraphSeconds(be, [&] {
      cuda::LaunchInt4Matmul(args[next++ % args.size()], p, xv.data, n, yv.data, DType::kBF16, ws.data(),
                             be.stream());
    });
    std::printf("  sweep %-12s batch %3ld nb %d warps_n %d blocks/SM %d ring %d splits %3d chunks/split %3d "
                "blocks %5d smem %6d cluster %d pdl %d release1 %d fold %d slice %d batched %d: %7.2f us  %s\n",
                shape.c_str(), static_cast<long>(n), p.nb, p.warps_n, p.min_blocks, p.ring, p.splits,
                p.chunks_per_split, p.col_tiles * p.splits, p.smem_bytes, p.cluster ? 1 : 0, p.pdl ? 1 : 0,
                p.release_once ? 1 : 0, p.fold_zero ? 1 : 0, p.slice_stage ? 1 : 0, p.batched_meet ? 1 : 0, t * 1e6,
                what.c_str());
    rows.push_back({{"device", device}, {"kernel", "gptq_int4_decode_sweep"}, {"shape", shape}, {"batch", n},
                    {"nb", p.nb}, {"warps_n", p.warps_n}, {"min_blocks", p.min_blocks}, {"ring", p.ring},
                    {"splits", p.splits}, {"chunks_per_split", p.chunks_per_split},
                    {"cluster", p.cluster}, {"pdl", p.pdl}, {"release_once", p.release_once},
                    {"fold_zero", p.fold_zero}, {"slice_stage", p.slice_stage}, {"batched_meet", p.batched_meet}, {"us", t * 1e6}, {"variant", what},
                    {"backend_call_us", planned_s * 1e6}, {"timing", "cuda graph"}});
  }
}

struct DenseWeights {
  DeviceBuffer buf;
  int copies = 0;
  size_t bytes_each = 0;
};

DenseWeights MakeDense(CudaBackend& be, int64_t k, int64_t m, std::mt19937& rng) {
  DenseWeights d;
  d.bytes_each = static_cast<size_t>(k) * m * 2;
  d.copies = CopiesFor(d.bytes_each);
  const std::vector<uint16_t> one = RandomBf16(static_cast<size_t>(k) * m, rng, 0.02f);
  d.buf = Must(be.Allocate(d.bytes_each * d.copies));
  for (int c = 0; c < d.copies; ++c) {
    MustOk(be.CopyToDevice(static_cast<char*>(d.buf.data()) + c * d.bytes_each, one.data(), d.bytes_each));
  }
  return d;
}

}  // namespace
}  // namespace tessera

int main(int argc, char** argv) {
  using namespace tessera;
  const std::string json_path = argc > 1 ? argv[1] : "bench_quant.json";
  if (CudaDeviceCount() == 0) {
    std::printf("no CUDA device visible; nothing to measure\n");
    return 0;
  }
  std::unique_ptr<CudaBackend> be = Must(CudaBackend::Create(CudaBackendOptions{}));
  cudaDeviceProp prop{};
  CHECK_CUDA(cudaGetDeviceProperties(&prop, 0));
  const std::string device = prop.name;
  std::mt19937 rng(7);
  nlohmann::json rows = nlohmann::json::array();

  const double copy_bw = bench::CopyBandwidthGbs(*be, size_t{256} << 20) * 1e9;  // bytes/s
  std::printf("device %s, %d SMs; device-to-device copy %.0f GB/s (read + write)\n\n", device.c_str(),
              prop.multiProcessorCount, copy_bw / 1e9);
  rows.push_back({{"device", device}, {"kernel", "copy"}, {"bandwidth_gbs", copy_bw / 1e9}});
  // cuBLASLt called directly: the "cuBLAS bf16" baseline (the backend's own bf16 matmul
  // takes a skinny GEMV kernel at small batches instead).
  DeviceBuffer lt_ws = Must(be->Allocate(size_t{32} << 20));
  auto lt = Must(cuda::CublasLtMatmul::Create(lt_ws.data(), lt_ws.bytes()));
  std::printf("times from captured graphs of %d calls (GPU time); eager: launched one by one\n", kCallsPerRep);
  std::printf("%-12s %5s %8s %8s %9s %9s %9s %9s %8s %8s %9s %8s\n", "int4 out x in", "batch", "int4 us",
              "eager us", "generic", "bf16 us", "cublas us", "vs bf16", "vs cublas", "GB/s", "of copy", "TFLOP/s");
  // TESSERA_QUANT_CASES="MxK:batch,..." limits the int4 cases (e.g. for a profiler) and
  // skips the BGMV case.
  const bench::CaseFilter only("TESSERA_QUANT_CASES");
  const char* sweep_env = std::getenv("TESSERA_QUANT_SWEEP");
  const bool sweep = sweep_env != nullptr && std::string(sweep_env) == "1";
  const bool filtered = only.active();
  auto selected = [&](int64_t m, int64_t k, int64_t n) {
    return only.Selected(std::to_string(m) + "x" + std::to_string(k) + ":" + std::to_string(n));
  };
  struct Shape { int64_t m, k; };
  // Decode batches, then prefill-sized ones (where the int4 tile kernel and the dequantise +
  // dense GEMM path are timed side by side).
  static constexpr int64_t kBatches[] = {1, 2, 4, 8, 16, 32, 64, 128, 512, 2048};
  for (Shape s : {Shape{4096, 4096}, Shape{11008, 4096}, Shape{4096, 11008}}) {
    bool any = false;
    for (int64_t n : kBatches) any = any || selected(s.m, s.k, n);
    if (!any) continue;
    Int4Weights q = MakeInt4(*be, s.k, s.m, rng);
    DenseWeights d = MakeDense(*be, s.k, s.m, rng);
    for (int64_t n : kBatches) {
      if (!selected(s.m, s.k, n)) continue;
      const std::vector<uint16_t> xh = RandomBf16(static_cast<size_t>(n) * s.k, rng, 1.0f);
      DeviceBuffer x = Upload(*be, xh);
      DeviceBuffer y = Must(be->Allocate(static_cast<size_t>(n) * s.m * 2));
      const TensorView xv = x.View(DType::kBF16, n, s.k), yv = y.View(DType::kBF16, n, s.m);
      auto int4_call = [&](const std::vector<QuantizedWeight>& views) {
        return [&, next = size_t{0}]() mutable {
          LinearWeight lw;
          lw.quant = &views[next++ % views.size()];
          be->Matmul(xv, lw, yv);
        };
      };
      const double tq = GraphSeconds(*be, int4_call(q.packed));
      const double tq_eager = n <= 128 ? MedianSeconds(*be, int4_call(q.packed)) : 0.0;
      // Above the decode kernel's rows: the tile kernel and the dequantise + cuBLASLt path
      // directly (the backend takes one of them by TESSERA_INT4_DENSE_ROWS).
      double t_tile = 0.0, t_dense = 0.0;
      if (n > cuda::kInt4DecodeMaxRows) {
        const cuda::Int4Args a0 = cuda::Int4ArgsOf(q.packed[0]);
        const cuda::Int4Plan tp = cuda::PlanInt4Matmul(a0, n, true, be->num_sms());
        DeviceBuffer tws = Must(be->Allocate(std::max<size_t>(tp.workspace_bytes, 256)));
        MustOk(be->CopyToDevice(tws.data(), std::vector<char>(tws.bytes(), 0).data(), tws.bytes()));
        size_t nt = 0;
        t_tile = GraphSeconds(*be, [&] {
          cuda::LaunchInt4Matmul(cuda::Int4ArgsOf(q.packed[nt++ % q.packed.size()]), tp, xv.data, n, yv.data,
                                 DType::kBF16, tws.data(), be->stream());
        });
        DeviceBuffer deq = Must(be->Allocate(static_cast<size_t>(s.m) * s.k * 2));
        size_t nd = 0;
        t_dense = GraphSeconds(*be, [&] {
          cuda::LaunchInt4Dequantize(cuda::Int4ArgsOf(q.packed[nd++ % q.packed.size()]), deq.data(), be->stream());
          MustOk(lt->Run(x.data(), deq.data(), y.data(), DType::kBF16, n, s.k, s.m, be->stream()));
        });
        std::printf("  %-12s %5ld int4 tile kernel %8.2f us, dequantise + cuBLASLt %8.2f us (%.2fx)\n",
                    (std::to_string(s.m) + "x" + std::to_string(s.k)).c_str(), static_cast<long>(n), t_tile * 1e6,
                    t_dense * 1e6, t_tile / t_dense);
      }
      // The AutoGPTQ-layout kernels (2/8-bit and unpackable shapes) at the decode and GEMM batches.
      const double tg = n == 1 || n == 16 ? GraphSeconds(*be, int4_call(q.generic)) : 0.0;
      auto dense = [&](int c) { return static_cast<char*>(d.buf.data()) + (c % d.copies) * d.bytes_each; };
      int next = 0;
      const double td = GraphSeconds(*be, [&] {
        LinearWeight lw{TensorView{dense(next++), DType::kBF16, s.m, s.k}};
        be->Matmul(xv, lw, yv);
      });
      const double tl = GraphSeconds(*be, [&] {
        MustOk(lt->Run(x.data(), dense(next++), y.data(), DType::kBF16, n, s.k, s.m, be->stream()));
      });
      const double gbs = (q.packed_bytes_each + x.bytes() + y.bytes()) / tq / 1e9;
      const double tflops = 2.0 * n * s.m * s.k / tq / 1e12;
      const std::string shape = std::to_string(s.m) + "x" + std::to_string(s.k);
      const std::string generic = tg > 0 ? std::to_string(tg * 1e6).substr(0, 6) : "-";
      std::printf("%-12s %5ld %8.2f %8.2f %9s %9.2f %9.2f %8.2fx %8.2fx %8.0f %7.0f%% %9.1f\n", shape.c_str(),
                  static_cast<long>(n), tq * 1e6, tq_eager * 1e6, generic.c_str(), td * 1e6, tl * 1e6, td / tq,
                  tl / tq, gbs, 100.0 * gbs * 1e9 / copy_bw, tflops);
      nlohmann::json row = {{"device", device}, {"kernel", "gptq_int4_packed_mma"}, {"shape", shape},
                            {"batch", n}, {"us", tq * 1e6}, {"eager_us", tq_eager * 1e6}, {"bf16_us", td * 1e6},
                            {"cublaslt_bf16_us", tl * 1e6}, {"speedup", td / tq}, {"speedup_vs_cublaslt", tl / tq},
                            {"bandwidth_gbs", gbs}, {"fraction_of_copy_bw", gbs * 1e9 / copy_bw},
                            {"tflops", tflops}, {"timing", "cuda graph"},
                            {"int4_kernel", cuda::PlanInt4Matmul(cuda::Int4ArgsOf(q.packed[0]), n, true,
                                                                 be->num_sms()).decode ? "decode" : "tile"}};
      if (tq_eager == 0.0) row.erase("eager_us");
      if (tg > 0) row["generic_autogptq_us"] = tg * 1e6;
      if (t_tile > 0) {
        row["tile_kernel_us"] = t_tile * 1e6;
        row["dequantize_cublaslt_us"] = t_dense * 1e6;
        row["int4_kernel"] = be->Int4TakesDenseGemm(q.packed[0], n) ? "dequantize + cublaslt" : "tile";
      }
      rows.push_back(row);
      if (sweep && n <= cuda::kInt4DecodeMaxRows) SweepDecode(*be, q.packed, xv, yv, shape, tq, device, rows);
    }
  }

  // SiluMul then the int4 down projection against the fused call, at decode batches
  // (TESSERA_QUANT_CASES=silu runs this case alone).
  if (only.Selected("silu")) {
    const int64_t f = 11008, hidden = 4096;
    Int4Weights q = MakeInt4(*be, f, hidden, rng);
    std::printf("\n%-34s %5s %12s %10s %8s\n", "silu_mul + int4 down (4096x11008)", "batch", "unfused us",
                "fused us", "ratio");
    for (int64_t n : {1, 2, 4, 8, 16}) {
      DeviceBuffer gu = Upload(*be, RandomBf16(static_cast<size_t>(n) * 2 * f, rng, 2.0f));
      DeviceBuffer act = Must(be->Allocate(static_cast<size_t>(n) * f * 2));
      DeviceBuffer y = Must(be->Allocate(static_cast<size_t>(n) * hidden * 2));
      const TensorView guv = gu.View(DType::kBF16, n, 2 * f), av = act.View(DType::kBF16, n, f),
                       yv = y.View(DType::kBF16, n, hidden);
      size_t next = 0;
      auto weight = [&] {
        LinearWeight lw;
        lw.quant = &q.packed[next++ % q.packed.size()];
        return lw;
      };
      const double tu = GraphSeconds(*be, [&] {
        be->SiluMul(guv, av);
        be->Matmul(av, weight(), yv);
      });
      const double tf = GraphSeconds(*be, [&] { be->SiluMulMatmul(guv, av, weight(), yv); });
      std::printf("%-34s %5ld %12.2f %10.2f %7.2fx\n", "4096x11008", static_cast<long>(n), tu * 1e6, tf * 1e6,
                  tu / tf);
      rows.push_back({{"device", device}, {"kernel", "silu_mul_int4_down"}, {"shape", "4096x11008"}, {"batch", n},
                      {"unfused_us", tu * 1e6}, {"fused_us", tf * 1e6}, {"speedup", tu / tf},
                      {"timing", "cuda graph"}});
    }
  }

  // BGMV: 32 decode tokens, each with its own rank-16 adapter, on a 4096 -> 4096 projection.
  if (!filtered) {
    const int64_t hidden = 4096, n = 32;
    const int32_t slots = 32, rank = 16;
    std::vector<uint16_t> a = RandomBf16(static_cast<size_t>(slots) * rank * hidden, rng, 0.02f);
    std::vector<uint16_t> bt = RandomBf16(static_cast<size_t>(slots) * rank * hidden, rng, 0.02f);
    std::vector<int32_t> ranks(slots, rank), token_slots(n);
    for (int32_t t = 0; t < n; ++t) token_slots[t] = (t * 7) % slots;  // all distinct, not in order
    DeviceBuffer da = Upload(*be, a), dbt = Upload(*be, bt), dr = Upload(*be, ranks), ds = Upload(*be, token_slots);
    std::vector<LoraModuleSlots> modules(kNumLoraTargets);
    modules[kLoraO] = {da.data(), dbt.data(), static_cast<const int32_t*>(dr.data()), hidden, hidden};
    LoraSlotTables tables{modules.data(), 1, slots, rank, DType::kBF16};
    LoraBatch batch{static_cast<const int32_t*>(ds.data()), static_cast<int32_t>(n), &tables};
    DeviceBuffer x = Upload(*be, RandomBf16(static_cast<size_t>(n) * hidden, rng, 1.0f));
    DeviceBuffer y = Must(be->Allocate(static_cast<size_t>(n) * hidden * 2));
    MustOk(be->CopyToDevice(y.data(), RandomBf16(static_cast<size_t>(n) * hidden, rng, 1.0f).data(), y.bytes()));
    const TensorView xv = x.View(DType::kBF16, n, hidden), yv = y.View(DType::kBF16, n, hidden);
    DenseWeights d = MakeDense(*be, hidden, hidden, rng);
    const double tl = GraphSeconds(*be, [&] { be->LoraApply(xv, batch, 0, kLoraO, yv, 0); });
    size_t next = 0;
    const double tb = GraphSeconds(*be, [&] {
      LinearWeight lw{TensorView{static_cast<char*>(d.buf.data()) + (next++ % d.copies) * d.bytes_each, DType::kBF16,
                                 hidden, hidden}};
      be->Matmul(xv, lw, yv);
    });
    const double gbs = (a.size() + bt.size()) * 2.0 / tl / 1e9;
    std::printf("\n%-34s %5s %10s %12s %14s %10s\n", "bgmv lora (32 adapters, rank 16)", "batch", "lora us",
                "base gemm us", "lora/base", "A+B GB/s");
    std::printf("%-34s %5ld %10.2f %12.2f %13.1f%% %10.0f\n", "4096x4096", static_cast<long>(n), tl * 1e6, tb * 1e6,
                100 * tl / tb, gbs);
    rows.push_back({{"device", device}, {"kernel", "lora_bgmv"}, {"shape", "4096x4096 r16 x32 adapters"},
                    {"batch", n}, {"us", tl * 1e6}, {"base_gemm_us", tb * 1e6}, {"lora_over_base", tl / tb},
                    {"speedup", tb / tl}, {"bandwidth_gbs", gbs}});
  }
  MustOk(be->Synchronize());
  std::ofstream(json_path) << rows.dump(1) << "\n";
  std::printf("\nwrote %s\n", json_path.c_str());
  return 0;
}
