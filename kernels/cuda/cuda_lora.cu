// Multi-adapter LoRA on CUDA: out[:, col_offset:] += (x · Aᵀ) · (scale·B)ᵀ per token slot.
// Decode batches (few tokens, typically one adapter each) run BGMV: one fused kernel per
// (layer, target) whose blocks split each token's shrink over the input features, meet
// at a per-token arrival counter, then split the expand over the output columns, so each
// adapter row is read once with 16-byte loads by all SMs. Larger batches (prefill runs of
// one adapter) run SGMV: blocks take tiles of 8 tokens and read each A/Bᵀ row once per
// tile for all the tile's tokens that share a slot.
#include <cuda_bf16.h>

#include <algorithm>

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

// ---- BGMV (decode) -------------------------------------------------------------------
constexpr int kBgmvThreads = 128;
constexpr int kShrinkRows = 16;    // A rows (rank) read per pass: 16 loads of 16 bytes in flight
constexpr int kPrefetchRows = 16;  // Bᵀ rows of a thread's first output chunk loaded before the wait
constexpr int kExpandRows = 8;

__device__ __forceinline__ uint4 LoadRow16(const __nv_bfloat16* row, int64_t chunk, bool valid) {
  return valid ? __ldg(reinterpret_cast<const uint4*>(row) + chunk) : make_uint4(0, 0, 0, 0);
}

__device__ __forceinline__ void Fma8(const uint4& b, float h, float* acc) {
  float f[8];
  Bf16x8ToFloat(b, f);
#pragma unroll
  for (int e = 0; e < 8; ++e) acc[e] = fmaf(h, f[e], acc[e]);
}

// out[t, col_offset + 8c .. +8] += acc; `old` holds those 8 outputs when kVecOut.
template <bool kVecOut>
__device__ __forceinline__ void StoreChunk(const LoraArgs& a, int t, int64_t c, const float* acc, const uint4& old) {
  const int64_t base = static_cast<int64_t>(t) * a.out_cols + a.col_offset + c * 8;
  if constexpr (kVecOut) {
    float o[8];
    Bf16x8ToFloat(old, o);
#pragma unroll
    for (int e = 0; e < 8; ++e) o[e] += acc[e];
    *reinterpret_cast<uint4*>(static_cast<__nv_bfloat16*>(a.out) + base) = FloatToBf16x8(o);
  } else {
#pragma unroll
    for (int e = 0; e < 8; ++e) {
      StoreFromFloat(a.out, a.out_dtype, base + e, LoadAsFloat(a.out, a.out_dtype, base + e) + acc[e]);
    }
  }
}

template <bool kVecOut>
__device__ __forceinline__ uint4 LoadOutChunk(const LoraArgs& a, int t, int64_t c, bool valid) {
  if (!kVecOut || !valid) return make_uint4(0, 0, 0, 0);
  const int64_t base = static_cast<int64_t>(t) * a.out_cols + a.col_offset + c * 8;
  return *reinterpret_cast<const uint4*>(static_cast<const __nv_bfloat16*>(a.out) + base);
}

// Block (split, t): shrinks x[t] over input chunk range `split` into partials[t][split][:],
// waits for the token's other splits, then expands over output chunk range `split`. The
// Bᵀ rows and outputs of each thread's first output chunk are loaded before the shrink,
// so the kernel waits for memory about twice, not five times. Every block of a launch
// must be resident at once (the launcher checks occupancy).
template <bool kVecOut>
__global__ void __launch_bounds__(kBgmvThreads) LoraBgmvKernel(LoraGroupArgs g, int splits, unsigned* counters,
                                                                float* partials) {
  const LoraArgs& a = g.m[blockIdx.z];
  counters += blockIdx.z * 2 * kLoraBgmvMaxTokens;
  partials += static_cast<int64_t>(blockIdx.z) * a.num_tokens * splits * a.max_rank;
  const int t = blockIdx.y, split = blockIdx.x;
  const int s = a.token_slots[t];
  if (s < 0 || s >= a.num_slots) return;
  const int rank = SlotRank(a, s);
  if (rank <= 0) return;
  extern __shared__ float h[];  // [max_rank]
  __shared__ float red[kBgmvThreads / 32][kShrinkRows];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t in = a.in_features, nout = a.out_features;

  const int64_t n8 = nout / 8, per_out = (n8 + splits - 1) / splits;
  const int64_t c0 = split * per_out, c1 = min(n8, c0 + per_out);
  const int64_t c_first = c0 + threadIdx.x;
  const bool has_first = c_first < c1;
  const auto* bt = static_cast<const __nv_bfloat16*>(a.b_t) + static_cast<int64_t>(s) * a.max_rank * nout;
  uint4 b_first[kPrefetchRows];
#pragma unroll
  for (int j = 0; j < kPrefetchRows; ++j) b_first[j] = LoadRow16(bt + static_cast<int64_t>(j) * nout, c_first, has_first && j < rank);
  const uint4 out_first = LoadOutChunk<kVecOut>(a, t, c_first, has_first);

  // Shrink: this split's input chunks (8 features each) against every rank row.
  const int64_t in8 = in / 8, per_in = (in8 + splits - 1) / splits;
  const int64_t k0 = split * per_in, k1 = min(in8, k0 + per_in);
  const auto* x = reinterpret_cast<const uint4*>(static_cast<const __nv_bfloat16*>(a.x) + static_cast<int64_t>(t) * in);
  const auto* A = static_cast<const __nv_bfloat16*>(a.a) + static_cast<int64_t>(s) * a.max_rank * in;
  float* part = partials + (static_cast<int64_t>(t) * splits + split) * a.max_rank;
  for (int r0 = 0; r0 < rank; r0 += kShrinkRows) {
    float acc[kShrinkRows];
#pragma unroll
    for (int j = 0; j < kShrinkRows; ++j) acc[j] = 0.0f;
    for (int64_t k = k0 + threadIdx.x; k < k1; k += kBgmvThreads) {
      uint4 av[kShrinkRows];
#pragma unroll
      for (int j = 0; j < kShrinkRows; ++j) av[j] = LoadRow16(A + static_cast<int64_t>(r0 + j) * in, k, r0 + j < rank);
      float xv[8];
      Bf16x8ToFloat(__ldg(x + k), xv);
#pragma unroll
      for (int j = 0; j < kShrinkRows; ++j) {
        float f[8];
        Bf16x8ToFloat(av[j], f);
#pragma unroll
        for (int e = 0; e < 8; ++e) acc[j] = fmaf(xv[e], f[e], acc[j]);
      }
    }
#pragma unroll
    for (int j = 0; j < kShrinkRows; ++j) {
      float v = acc[j];
#pragma unroll
      for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
      if (lane == 0) red[warp][j] = v;
    }
    __syncthreads();
    if (threadIdx.x < kShrinkRows && r0 + static_cast<int>(threadIdx.x) < rank) {
      float v = 0.0f;
#pragma unroll
      for (int w = 0; w < kBgmvThreads / 32; ++w) v += red[w][threadIdx.x];
      part[r0 + threadIdx.x] = v;
    }
    __syncthreads();
  }

  // Meet the token's other splits; the last block to leave re-arms the counters for the
  // next launch (they start at zero when the workspace is allocated).
  unsigned* arrive = counters + t;
  unsigned* depart = counters + kLoraBgmvMaxTokens + t;
  __threadfence();
  __syncthreads();
  if (threadIdx.x == 0) {
    atomicAdd(arrive, 1u);
    while (*reinterpret_cast<volatile unsigned*>(arrive) < static_cast<unsigned>(splits)) __nanosleep(20);
    __threadfence();
  }
  __syncthreads();
  for (int r = threadIdx.x; r < rank; r += kBgmvThreads) {
    float v = 0.0f;
    for (int sp = 0; sp < splits; ++sp) v += __ldcg(partials + (static_cast<int64_t>(t) * splits + sp) * a.max_rank + r);
    h[r] = v;
  }
  __syncthreads();
  if (threadIdx.x == 0 && atomicAdd(depart, 1u) == static_cast<unsigned>(splits - 1)) {
    atomicExch(arrive, 0u);
    atomicExch(depart, 0u);
  }

  // Expand: this split's output chunks (8 columns each), the first from registers.
  if (has_first) {
    float acc[8];
#pragma unroll
    for (int e = 0; e < 8; ++e) acc[e] = 0.0f;
#pragma unroll
    for (int j = 0; j < kPrefetchRows; ++j) {
      if (j < rank) Fma8(b_first[j], h[j], acc);
    }
    for (int r0 = kPrefetchRows; r0 < rank; r0 += kExpandRows) {
      uint4 bv[kExpandRows];
#pragma unroll
      for (int j = 0; j < kExpandRows; ++j) bv[j] = LoadRow16(bt + static_cast<int64_t>(r0 + j) * nout, c_first, r0 + j < rank);
#pragma unroll
      for (int j = 0; j < kExpandRows; ++j) {
        if (r0 + j < rank) Fma8(bv[j], h[r0 + j], acc);
      }
    }
    StoreChunk<kVecOut>(a, t, c_first, acc, out_first);
  }
  for (int64_t c = c_first + kBgmvThreads; c < c1; c += kBgmvThreads) {
    const uint4 old = LoadOutChunk<kVecOut>(a, t, c, true);
    float acc[8];
#pragma unroll
    for (int e = 0; e < 8; ++e) acc[e] = 0.0f;
    for (int r0 = 0; r0 < rank; r0 += kExpandRows) {
      uint4 bv[kExpandRows];
#pragma unroll
      for (int j = 0; j < kExpandRows; ++j) bv[j] = LoadRow16(bt + static_cast<int64_t>(r0 + j) * nout, c, r0 + j < rank);
#pragma unroll
      for (int j = 0; j < kExpandRows; ++j) {
        if (r0 + j < rank) Fma8(bv[j], h[r0 + j], acc);
      }
    }
    StoreChunk<kVecOut>(a, t, c, acc, old);
  }
}

bool Aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

bool VecOut(const LoraArgs& a) {
  return a.out_dtype == DType::kBF16 && a.out_cols % 8 == 0 && a.col_offset % 8 == 0 && Aligned16(a.out);
}

// Blocks of the BGMV kernel that fit on the device at once (every block must be resident),
// counted with the largest shared memory a launch asks for (max_rank <= 1024).
int BgmvResidentBlocks(int num_sms) {
  static const int per_sm = [] {
    int vec = 0, scalar = 0;
    cudaOccupancyMaxActiveBlocksPerMultiprocessor(&vec, LoraBgmvKernel<true>, kBgmvThreads, 1024 * sizeof(float));
    cudaOccupancyMaxActiveBlocksPerMultiprocessor(&scalar, LoraBgmvKernel<false>, kBgmvThreads, 1024 * sizeof(float));
    cudaGetLastError();
    return std::min(vec, scalar);
  }();
  return per_sm * num_sms;
}

// SGMV (any number of tokens): shrink into h [tokens, max_rank], then expand.
void LaunchSgmv(const LoraArgs& a, float* floats, cudaStream_t stream) {
  if (a.out_features == 0) return;
  float* h = floats;
  const unsigned tiles = static_cast<unsigned>((a.num_tokens + kTile - 1) / kTile);
  const bool vec_in = a.in_features % 8 == 0 && Aligned16(a.x) && Aligned16(a.a);
  const dim3 shrink_grid(tiles, static_cast<unsigned>((a.max_rank + kWarps - 1) / kWarps));
  if (vec_in) {
    LoraShrinkKernel<true><<<shrink_grid, kThreads, 0, stream>>>(a, h);
  } else {
    LoraShrinkKernel<false><<<shrink_grid, kThreads, 0, stream>>>(a, h);
  }
  const bool vec_out = a.out_features % 8 == 0 && Aligned16(a.b_t) &&
                       (a.out_dtype != DType::kBF16 ||
                        (a.out_cols % 8 == 0 && a.col_offset % 8 == 0 && Aligned16(a.out)));
  if (vec_out) {
    const dim3 grid(tiles, static_cast<unsigned>((a.out_features / 8 + kThreads - 1) / kThreads));
    LoraExpandKernel<8><<<grid, kThreads, 0, stream>>>(a, h);
  } else {
    const dim3 grid(tiles, static_cast<unsigned>((a.out_features + kThreads - 1) / kThreads));
    LoraExpandKernel<1><<<grid, kThreads, 0, stream>>>(a, h);
  }
}


}  // namespace

LoraPlan PlanLoraApply(const LoraGroupArgs& g, int num_sms) {
  LoraPlan p;
  const LoraArgs& a = g.m[0];  // the group shares x, tokens and slot tables
  const size_t sgmv_bytes = static_cast<size_t>(a.num_tokens) * static_cast<size_t>(a.max_rank) * sizeof(float);
  p.workspace_bytes = kLoraCounterBytes + sgmv_bytes;
  bool vec = true;
  int64_t in8 = 0, n8 = 0;
  for (int i = 0; i < g.count; ++i) {
    const LoraArgs& m = g.m[i];
    vec = vec && m.in_features % 8 == 0 && m.out_features % 8 == 0 && Aligned16(m.x) && Aligned16(m.a) &&
          Aligned16(m.b_t);
    in8 = std::max(in8, m.in_features / 8);
    n8 = std::max(n8, m.out_features / 8);
  }
  if (!vec || a.num_tokens > kLoraBgmvMaxTokens || a.max_rank > 1024 || num_sms <= 0) return p;
  // Every block of the launch must be resident at once (the blocks of a token wait for
  // each other).
  const int64_t blocks_per_split = static_cast<int64_t>(a.num_tokens) * g.count;
  const int resident = BgmvResidentBlocks(num_sms);
  // About one input and one output chunk per thread, and enough blocks to fill the SMs.
  int64_t splits = std::max({(in8 + kBgmvThreads - 1) / kBgmvThreads, (n8 + kBgmvThreads - 1) / kBgmvThreads,
                             (num_sms + blocks_per_split - 1) / blocks_per_split});
  splits = std::min<int64_t>(splits, std::max<int64_t>(1, in8 / 32));
  splits = std::min<int64_t>(splits, resident / blocks_per_split);
  if (splits < 1) return p;
  p.bgmv = true;
  p.splits = static_cast<int32_t>(splits);
  p.workspace_bytes =
      kLoraCounterBytes + static_cast<size_t>(a.num_tokens) * splits * a.max_rank * sizeof(float) * g.count;
  return p;
}

void LaunchLoraApply(const LoraGroupArgs& g, const LoraPlan& plan, void* workspace, cudaStream_t stream) {
  const LoraArgs& a0 = g.m[0];
  if (g.count <= 0 || a0.num_tokens == 0 || a0.max_rank == 0) return;
  auto* counters = static_cast<unsigned*>(workspace);
  auto* floats = reinterpret_cast<float*>(static_cast<char*>(workspace) + kLoraCounterBytes);
  if (plan.bgmv) {
    bool vec_out = true;
    for (int i = 0; i < g.count; ++i) vec_out = vec_out && VecOut(g.m[i]);
    const dim3 grid(static_cast<unsigned>(plan.splits), static_cast<unsigned>(a0.num_tokens),
                    static_cast<unsigned>(g.count));
    const size_t smem = static_cast<size_t>(a0.max_rank) * sizeof(float);
    if (vec_out) {
      LoraBgmvKernel<true><<<grid, kBgmvThreads, smem, stream>>>(g, plan.splits, counters, floats);
    } else {
      LoraBgmvKernel<false><<<grid, kBgmvThreads, smem, stream>>>(g, plan.splits, counters, floats);
    }
    return;
  }
  for (int i = 0; i < g.count; ++i) LaunchSgmv(g.m[i], floats, stream);
}

}  // namespace tessera::cuda
