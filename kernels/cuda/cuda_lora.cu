// Multi-adapter LoRA on CUDA: shrink (h = x · Aᵀ into the rank) then expand
// (out[:, col_offset:] += h · (scale·B)ᵀ). Each block takes a tile of 8 consecutive tokens and
// walks the distinct slots in it: a prefill run of one adapter reads each A/Bᵀ row once
// per tile (SGMV), scattered decode tokens fall back to one token per row read (BGMV).
#include <cuda_bf16.h>

#include "kernels/cuda/cuda_common.cuh"
#include "kernels/cuda/cuda_quant_launch.h"

namespace tessera::cuda {
namespace {

constexpr int kTile = 8;
constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;

// Slots of the tile's tokens (-1 past the end or out of range) and, for each token that is
// the first of its slot in the tile, the mask of the tile's tokens sharing that slot.
__device__ void LoadTileSlots(const LoraArgs& a, int64_t t0, int* slots, unsigned* masks) {
  if (threadIdx.x < kTile) {
    const int64_t t = t0 + threadIdx.x;
    int s = t < a.num_tokens ? a.token_slots[t] : -1;
    if (s >= a.num_slots) s = -1;  // the CPU reference rejects these; the device leaves them alone
    slots[threadIdx.x] = s;
  }
  __syncthreads();
  if (threadIdx.x < kTile) {
    const int lead = threadIdx.x, s = slots[lead];
    unsigned mask = 0;
    bool first = s >= 0;
    for (int j = 0; j < kTile; ++j) {
      if (slots[j] != s) continue;
      if (j < lead) first = false;
      mask |= 1u << j;
    }
    masks[lead] = first ? mask : 0u;
  }
  __syncthreads();
}

__device__ __forceinline__ int SlotRank(const LoraArgs& a, int s) { return min(a.ranks[s], a.max_rank); }

// h[t, r] = x[t] · A_s[r] for r < rank_s. Warp w of block (tile, y) owns rank row y*8 + w.
template <bool kVec>
__global__ void __launch_bounds__(kThreads) LoraShrinkKernel(LoraArgs a, float* h) {
  __shared__ int slots[kTile];
  __shared__ unsigned masks[kTile];
  const int64_t t0 = static_cast<int64_t>(blockIdx.x) * kTile;
  LoadTileSlots(a, t0, slots, masks);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int r = blockIdx.y * kWarps + warp;
  const int64_t in = a.in_features;
  const auto* x = static_cast<const __nv_bfloat16*>(a.x);
  for (int lead = 0; lead < kTile; ++lead) {
    const unsigned mask = masks[lead];
    if (mask == 0) continue;
    const int s = slots[lead];
    if (r >= SlotRank(a, s)) continue;
    const auto* arow = static_cast<const __nv_bfloat16*>(a.a) + (static_cast<int64_t>(s) * a.max_rank + r) * in;
    float acc[kTile];
#pragma unroll
    for (int j = 0; j < kTile; ++j) acc[j] = 0.0f;
    if constexpr (kVec) {
      for (int64_t i = lane * 8; i < in; i += 32 * 8) {
        float av[8];
        Bf16x8ToFloat(*reinterpret_cast<const uint4*>(arow + i), av);
#pragma unroll
        for (int j = 0; j < kTile; ++j) {
          if (!(mask & (1u << j))) continue;
          float xv[8];
          Bf16x8ToFloat(*reinterpret_cast<const uint4*>(x + (t0 + j) * in + i), xv);
#pragma unroll
          for (int e = 0; e < 8; ++e) acc[j] = fmaf(xv[e], av[e], acc[j]);
        }
      }
    } else {
      for (int64_t i = lane; i < in; i += 32) {
        const float av = __bfloat162float(arow[i]);
#pragma unroll
        for (int j = 0; j < kTile; ++j) {
          if (mask & (1u << j)) acc[j] = fmaf(__bfloat162float(x[(t0 + j) * in + i]), av, acc[j]);
        }
      }
    }
#pragma unroll
    for (int j = 0; j < kTile; ++j) {
      if (!(mask & (1u << j))) continue;
      float v = acc[j];
#pragma unroll
      for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
      if (lane == 0) h[(t0 + j) * a.max_rank + r] = v;
    }
  }
}

// out[t, col_offset + c] += Σ_r h[t, r] · Bᵀ_s[r, c]; each thread owns kVec adjacent columns.
template <int kVec>
__global__ void __launch_bounds__(kThreads) LoraExpandKernel(LoraArgs a, const float* h) {
  __shared__ int slots[kTile];
  __shared__ unsigned masks[kTile];
  const int64_t t0 = static_cast<int64_t>(blockIdx.x) * kTile;
  LoadTileSlots(a, t0, slots, masks);
  const int64_t c = (static_cast<int64_t>(blockIdx.y) * kThreads + threadIdx.x) * kVec;
  const int64_t nout = a.out_features;
  if (c >= nout) return;
  for (int lead = 0; lead < kTile; ++lead) {
    const unsigned mask = masks[lead];
    if (mask == 0) continue;
    const int s = slots[lead];
    const int rank = SlotRank(a, s);
    const auto* bt = static_cast<const __nv_bfloat16*>(a.b_t) + static_cast<int64_t>(s) * a.max_rank * nout;
    float acc[kTile][kVec];
#pragma unroll
    for (int j = 0; j < kTile; ++j)
#pragma unroll
      for (int e = 0; e < kVec; ++e) acc[j][e] = 0.0f;
    for (int r = 0; r < rank; ++r) {
      float bv[kVec];
      if constexpr (kVec == 8) {
        Bf16x8ToFloat(*reinterpret_cast<const uint4*>(bt + r * nout + c), bv);
      } else {
        bv[0] = __bfloat162float(bt[r * nout + c]);
      }
#pragma unroll
      for (int j = 0; j < kTile; ++j) {
        if (!(mask & (1u << j))) continue;
        const float hv = h[(t0 + j) * a.max_rank + r];
#pragma unroll
        for (int e = 0; e < kVec; ++e) acc[j][e] = fmaf(hv, bv[e], acc[j][e]);
      }
    }
#pragma unroll
    for (int j = 0; j < kTile; ++j) {
      if (!(mask & (1u << j)) || rank == 0) continue;
      const int64_t base = (t0 + j) * a.out_cols + a.col_offset + c;
      if (kVec == 8 && a.out_dtype == DType::kBF16) {
        auto* p = reinterpret_cast<uint4*>(static_cast<__nv_bfloat16*>(a.out) + base);
        float o[8];
        Bf16x8ToFloat(*p, o);
#pragma unroll
        for (int e = 0; e < 8; ++e) o[e] += acc[j][e];
        *p = FloatToBf16x8(o);
      } else {
#pragma unroll
        for (int e = 0; e < kVec; ++e) {
          StoreFromFloat(a.out, a.out_dtype, base + e, LoadAsFloat(a.out, a.out_dtype, base + e) + acc[j][e]);
        }
      }
    }
  }
}

bool Aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

}  // namespace

size_t LoraWorkspaceBytes(const LoraArgs& a) {
  return static_cast<size_t>(a.num_tokens) * static_cast<size_t>(a.max_rank) * sizeof(float);
}

void LaunchLoraApply(const LoraArgs& a, float* workspace, cudaStream_t stream) {
  if (a.num_tokens == 0 || a.max_rank == 0 || a.out_features == 0) return;
  const unsigned tiles = static_cast<unsigned>((a.num_tokens + kTile - 1) / kTile);
  const bool vec_in = a.in_features % 8 == 0 && Aligned16(a.x) && Aligned16(a.a);
  const dim3 shrink_grid(tiles, static_cast<unsigned>((a.max_rank + kWarps - 1) / kWarps));
  if (vec_in) {
    LoraShrinkKernel<true><<<shrink_grid, kThreads, 0, stream>>>(a, workspace);
  } else {
    LoraShrinkKernel<false><<<shrink_grid, kThreads, 0, stream>>>(a, workspace);
  }
  const bool vec_out = a.out_features % 8 == 0 && Aligned16(a.b_t) &&
                       (a.out_dtype != DType::kBF16 ||
                        (a.out_cols % 8 == 0 && a.col_offset % 8 == 0 && Aligned16(a.out)));
  if (vec_out) {
    const dim3 grid(tiles, static_cast<unsigned>((a.out_features / 8 + kThreads - 1) / kThreads));
    LoraExpandKernel<8><<<grid, kThreads, 0, stream>>>(a, workspace);
  } else {
    const dim3 grid(tiles, static_cast<unsigned>((a.out_features + kThreads - 1) / kThreads));
    LoraExpandKernel<1><<<grid, kThreads, 0, stream>>>(a, workspace);
  }
}

}  // namespace tessera::cuda
