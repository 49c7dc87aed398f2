// Skinny GEMM y[n, m] = x[n, k] · W[m, k]ᵀ for decode batches (n <= 4): memory-bound on
// reading W once, which cuBLASLt's general kernels do at 50-80% of copy bandwidth at
// these shapes (bench/results/). Warps stream W rows in 16-byte loads, kUnroll of them in
// flight per lane; x rows come through L1 (every warp of the SM reads the same x); f32
// accumulation, then warp and CTA reductions per batch row. A programmatic dependent
// (cuda_pdl.h): each lane's first weight loads are in flight before the previous kernel ends.
#include <cuda_bf16.h>

#include <algorithm>
#include <cstdlib>

#include "kernels/cuda/cuda_common.cuh"
#include "kernels/cuda/cuda_launch.h"
#include "kernels/cuda/cuda_pdl.h"

namespace tessera::cuda {
namespace {

constexpr int kWarpsPerCta = 8;
constexpr int kUnroll = 8;

// A CTA covers kWarpsPerCta / KSPLIT rows; the KSPLIT warps of a row take interleaved
// slices of its 16-byte chunks and meet in shared memory. Small m gets a larger KSPLIT,
// so that even a 256-row product spreads over every multiprocessor.
template <int N, int KSPLIT, bool kF32Out>
__global__ void __launch_bounds__(kWarpsPerCta * 32) GemvKernel(const __nv_bfloat16* __restrict__ x,
                                                                const __nv_bfloat16* __restrict__ w,
                                                                void* __restrict__ out, int64_t k, int64_t m) {
  constexpr int kRowsPerCta = kWarpsPerCta / KSPLIT;
  __shared__ float partial[kWarpsPerCta][N];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int slice = warp % KSPLIT;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kRowsPerCta + warp / KSPLIT;
  const int64_t chunks = k / 8;  // 16-byte chunks per row
  float acc[N];
#pragma unroll
  for (int j = 0; j < N; ++j) acc[j] = 0.0f;
  const uint4* wrow = reinterpret_cast<const uint4*>(w + (row < m ? row : 0) * k);
  const uint4* xv = reinterpret_cast<const uint4*>(x);
  constexpr int kStride = 32 * KSPLIT;  // chunks between one lane's consecutive loads
  int64_t c = static_cast<int64_t>(slice) * 32 + lane;
  // The first kUnroll weight loads go out before the wait for the previous kernel (the
  // weights are constant), so they overlap its tail; x is read only after it.
  uint4 wv[kUnroll];
  bool loaded = row < m && c + (kUnroll - 1) * kStride < chunks;
  if (loaded) {
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) wv[u] = __ldcs(wrow + c + u * kStride);  // streamed: read once
  }
  PdlStart();
  if (row < m) {
    // Main loop: kUnroll independent 16-byte W loads per lane before any use.
    for (; c + (kUnroll - 1) * kStride < chunks; c += kUnroll * kStride) {
      if (!loaded) {
#pragma unroll
        for (int u = 0; u < kUnroll; ++u) wv[u] = __ldcs(wrow + c + u * kStride);
      }
      loaded = false;
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        float wf[8];
        Bf16x8ToFloat(wv[u], wf);
#pragma unroll
        for (int j = 0; j < N; ++j) {
          float xf[8];
          Bf16x8ToFloat(__ldg(xv + j * chunks + c + u * kStride), xf);
#pragma unroll
          for (int e = 0; e < 8; ++e) acc[j] = fmaf(wf[e], xf[e], acc[j]);
        }
      }
    }
    for (; c < chunks; c += kStride) {
      float wf[8];
      Bf16x8ToFloat(__ldcs(wrow + c), wf);
#pragma unroll
      for (int j = 0; j < N; ++j) {
        float xf[8];
        Bf16x8ToFloat(__ldg(xv + j * chunks + c), xf);
#pragma unroll
        for (int e = 0; e < 8; ++e) acc[j] = fmaf(wf[e], xf[e], acc[j]);
      }
    }
  }
#pragma unroll
  for (int j = 0; j < N; ++j) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) acc[j] += __shfl_xor_sync(0xffffffffu, acc[j], o);
  }
  if constexpr (KSPLIT > 1) {
    if (lane == 0) {
#pragma unroll
      for (int j = 0; j < N; ++j) partial[warp][j] = acc[j];
    }
    __syncthreads();
    if (slice != 0) return;
#pragma unroll
    for (int j = 0; j < N; ++j) {
      float sum = 0.0f;
#pragma unroll
      for (int s2 = 0; s2 < KSPLIT; ++s2) sum += partial[warp + s2][j];
      acc[j] = sum;
    }
  }
  if (row >= m) return;
  // Lane j writes batch row j (a compile-time index per unrolled branch).
#pragma unroll
  for (int j = 0; j < N; ++j) {
    if (lane == j) {
      if constexpr (kF32Out) {
        static_cast<float*>(out)[j * m + row] = acc[j];
      } else {
        static_cast<__nv_bfloat16*>(out)[j * m + row] = __float2bfloat16(acc[j]);
      }
    }
  }
}

template <int N, int KSPLIT>
void Launch(const void* x, const void* w, void* out, bool f32_out, int64_t k, int64_t m, cudaStream_t stream) {
  constexpr int kRowsPerCta = kWarpsPerCta / KSPLIT;
  const dim3 grid(static_cast<unsigned>((m + kRowsPerCta - 1) / kRowsPerCta));
  const auto* xb = static_cast<const __nv_bfloat16*>(x);
  const auto* wb = static_cast<const __nv_bfloat16*>(w);
  if (f32_out) LaunchPdl(GemvKernel<N, KSPLIT, true>, grid, kWarpsPerCta * 32, 0, stream, xb, wb, out, k, m);
  else LaunchPdl(GemvKernel<N, KSPLIT, false>, grid, kWarpsPerCta * 32, 0, stream, xb, wb, out, k, m);
}

template <int N>
void LaunchRows(const void* x, const void* w, void* out, bool f32_out, int64_t k, int64_t m, cudaStream_t stream) {
  // Aim for ~1000 CTAs (several per multiprocessor) while every lane keeps at least one
  // load of its own in the row's slice.
  const int64_t chunks = k / 8;
  int ksplit = 1;
  while (ksplit < kWarpsPerCta && m * ksplit / kWarpsPerCta < 1024 && chunks / (ksplit * 2) >= 32) ksplit *= 2;
  // One row and K >= 4096: four warps per row measured best at every 7B shape (H100,
  // graph-timed: o 92%, down 97%, gate_up and lm_head 104-105% of copy bandwidth; batch-1
  // decode 89.8% of the roofline against 85.9% with the split above): shorter per-warp
  // runs, more CTAs in flight. Shorter rows keep the split above (not measured).
  if (N == 1 && chunks >= 512) ksplit = std::max(ksplit, 4);
  // TESSERA_GEMV_KSPLIT=1|2|4|8 forces the split (for tuning runs), where K allows it.
  static const int forced = [] {
    const char* v = std::getenv("TESSERA_GEMV_KSPLIT");
    const int f = v != nullptr ? std::atoi(v) : 0;
    return f == 1 || f == 2 || f == 4 || f == 8 ? f : 0;
  }();
  if (forced > 0 && chunks / forced >= 32) ksplit = forced;
  switch (ksplit) {
    case 1: return Launch<N, 1>(x, w, out, f32_out, k, m, stream);
    case 2: return Launch<N, 2>(x, w, out, f32_out, k, m, stream);
    case 4: return Launch<N, 4>(x, w, out, f32_out, k, m, stream);
    default: return Launch<N, 8>(x, w, out, f32_out, k, m, stream);
  }
}

}  // namespace

bool GemvSupported(int64_t n, int64_t k, const void* x, const void* w) {
  const auto aligned = [](const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; };
  return n >= 1 && n <= kMaxGemvRows && k % 8 == 0 && k > 0 && aligned(x) && aligned(w);
}

void LaunchGemv(const void* x, const void* w, void* out, DType out_dtype, int64_t n, int64_t k, int64_t m,
                cudaStream_t stream) {
  const bool f32 = out_dtype == DType::kF32;
  switch (n) {
    case 1: return LaunchRows<1>(x, w, out, f32, k, m, stream);
    case 2: return LaunchRows<2>(x, w, out, f32, k, m, stream);
    case 3: return LaunchRows<3>(x, w, out, f32, k, m, stream);
    case 4: return LaunchRows<4>(x, w, out, f32, k, m, stream);
    default: return;
  }
}

}  // namespace tessera::cuda
