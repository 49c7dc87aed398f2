// Skinny GEMM y[n, m] = x[n, k] · W[m, k]ᵀ for decode batches (n <= 8): memory-bound on
// reading W once, which cuBLASLt's general kernels do at ~70% of copy bandwidth at these
// shapes. One warp per output feature streams its W row in 16-byte loads, kUnroll of
// them in flight per lane; x rows come through L1 (every warp of the SM reads the same
// x); f32 accumulation, then a warp reduction per batch row.
#include <cuda_bf16.h>

#include "kernels/cuda/cuda_common.cuh"
#include "kernels/cuda/cuda_launch.h"

namespace tessera::cuda {
namespace {

constexpr int kWarpsPerCta = 8;
constexpr int kUnroll = 4;

template <int N, bool kF32Out>
__global__ void __launch_bounds__(kWarpsPerCta * 32) GemvKernel(const __nv_bfloat16* __restrict__ x,
                                                                const __nv_bfloat16* __restrict__ w,
                                                                void* __restrict__ out, int64_t k, int64_t m) {
  const int lane = threadIdx.x % 32;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kWarpsPerCta + threadIdx.x / 32;
  if (row >= m) return;
  const int64_t chunks = k / 8;  // 16-byte chunks per row
  const uint4* wrow = reinterpret_cast<const uint4*>(w + row * k);
  const uint4* xv = reinterpret_cast<const uint4*>(x);
  float acc[N];
#pragma unroll
  for (int j = 0; j < N; ++j) acc[j] = 0.0f;

  int64_t c = lane;
  // Main loop: kUnroll independent 16-byte W loads per lane before any use.
  for (; c + (kUnroll - 1) * 32 < chunks; c += kUnroll * 32) {
    uint4 wv[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) wv[u] = __ldcs(wrow + c + u * 32);  // streamed: W is read once
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      float wf[8];
      Bf16x8ToFloat(wv[u], wf);
#pragma unroll
      for (int j = 0; j < N; ++j) {
        float xf[8];
        Bf16x8ToFloat(__ldg(xv + j * chunks + c + u * 32), xf);
#pragma unroll
        for (int e = 0; e < 8; ++e) acc[j] = fmaf(wf[e], xf[e], acc[j]);
      }
    }
  }
  for (; c < chunks; c += 32) {
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
#pragma unroll
  for (int j = 0; j < N; ++j) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) acc[j] += __shfl_xor_sync(0xffffffffu, acc[j], o);
  }
  if (lane < N) {
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
}

template <int N>
void Launch(const void* x, const void* w, void* out, bool f32_out, int64_t k, int64_t m, cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>((m + kWarpsPerCta - 1) / kWarpsPerCta));
  const auto* xb = static_cast<const __nv_bfloat16*>(x);
  const auto* wb = static_cast<const __nv_bfloat16*>(w);
  if (f32_out) GemvKernel<N, true><<<grid, kWarpsPerCta * 32, 0, stream>>>(xb, wb, out, k, m);
  else GemvKernel<N, false><<<grid, kWarpsPerCta * 32, 0, stream>>>(xb, wb, out, k, m);
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
    case 1: return Launch<1>(x, w, out, f32, k, m, stream);
    case 2: return Launch<2>(x, w, out, f32, k, m, stream);
    case 3: return Launch<3>(x, w, out, f32, k, m, stream);
    case 4: return Launch<4>(x, w, out, f32, k, m, stream);
    case 5: return Launch<5>(x, w, out, f32, k, m, stream);
    case 6: return Launch<6>(x, w, out, f32, k, m, stream);
    case 7: return Launch<7>(x, w, out, f32, k, m, stream);
    case 8: return Launch<8>(x, w, out, f32, k, m, stream);
    default: return;
  }
}

}  // namespace tessera::cuda
