// Writes into an FP8 (E4M3) KV cache: one warp per (token, head) finds the head's largest
// magnitude, then stores the E4M3 codes of x * (448 / max|x|) and the scale max|x| / 448,
// the arithmetic of QuantizeKvHeadE4M3 (the CPU reference). The fused form also rotates q
// and k (and writes q), as RopeStoreKvKernel does for a 16-bit cache, with the same angles.
#include <cuda_fp8.h>

#include <cmath>

#include "kernels/cuda/cuda_common.cuh"
#include "kernels/cuda/cuda_launch.h"
#include "kernels/cuda/cuda_pdl.h"
#include "kernels/cuda/cuda_rope.cuh"

namespace tessera::cuda {
namespace {

constexpr int kWarpsPerBlock = 4;
constexpr int kMaxPairsPerLane = 4;  // head_dim <= 256: each lane holds at most 4 pairs

__device__ __forceinline__ float WarpMaxAbs(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

__device__ __forceinline__ uint8_t ToE4M3(float x) {
  return static_cast<uint8_t>(__nv_cvt_float_to_fp8(x, __NV_SATFINITE, __NV_E4M3));
}

// Lane `lane` holds elements i and i + half of the head for i = lane + 32 r (r < pairs);
// writes their codes at codes[i], codes[i + half] and the head's scale.
__device__ __forceinline__ void QuantizeHead(const float (&lo)[kMaxPairsPerLane], const float (&hi)[kMaxPairsPerLane],
                                             int half, int lane, uint8_t* codes, float* scale) {
  float amax = 0.0f;
#pragma unroll
  for (int r = 0; r < kMaxPairsPerLane; ++r) {
    if (lane + 32 * r < half) amax = fmaxf(amax, fmaxf(fabsf(lo[r]), fabsf(hi[r])));
  }
  amax = WarpMaxAbs(amax);
  const float inv = amax > 0.0f ? kE4M3Max / amax : 0.0f;
#pragma unroll
  for (int r = 0; r < kMaxPairsPerLane; ++r) {
    const int i = lane + 32 * r;
    if (i >= half) break;
    codes[i] = ToE4M3(lo[r] * inv);
    codes[i + half] = ToE4M3(hi[r] * inv);
  }
  if (lane == 0) *scale = amax / kE4M3Max;
}

// One warp per unit of a token: units [0, hq) are q heads (rotated, written to q_out), then
// hk k heads (rotated, quantized), then hk v heads (quantized). Blocks of one token (grid y)
// split its units (grid x) and share its angle table (RopeAngles).
__global__ void RopeStoreKvFp8Kernel(const void* qkv, DType dt, void* q_out, int64_t hq, int64_t hk, int64_t n,
                                     const int32_t* positions, const float* inv_freq, int32_t head_dim,
                                     const int32_t* slots, int32_t num_slots, uint8_t* kc, uint8_t* vc, float* ks,
                                     float* vs) {
  PdlStart();
  __shared__ float cs[kRopeMaxHalf], sn[kRopeMaxHalf];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int64_t units = hq + 2 * hk;
  const int32_t half = head_dim / 2;
  const int64_t qdim = hq * head_dim, width = hk * head_dim;
  for (int64_t t = blockIdx.y; t < n; t += gridDim.y) {
    RopeAngles(positions[t], inv_freq, half, cs, sn);
    const int64_t slot = t < num_slots ? slots[t] : -1;
    const int64_t row = t * (qdim + 2 * width);
    for (int64_t u = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + warp; u < units;
         u += static_cast<int64_t>(gridDim.x) * kWarpsPerBlock) {
      if (u >= hq && slot < 0) continue;  // padding token: nothing of its k and v is stored
      float lo[kMaxPairsPerLane] = {}, hi[kMaxPairsPerLane] = {};
      if (u >= hq + hk) {  // v head: stored as it is
        const int64_t src = row + qdim + width + (u - hq - hk) * head_dim;
#pragma unroll
        for (int r = 0; r < kMaxPairsPerLane; ++r) {
          const int i = lane + 32 * r;
          if (i >= half) break;
          lo[r] = LoadAsFloat(qkv, dt, src + i);
          hi[r] = LoadAsFloat(qkv, dt, src + i + half);
        }
        const int64_t h = u - hq - hk;
        QuantizeHead(lo, hi, half, lane, vc + slot * width + h * head_dim, vs + slot * hk + h);
        continue;
      }
      const int64_t src = row + u * head_dim;  // k heads follow q's in the row
#pragma unroll
      for (int r = 0; r < kMaxPairsPerLane; ++r) {
        const int i = lane + 32 * r;
        if (i >= half) break;
        const float x1 = LoadAsFloat(qkv, dt, src + i), x2 = LoadAsFloat(qkv, dt, src + i + half);
        RotatePair(x1, x2, cs[i], sn[i], &lo[r], &hi[r]);
        lo[r] = RoundTo(dt, lo[r]);
        hi[r] = RoundTo(dt, hi[r]);
      }
      if (u < hq) {
        const int64_t o = t * qdim + u * head_dim;
#pragma unroll
        for (int r = 0; r < kMaxPairsPerLane; ++r) {
          const int i = lane + 32 * r;
          if (i >= half) break;
          StoreFromFloat(q_out, dt, o + i, lo[r]);
          StoreFromFloat(q_out, dt, o + i + half, hi[r]);
        }
        continue;
      }
      const int64_t h = u - hq;
      QuantizeHead(lo, hi, half, lane, kc + slot * width + h * head_dim, ks + slot * hk + h);
    }
    __syncthreads();  // the next token's angles overwrite these
  }
}

// One warp per (token, unit): units [0, hk) are k heads, [hk, 2hk) v heads.
__global__ void StoreKvFp8Kernel(const void* k, const void* v, DType dt, const int32_t* slots, int32_t n, int64_t hk,
                                 int32_t head_dim, uint8_t* kc, uint8_t* vc, float* ks, float* vs) {
  PdlStart();
  const int lane = threadIdx.x % 32;
  const int64_t w = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / 32;
  if (w >= n * 2 * hk) return;
  const int64_t t = w / (2 * hk), u = w % (2 * hk);
  const int64_t slot = slots[t];
  if (slot < 0) return;
  const bool is_v = u >= hk;
  const int64_t h = is_v ? u - hk : u, width = hk * head_dim;
  const int32_t half = head_dim / 2;
  const int64_t src = t * width + h * head_dim;
  float lo[kMaxPairsPerLane] = {}, hi[kMaxPairsPerLane] = {};
#pragma unroll
  for (int r = 0; r < kMaxPairsPerLane; ++r) {
    const int i = lane + 32 * r;
    if (i >= half) break;
    lo[r] = LoadAsFloat(is_v ? v : k, dt, src + i);
    hi[r] = LoadAsFloat(is_v ? v : k, dt, src + i + half);
  }
  QuantizeHead(lo, hi, half, lane, (is_v ? vc : kc) + slot * width + h * head_dim,
               (is_v ? vs : ks) + slot * hk + h);
}

unsigned Blocks(int64_t warps) { return static_cast<unsigned>((warps + kWarpsPerBlock - 1) / kWarpsPerBlock); }

}  // namespace

void LaunchRopeStoreKvFp8(const void* qkv, DType dtype, void* q_out, int64_t q_heads, int64_t kv_heads, int64_t n,
                          const int32_t* positions, const float* inv_freq, int32_t head_dim, const int32_t* slots,
                          int32_t num_slots, uint8_t* k_cache, uint8_t* v_cache, float* k_scale, float* v_scale,
                          cudaStream_t stream) {
  const int64_t units = q_heads + 2 * kv_heads;
  if (n <= 0 || units <= 0) return;
  if (LaunchRopeStoreKvVec(qkv, dtype, q_out, q_heads, kv_heads, n, positions, inv_freq, head_dim, slots, num_slots,
                           k_cache, v_cache, DType::kF8E4M3, k_scale, v_scale, stream)) {
    return;
  }
  LaunchPdl(RopeStoreKvFp8Kernel, RopeGrid(n, units, kWarpsPerBlock), kWarpsPerBlock * 32, 0, stream, qkv, dtype, q_out, q_heads,
            kv_heads, n, positions, inv_freq, head_dim, slots, num_slots, k_cache, v_cache, k_scale, v_scale);
}

void LaunchStoreKvFp8(const void* k, const void* v, DType src_dtype, const int32_t* slots, int32_t n,
                      int64_t kv_heads, int32_t head_dim, uint8_t* k_cache, uint8_t* v_cache, float* k_scale,
                      float* v_scale, cudaStream_t stream) {
  const int64_t warps = static_cast<int64_t>(n) * 2 * kv_heads;
  if (warps <= 0) return;
  LaunchPdl(StoreKvFp8Kernel, Blocks(warps), kWarpsPerBlock * 32, 0, stream, k, v, src_dtype, slots, n, kv_heads,
            head_dim, k_cache, v_cache, k_scale, v_scale);
}

}  // namespace tessera::cuda
