// The fused rope + KV store of bf16 activations, vectorised: a thread moves 16 bytes of
// each half of a head (8 rotation pairs of q or k, or 16 elements of v), so a 128-wide
// head takes 8 threads; an FP8 cache's per-head scale is a max over those 8 lanes. The
// arithmetic is that of the generic kernels (RopeStoreKvKernel, RopeStoreKvFp8Kernel):
// RotatePair on the token's angle table, k rounded to bf16 before it is quantized, the
// codes of QuantizeKvHeadE4M3.
#include <cuda_bf16.h>
#include <cuda_fp8.h>

#include "kernels/cuda/cuda_common.cuh"
#include "kernels/cuda/cuda_pdl.h"
#include "kernels/cuda/cuda_rope.cuh"

namespace tessera::cuda {
namespace {

constexpr int kThreads = 256;

__device__ __forceinline__ uint32_t PackE4M3x4(const float* x, float inv) {
  uint32_t w = 0;
#pragma unroll
  for (int e = 0; e < 4; ++e) {
    w |= static_cast<uint32_t>(__nv_cvt_float_to_fp8(x[e] * inv, __NV_SATFINITE, __NV_E4M3)) << (8 * e);
  }
  return w;
}

struct VecArgs {
  const uint4* qkv;
  uint4* q_out;
  int hq, hk, n, head_dim, tph_log2, num_slots;
  const int32_t* positions;
  const float* inv_freq;
  const int32_t* slots;
  void* kc;
  void* vc;
  float* ks;
  float* vs;
};

// Work item w of token t (unit w / tph, chunk w % tph): rotates and stores the 16 bytes
// lo_raw / hi_raw of each half (q to q_out, k and v to the cache).
template <bool kFp8>
__device__ __forceinline__ void StoreItem(const VecArgs& a, int t, int64_t slot, int w, uint4 lo_raw, uint4 hi_raw,
                                          const float* cs, const float* sn, unsigned group) {
  const int tph = 1 << a.tph_log2, half = a.head_dim / 2;
  const int head_chunks = a.head_dim / 8, half_chunks = half / 8;
  const int u = w >> a.tph_log2, c = w & (tph - 1);
  if (u >= a.hq && slot < 0) return;  // padding token: nothing of its k and v is stored
  float lo[8], hi[8];
  Bf16x8ToFloat(lo_raw, lo);
  Bf16x8ToFloat(hi_raw, hi);
  const bool is_v = u >= a.hq + a.hk;
  if (!is_v) {
#pragma unroll
    for (int e = 0; e < 8; ++e) {
      float y1, y2;
      RotatePair(lo[e], hi[e], cs[8 * c + e], sn[8 * c + e], &y1, &y2);
      lo[e] = __bfloat162float(__float2bfloat16(y1));  // as Rope then StoreKv would hold it
      hi[e] = __bfloat162float(__float2bfloat16(y2));
    }
  }
  if (u < a.hq) {
    uint4* o = a.q_out + static_cast<int64_t>(t) * a.hq * head_chunks + u * head_chunks;
    o[c] = FloatToBf16x8(lo);
    o[half_chunks + c] = FloatToBf16x8(hi);
    return;
  }
  const int h = is_v ? u - a.hq - a.hk : u - a.hq;
  const int64_t at = (slot * a.hk + h) * a.head_dim;  // the head's first element in the cache
  if constexpr (!kFp8) {
    uint4* dst = reinterpret_cast<uint4*>(static_cast<__nv_bfloat16*>(is_v ? a.vc : a.kc) + at);
    dst[c] = FloatToBf16x8(lo);
    dst[half_chunks + c] = FloatToBf16x8(hi);
  } else {
    float amax = 0.0f;
#pragma unroll
    for (int e = 0; e < 8; ++e) amax = fmaxf(amax, fmaxf(fabsf(lo[e]), fabsf(hi[e])));
    for (int o = tph / 2; o > 0; o >>= 1) amax = fmaxf(amax, __shfl_xor_sync(group, amax, o));
    const float inv = amax > 0.0f ? kE4M3Max / amax : 0.0f;
    uint2* dst = reinterpret_cast<uint2*>(static_cast<uint8_t*>(is_v ? a.vc : a.kc) + at);
    dst[c] = make_uint2(PackE4M3x4(lo, inv), PackE4M3x4(lo + 4, inv));
    dst[half_chunks + c] = make_uint2(PackE4M3x4(hi, inv), PackE4M3x4(hi + 4, inv));
    if (c == 0) (is_v ? a.vs : a.ks)[slot * a.hk + h] = amax / kE4M3Max;
  }
}

// Grid y strides over tokens, grid x with the block's threads over the token's
// units * tph work items (tph = head_dim / 16 threads per head, a power of two <= 16, so a
// head's threads are aligned lanes of one warp and leave or take a branch together). Each
// thread's next item is loaded before the current one is stored. The first token's angle
// table is formed before PdlWait (positions and frequencies are written before the step's
// first kernel), so its double-precision sincos overlaps the previous kernel; later tokens'
// tables after their first item's load.
template <bool kFp8>
__global__ void RopeStoreKvVecKernel(VecArgs a) {
  __shared__ float cs[kRopeMaxHalf], sn[kRopeMaxHalf];
  PdlLaunchDependents();
  if (static_cast<int>(blockIdx.y) < a.n) RopeAngles(a.positions[blockIdx.y], a.inv_freq, a.head_dim / 2, cs, sn);
  PdlWait();
  const int tph = 1 << a.tph_log2, head_chunks = a.head_dim / 8, half_chunks = a.head_dim / 16;
  const int per_token = (a.hq + 2 * a.hk) << a.tph_log2;
  const int64_t row_chunks = static_cast<int64_t>(a.hq + 2 * a.hk) * head_chunks;
  const int lane = threadIdx.x % 32, stride = gridDim.x * blockDim.x;
  const unsigned group = ((1u << tph) - 1) << (lane & ~(tph - 1));
  for (int t = blockIdx.y; t < a.n; t += gridDim.y) {
    const uint4* row = a.qkv + t * row_chunks;
    auto load = [&](int w, uint4* lo, uint4* hi) {
      const int at = (w >> a.tph_log2) * head_chunks + (w & (tph - 1));
      *lo = row[at];
      *hi = row[at + half_chunks];
    };
    int w = blockIdx.x * blockDim.x + threadIdx.x;
    uint4 lo = make_uint4(0, 0, 0, 0), hi = lo;
    if (w < per_token) load(w, &lo, &hi);
    if (t != static_cast<int>(blockIdx.y)) RopeAngles(a.positions[t], a.inv_freq, a.head_dim / 2, cs, sn);
    const int64_t slot = t < a.num_slots ? a.slots[t] : -1;
    while (w < per_token) {
      const int next = w + stride;
      uint4 next_lo = lo, next_hi = hi;
      if (next < per_token) load(next, &next_lo, &next_hi);
      StoreItem<kFp8>(a, t, slot, w, lo, hi, cs, sn, group);
      w = next;
      lo = next_lo;
      hi = next_hi;
    }
    __syncthreads();  // the next token's angles overwrite these
  }
}

bool Aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

}  // namespace

bool LaunchRopeStoreKvVec(const void* qkv, DType dtype, void* q_out, int64_t q_heads, int64_t kv_heads, int64_t n,
                          const int32_t* positions, const float* inv_freq, int32_t head_dim, const int32_t* slots,
                          int32_t num_slots, void* k_cache, void* v_cache, DType cache_dtype, float* k_scale,
                          float* v_scale, cudaStream_t stream) {
  const bool fp8 = cache_dtype == DType::kF8E4M3;
  int tph_log2 = 0;
  while ((16 << tph_log2) < head_dim) ++tph_log2;
  if (dtype != DType::kBF16 || (cache_dtype != DType::kBF16 && !fp8) || (fp8 && (!k_scale || !v_scale)) ||
      head_dim < 16 || head_dim > 2 * kRopeMaxHalf || (16 << tph_log2) != head_dim || n <= 0 || n > (1 << 24) ||
      q_heads <= 0 || kv_heads <= 0 || q_heads + 2 * kv_heads > (1 << 16) || !Aligned16(qkv) || !Aligned16(q_out) ||
      !Aligned16(k_cache) || !Aligned16(v_cache)) {
    return false;
  }
  const int64_t per_token = (q_heads + 2 * kv_heads) << tph_log2;
  const dim3 grid = RopeGrid(n, per_token, kThreads);
  VecArgs args{static_cast<const uint4*>(qkv), static_cast<uint4*>(q_out), static_cast<int>(q_heads),
               static_cast<int>(kv_heads), static_cast<int>(n), static_cast<int>(head_dim), tph_log2,
               static_cast<int>(num_slots), positions, inv_freq, slots, k_cache, v_cache, k_scale, v_scale};
  LaunchPdl(fp8 ? RopeStoreKvVecKernel<true> : RopeStoreKvVecKernel<false>, grid, kThreads, 0, stream, args);
  return true;
}

}  // namespace tessera::cuda
