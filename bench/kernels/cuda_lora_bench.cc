// Multi-LoRA kernels on CUDA against the base bf16 matmul they ride on, measured in the same
// run: 32 rank-16 adapters, token t on adapter t mod 32, on the Llama-2-7B projection
// shapes, for decode batches (BGMV) and, at the same shapes, the SGMV kernel forced.
// Adapter tables and base weights rotate through copies larger than L2, so every figure
// reads from HBM. Prints a table with the LoRA time over the base matmul time and the
// adapter bytes per second against a device-to-device copy; writes JSON (argv[1]).
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "kernels/cuda/cuda_backend.h"
#include "bench/kernels/cuda_bench_util.h"
#include "kernels/cuda/cuda_backend_impl.h"
#include "kernels/cuda/cuda_quant_launch.h"
#include "nlohmann/json.hpp"

namespace tessera {
namespace {

using bench::Must;
using bench::Upload;
using bench::MustOk;

constexpr int kCallsPerRep = 20;
constexpr size_t kRotateBytes = size_t{256} << 20;  // well past the 50 MB L2

// Median seconds per call: each timed repetition runs fn kCallsPerRep times back to back.
template <typename Fn>
double MedianSeconds(CudaBackend& be, Fn fn) {
  const double t = bench::MedianSeconds(be.stream(), 3 * kCallsPerRep, 25, kCallsPerRep, fn);
  MustOk(be.Synchronize());  // ops report their errors here
  return t;
}

// A device buffer of `bytes` random bf16 values (a fast generator: hundreds of MB).
DeviceBuffer RandomDevice(CudaBackend& be, size_t bytes, uint64_t seed, float scale) {
  std::vector<uint16_t> v(bytes / 2);
  uint64_t s = seed * 0x9E3779B97F4A7C15ull + 1;
  for (uint16_t& x : v) {
    s ^= s << 13;
    s ^= s >> 7;
    s ^= s << 17;
    x = F32ToBF16((static_cast<float>(s >> 40) * (2.0f / 16777216.0f) - 1.0f) * scale);
  }
  DeviceBuffer d = Must(be.Allocate(bytes));
  MustOk(be.CopyToDevice(d.data(), v.data(), bytes));
  return d;
}


struct Shape {
  const char* name;
  int64_t in, out;
};

}  // namespace
}  // namespace tessera

int main(int argc, char** argv) {
  using namespace tessera;
  const std::string json_path = argc > 1 ? argv[1] : "cuda_lora_bench.json";
  auto owned = Must(CreateBackend("cuda"));
  auto* be = static_cast<CudaBackend*>(owned.get());
  cudaDeviceProp prop{};
  CHECK_CUDA(cudaGetDeviceProperties(&prop, 0));
  const std::string device = prop.name;
  const double copy_gbs = bench::CopyBandwidthGbs(*be, size_t{1} << 30);
  std::printf("device %s, %d SMs; device-to-device copy %.0f GB/s (read + write)\n", prop.name,
              prop.multiProcessorCount, copy_gbs);
  std::printf("32 adapters, rank 16, token t on adapter t mod 32; adapters and weights rotate past L2\n\n");
  std::printf("%-22s %5s %6s %10s %10s %12s %10s %12s %10s\n", "shape (in->out)", "batch", "kernel", "lora us",
              "sgmv us", "base gemm us", "lora/base", "adapter GB/s", "of copy");
  nlohmann::json rows = nlohmann::json::array();
  const int32_t slots = 32, rank = 16;
  const Shape shapes[] = {{"7B q/k/v/o 4096->4096", 4096, 4096},
                          {"7B gate/up 4096->11008", 4096, 11008},
                          {"7B down 11008->4096", 11008, 4096}};
  uint64_t seed = 1;
  for (const Shape& s : shapes) {
    const size_t a_bytes = static_cast<size_t>(slots) * rank * s.in * 2, b_bytes = static_cast<size_t>(slots) * rank * s.out * 2;
    const int copies = static_cast<int>(std::clamp<size_t>(kRotateBytes / (a_bytes + b_bytes) + 1, 2, 64));
    std::vector<DeviceBuffer> tables;
    std::vector<std::vector<LoraModuleSlots>> modules(copies, std::vector<LoraModuleSlots>(kNumLoraTargets));
    std::vector<LoraSlotTables> slot_tables;
    DeviceBuffer ranks = Upload(*be, std::vector<int32_t>(slots, rank));
    for (int c = 0; c < copies; ++c) {
      tables.push_back(RandomDevice(*be, a_bytes, seed++, 0.02f));
      tables.push_back(RandomDevice(*be, b_bytes, seed++, 0.02f));
      modules[c][kLoraQ] = {tables[2 * c].data(), tables[2 * c + 1].data(), static_cast<const int32_t*>(ranks.data()),
                            s.in, s.out};
      slot_tables.push_back({modules[c].data(), 1, slots, rank, DType::kBF16});
    }
    const size_t w_bytes = static_cast<size_t>(s.in) * s.out * 2;
    const int w_copies = static_cast<int>(std::clamp<size_t>(kRotateBytes / w_bytes + 1, 2, 64));
    std::vector<DeviceBuffer> weights;
    for (int c = 0; c < w_copies; ++c) weights.push_back(RandomDevice(*be, w_bytes, seed++, 0.02f));
    for (int64_t n : {1, 8, 32, 64, 128}) {
      std::vector<int32_t> token_slots(n);
      for (int64_t t = 0; t < n; ++t) token_slots[t] = static_cast<int32_t>((t * 7) % slots);  // not in order
      DeviceBuffer ds = Upload(*be, token_slots);
      DeviceBuffer x = RandomDevice(*be, static_cast<size_t>(n) * s.in * 2, seed++, 1.0f);
      DeviceBuffer y = RandomDevice(*be, static_cast<size_t>(n) * s.out * 2, seed++, 1.0f);
      const TensorView xv = x.View(DType::kBF16, n, s.in), yv = y.View(DType::kBF16, n, s.out);
      size_t next = 0;
      const double tl = MedianSeconds(*be, [&] {
        LoraBatch batch{static_cast<const int32_t*>(ds.data()), static_cast<int32_t>(n), &slot_tables[next++ % copies]};
        be->LoraApply(xv, batch, 0, kLoraQ, yv, 0);
      });
      MustOk(be->Synchronize());
      // The previous kernel (SGMV, 8-token tiles) at the same shape, launched directly.
      DeviceBuffer ws = Must(be->Allocate(cuda::kLoraCounterBytes + static_cast<size_t>(n) * rank * 4));
      const double ts = MedianSeconds(*be, [&] {
        const LoraSlotTables& tab = slot_tables[next++ % copies];
        cuda::LoraArgs a;
        a.x = xv.data;
        a.out = yv.data;
        a.out_cols = s.out;
        a.token_slots = static_cast<const int32_t*>(ds.data());
        a.num_tokens = static_cast<int32_t>(n);
        a.a = tab.modules[kLoraQ].a;
        a.b_t = tab.modules[kLoraQ].b_t;
        a.ranks = tab.modules[kLoraQ].ranks;
        a.num_slots = slots;
        a.max_rank = rank;
        a.in_features = s.in;
        a.out_features = s.out;
        cuda::LoraGroupArgs g;
        g.m[0] = a;
        g.count = 1;
        cuda::LaunchLoraApply(g, cuda::LoraPlan{}, ws.data(), be->stream());
      });
      const double tb = MedianSeconds(*be, [&] {
        LinearWeight lw{weights[next++ % w_copies].View(DType::kBF16, s.out, s.in)};
        be->Matmul(xv, lw, yv);
      });
      const int distinct = static_cast<int>(std::min<int64_t>(n, slots));
      const double adapter_bytes = static_cast<double>(distinct) * rank * (s.in + s.out) * 2;
      const double gbs = adapter_bytes / tl / 1e9;
      const bool bgmv = n <= cuda::kLoraBgmvMaxTokens;
      std::printf("%-22s %5ld %6s %10.2f %10.2f %12.2f %9.1f%% %12.0f %9.1f%%\n", s.name, static_cast<long>(n),
                  bgmv ? "bgmv" : "sgmv", tl * 1e6, ts * 1e6, tb * 1e6, 100 * tl / tb, gbs, 100 * gbs / copy_gbs);
      rows.push_back({{"device", device}, {"kernel", bgmv ? "lora_bgmv" : "lora_sgmv"}, {"shape", s.name},
                      {"in", s.in}, {"out", s.out}, {"adapters", slots}, {"rank", rank}, {"batch", n},
                      {"lora_us", tl * 1e6}, {"sgmv_us", ts * 1e6}, {"base_gemm_us", tb * 1e6},
                      {"lora_over_base", tl / tb}, {"speedup_over_sgmv", ts / tl}, {"adapter_gbs", gbs},
                      {"copy_gbs", copy_gbs}, {"fraction_of_copy", gbs / copy_gbs}});
    }
  }
  MustOk(be->Synchronize());
  std::ofstream(json_path) << rows.dump(1) << "\n";
  std::printf("\nwrote %s\n", json_path.c_str());
  return 0;
}
