// Rotary-embedding helpers shared by the fused rope + KV-store kernels (16-bit and FP8
// caches): the per-token angle table in shared memory and the launch grid over tokens.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "kernels/cuda/cuda_launch.h"
#include "runtime/common/dtype.h"

namespace tessera::cuda {

// cos / sin of position * inv_freq[i] for i < half into shared cs / sn, by the whole
// block, which then meets at a barrier. The angle is formed in double: position *
// inv_freq reaches 1e5 rad, where f32 keeps ~1e-2 (the same values as RopeKernel's).
__device__ __forceinline__ void RopeAngles(int32_t position, const float* inv_freq, int32_t half, float* cs,
                                           float* sn) {
  for (int32_t i = threadIdx.x; i < half; i += blockDim.x) {
    double s, c;
    sincos(static_cast<double>(position) * static_cast<double>(inv_freq[i]), &s, &c);
    cs[i] = static_cast<float>(c);
    sn[i] = static_cast<float>(s);
  }
  __syncthreads();
}

// One rotation pair (x1, x2) -> (x1 cos - x2 sin, x2 cos + x1 sin) with every product and
// sum rounded explicitly, so that each kernel that rotates gives the same bits whatever
// the compiler would contract into an fma.
__device__ __forceinline__ void RotatePair(float x1, float x2, float cs, float sn, float* y1, float* y2) {
  *y1 = __fsub_rn(__fmul_rn(x1, cs), __fmul_rn(x2, sn));
  *y2 = __fadd_rn(__fmul_rn(x2, cs), __fmul_rn(x1, sn));
}

// Blocks of `per_block` work items split each token's `per_token` items (grid x); grid y
// strides over the tokens. Few tokens keep one item per thread, so that every load is in
// flight at once; from 64 tokens a block takes four times as many, which spreads its
// angle table over more work.
inline dim3 RopeGrid(int64_t n, int64_t per_token, int64_t per_block) {
  int64_t x = (per_token + per_block - 1) / per_block;
  if (n >= 64) x = (x + 3) / 4;
  return dim3(static_cast<unsigned>(std::max<int64_t>(x, 1)), static_cast<unsigned>(std::min<int64_t>(n, 65535)));
}

// The vectorised fused rope + KV store (cuda_rope_store.cu) for bf16 activations, heads of
// 16 to 256 (a power of two) and a bf16 or FP8 (k_scale/v_scale set) cache, 16-byte
// aligned: false, launching nothing, when the call is outside that.
bool LaunchRopeStoreKvVec(const void* qkv, DType dtype, void* q_out, int64_t q_heads, int64_t kv_heads, int64_t n,
                          const int32_t* positions, const float* inv_freq, int32_t head_dim, const int32_t* slots,
                          int32_t num_slots, void* k_cache, void* v_cache, DType cache_dtype, float* k_scale,
                          float* v_scale, cudaStream_t stream);

}  // namespace tessera::cuda
