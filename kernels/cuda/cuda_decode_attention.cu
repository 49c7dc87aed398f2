// Split-K paged decode attention (flash-decoding) on CUDA cores, for the head dims the
// tensor-core kernel (cuda_decode_mma.cu) does not take: 8, 16 and 256. One CTA per (kv
// head, sequence, context partition) holds every query head of its GQA group, so each K/V
// page is read once per kv head; pages stream through a 3-stage cp.async pipeline in
// 16-byte chunks. Partitions are merged by a small reduce kernel when the context was split.
#include <cuda_bf16.h>

#include <algorithm>
#include <cmath>

#include "kernels/cuda/cuda_common.cuh"
#include "kernels/cuda/cuda_decode_internal.h"
#include "kernels/cuda/cuda_decode_partials.cuh"
#include "kernels/cuda/cuda_launch.h"
#include "kernels/cuda/cuda_pdl.h"
#include "kernels/cuda/cuda_prefill_internal.h"

namespace tessera::cuda {
namespace {

constexpr int kThreads = 128;
constexpr int kTile = 32;  // tokens per pipeline stage; one softmax lane per token
constexpr int kStages = 3;
constexpr float kLog2e = 1.4426950408889634f;
constexpr int kHeadsPerUnit = 4;
constexpr int kMaxStagedPages = 1024;  // block-table entries a CTA stages (4 KiB)

template <int D>
struct DecodeShape {
  static constexpr int kChunks = D / 8;                  // 16-byte chunks per head row
  static constexpr int kLanes = kChunks < 4 ? kChunks : 4;  // lanes sharing one q·k dot
  static constexpr int kTokPerWarp = 32 / kLanes;
  static constexpr int kRowBytes = D * 2 + 16;           // +16: conflict-free 16-byte reads
  static constexpr int kStageBytes = 2 * kTile * kRowBytes;
  static_assert(((kMaxAttentionGroup + 3) / 4) * kChunks <= kThreads, "one p·V unit per thread at most");
  // Pipeline stages, then q, scores and softmax state of each head, then the partition's
  // page numbers (`pages` ints).
  static size_t SmemBytes(int group, int pages) {
    return static_cast<size_t>(kStages) * kStageBytes +
           sizeof(float) * (static_cast<size_t>(group) * D + group * kTile + 3 * group) +
           sizeof(int32_t) * static_cast<size_t>(pages);
  }
};

__device__ __forceinline__ float WarpMax(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}
__device__ __forceinline__ float WarpSum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// q·k of one cached token for NH heads (a compile-time count, so no predicated-off
// work is issued when the group is small); kLanes lanes share the dot.
template <int D, int NH>
__device__ __forceinline__ void QkHeads(const char* krow, const float* q, int qk_lane, float* s_out, bool valid) {
  using S = DecodeShape<D>;
  float dot[NH];
#pragma unroll
  for (int h = 0; h < NH; ++h) dot[h] = 0.0f;
#pragma unroll
  for (int i = 0; i < S::kChunks / S::kLanes; ++i) {
    const int c = qk_lane + i * S::kLanes;
    float kf[8];
    Bf16x8ToFloat(*reinterpret_cast<const uint4*>(krow + c * 16), kf);
#pragma unroll
    for (int h = 0; h < NH; ++h) {
      const float4 q0 = *reinterpret_cast<const float4*>(q + h * D + c * 8);
      const float4 q1 = *reinterpret_cast<const float4*>(q + h * D + c * 8 + 4);
      dot[h] += q0.x * kf[0] + q0.y * kf[1] + q0.z * kf[2] + q0.w * kf[3] + q1.x * kf[4] + q1.y * kf[5] +
                q1.z * kf[6] + q1.w * kf[7];
    }
  }
#pragma unroll
  for (int h = 0; h < NH; ++h) {
#pragma unroll
    for (int o = S::kTokPerWarp; o < 32; o <<= 1) dot[h] += __shfl_xor_sync(0xffffffffu, dot[h], o);
    if (qk_lane == 0) s_out[h * kTile] = valid ? dot[h] : -INFINITY;
  }
}

// acc[h] = acc[h] * alpha[h] + sum over this thread's tokens of p[h][tok] * V[tok][chunk c].
template <int D, int NH>
__device__ __forceinline__ void PvHeads(float (&acc)[kHeadsPerUnit][8], const char* vs, const float* p,
                                        const float* alphas, int tok0, int groups, int c) {
  using S = DecodeShape<D>;
#pragma unroll
  for (int h = 0; h < NH; ++h) {
    const float alpha = alphas[h];
#pragma unroll
    for (int e = 0; e < 8; ++e) acc[h][e] *= alpha;
  }
  for (int tok = tok0; tok < kTile; tok += groups) {
    float vf[8];
    Bf16x8ToFloat(*reinterpret_cast<const uint4*>(vs + tok * S::kRowBytes + c * 16), vf);
#pragma unroll
    for (int h = 0; h < NH; ++h) {
      const float ph = p[h * kTile + tok];
#pragma unroll
      for (int e = 0; e < 8; ++e) acc[h][e] += ph * vf[e];
    }
  }
}

// Partial results of split s for (seq, head): o [D] normalised by its own sum, then
// (max in log2 units, sum) in ml.
// The partition's block-table entries are staged in shared memory first (PartitionPages).
template <int D>
__global__ void __launch_bounds__(kThreads) DecodeKernel(AttentionArgs a, int partition, int page_cap,
                                                         float* o_part, float* ml_part) {
  using S = DecodeShape<D>;
  const int kvh = blockIdx.x, seq = blockIdx.y, split = blockIdx.z, splits = gridDim.z;
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int G = a.num_heads / a.num_kv_heads;
  PdlStart();
  const int t = a.query_start[seq];
  if (a.query_start[seq + 1] - t != 1) return;  // empty, or a prefill (its own kernel)
  const int len = a.positions[t] + 1;
  const int start = split * partition;
  const int end = split == splits - 1 ? len : min(len, start + partition);

  extern __shared__ uint4 smem_raw[];
  char* kv = reinterpret_cast<char*>(smem_raw);
  float* qs = reinterpret_cast<float*>(kv + kStages * S::kStageBytes);
  float* ss = qs + G * D;
  float* ms = ss + G * kTile;
  float* ls = ms + G;
  float* alphas = ls + G;
  int32_t* pages = reinterpret_cast<int32_t*>(alphas + G);

  if (start >= end) {  // nothing of this sequence falls in this partition
    WriteEmptyPartition<D>(a, seq, t, kvh, G, split, splits, o_part, ml_part, tid, kThreads);
    return;
  }

  const __nv_bfloat16* q = static_cast<const __nv_bfloat16*>(a.q) + static_cast<int64_t>(t) * a.q_stride;
  const float qscale = a.scale * kLog2e;  // softmax in base 2
  for (int u = tid; u < G * D; u += kThreads) qs[u] = __bfloat162float(q[kvh * G * D + u]) * qscale;
  if (tid < G) {
    ms[tid] = -INFINITY;
    ls[tid] = 0.0f;
  }

  const char* kc = static_cast<const char*>(a.k_cache);
  const char* vc = static_cast<const char*>(a.v_cache);
  const int64_t slot_bytes = static_cast<int64_t>(a.num_kv_heads) * D * 2;
  const PartitionPages pp = StagePartitionPages(a.block_tables + static_cast<int64_t>(seq) * a.max_blocks_per_seq,
                                                a.block_size, start, end, page_cap, pages, tid, kThreads);
  if (pp.staged) __syncthreads();  // the prologue's tile loads read the staged pages
  auto load_tile = [&](int tile, int stage) {
    char* kd = kv + stage * S::kStageBytes;
    char* vd = kd + kTile * S::kRowBytes;
    const int tile_start = start + tile * kTile;
    for (int idx = tid; idx < kTile * S::kChunks; idx += kThreads) {
      const int tok = idx / S::kChunks, c = idx % S::kChunks;
      const int j = tile_start + tok;
      const bool valid = j < end;
      int64_t off = 0;
      if (valid) off = pp.Slot(j) * slot_bytes + (kvh * D + c * 8) * 2;
      CpAsync16(kd + tok * S::kRowBytes + c * 16, kc + off, valid);
      CpAsync16(vd + tok * S::kRowBytes + c * 16, vc + off, valid);
    }
  };

  const int n_tiles = (end - start + kTile - 1) / kTile;
#pragma unroll
  for (int i = 0; i < kStages - 1; ++i) {
    if (i < n_tiles) load_tile(i, i);
    CpAsyncCommit();
  }

  // q·k: kLanes lanes (kTokPerWarp apart in the warp) share one token's dot.
  const int qk_tok = warp * S::kTokPerWarp + lane % S::kTokPerWarp;
  const int qk_lane = lane / S::kTokPerWarp;
  const bool qk_active = qk_tok < kTile;  // warp-uniform
  // p·V: a unit is (4 heads, 16-byte chunk c), so each V chunk read from shared memory
  // serves 4 heads; spare threads split the tokens into groups (summed at the end,
  // through the pipeline buffers, hence the cap on groups).
  const int units = (G + kHeadsPerUnit - 1) / kHeadsPerUnit * S::kChunks;
  const int groups = min(kThreads / units, (kStages * S::kStageBytes) / (units * kHeadsPerUnit * 8 * 4));
  const int pv_group = tid / units;
  const bool pv_active = pv_group < groups;
  const int pv_unit = tid % units;
  const int pv_g0 = pv_unit / S::kChunks * kHeadsPerUnit, pv_c = pv_unit % S::kChunks;
  float acc[kHeadsPerUnit][8];
#pragma unroll
  for (int i = 0; i < kHeadsPerUnit; ++i)
#pragma unroll
    for (int e = 0; e < 8; ++e) acc[i][e] = 0.0f;
  __syncthreads();

  for (int i = 0; i < n_tiles; ++i) {
    if (i + kStages - 1 < n_tiles) load_tile(i + kStages - 1, (i + kStages - 1) % kStages);
    CpAsyncCommit();
    CpAsyncWait<kStages - 1>();
    __syncthreads();
    const char* ks = kv + (i % kStages) * S::kStageBytes;
    const char* vs = ks + kTile * S::kRowBytes;
    const int tile_start = start + i * kTile;

    if (qk_active) {
      const bool valid = tile_start + qk_tok < end;
      const char* krow = ks + qk_tok * S::kRowBytes;
      for (int g0 = 0; g0 < G; g0 += kHeadsPerUnit) {  // G is uniform: no divergence
        float* s_out = ss + g0 * kTile + qk_tok;
        switch (min(G - g0, kHeadsPerUnit)) {
          case 1: QkHeads<D, 1>(krow, qs + g0 * D, qk_lane, s_out, valid); break;
          case 2: QkHeads<D, 2>(krow, qs + g0 * D, qk_lane, s_out, valid); break;
          case 3: QkHeads<D, 3>(krow, qs + g0 * D, qk_lane, s_out, valid); break;
          default: QkHeads<D, 4>(krow, qs + g0 * D, qk_lane, s_out, valid); break;
        }
      }
    }
    __syncthreads();

    // Online softmax, one warp per head; every tile holds at least one valid token.
    for (int g = warp; g < G; g += kThreads / 32) {
      const float sv = ss[g * kTile + lane];
      const float m_old = ms[g], l_old = ls[g];
      const float m_new = fmaxf(m_old, WarpMax(sv));
      const float p = exp2f(sv - m_new);
      const float psum = WarpSum(p);
      ss[g * kTile + lane] = p;
      __syncwarp();  // every lane has read ms/ls before lane 0 updates them
      if (lane == 0) {
        const float alpha = exp2f(m_old - m_new);
        alphas[g] = alpha;
        ls[g] = l_old * alpha + psum;
        ms[g] = m_new;
      }
    }
    __syncthreads();

    if (pv_active) {
      const float* p = ss + pv_g0 * kTile;
      switch (min(G - pv_g0, kHeadsPerUnit)) {
        case 1: PvHeads<D, 1>(acc, vs, p, alphas + pv_g0, pv_group, groups, pv_c); break;
        case 2: PvHeads<D, 2>(acc, vs, p, alphas + pv_g0, pv_group, groups, pv_c); break;
        case 3: PvHeads<D, 3>(acc, vs, p, alphas + pv_g0, pv_group, groups, pv_c); break;
        default: PvHeads<D, 4>(acc, vs, p, alphas + pv_g0, pv_group, groups, pv_c); break;
      }
    }
    __syncthreads();  // the stage just read is refilled by the next iteration
  }
  CpAsyncWait<0>();
  __syncthreads();

  // Sum the token groups' partial accumulators (the pipeline buffers are free now).
  constexpr int kUnitFloats = kHeadsPerUnit * 8;
  if (groups > 1) {
    float* red = reinterpret_cast<float*>(kv);
    if (pv_active) {
#pragma unroll
      for (int i = 0; i < kHeadsPerUnit; ++i)
#pragma unroll
        for (int e = 0; e < 8; ++e) red[(pv_group * units + pv_unit) * kUnitFloats + i * 8 + e] = acc[i][e];
    }
    __syncthreads();
    if (tid < units) {
#pragma unroll
      for (int i = 0; i < kHeadsPerUnit; ++i) {
#pragma unroll
        for (int e = 0; e < 8; ++e) {
          float sum = 0.0f;
          for (int j = 0; j < groups; ++j) sum += red[(j * units + tid) * kUnitFloats + i * 8 + e];
          acc[i][e] = sum;
        }
      }
    }
  }
  if (tid >= units) return;  // thread tid < units now holds unit tid's totals

#pragma unroll
  for (int i = 0; i < kHeadsPerUnit; ++i) {
    const int g = pv_g0 + i;
    if (g >= G) continue;
    const int h = kvh * G + g;
    const float inv = 1.0f / ls[g];
    float o[8];
#pragma unroll
    for (int e = 0; e < 8; ++e) o[e] = acc[i][e] * inv;
    if (splits == 1) {
      __nv_bfloat16* out = static_cast<__nv_bfloat16*>(a.out) + static_cast<int64_t>(t) * a.out_stride + h * D;
      *reinterpret_cast<uint4*>(out + pv_c * 8) = FloatToBf16x8(o);
    } else {
      const int64_t row = (static_cast<int64_t>(seq) * a.num_heads + h) * splits + split;
      float4* dst = reinterpret_cast<float4*>(o_part + row * D + pv_c * 8);
      dst[0] = make_float4(o[0], o[1], o[2], o[3]);
      dst[1] = make_float4(o[4], o[5], o[6], o[7]);
      if (pv_c == 0) {
        ml_part[row * 2] = ms[g];
        ml_part[row * 2 + 1] = ls[g];
      }
    }
  }
}

// Merges the partitions of one (sequence, head): weights are sum_i * 2^(max_i - max).
__global__ void DecodeReduceKernel(AttentionArgs a, int splits, const float* o_part, const float* ml_part) {
  const int h = blockIdx.x, seq = blockIdx.y;
  PdlStart();
  const int t = a.query_start[seq];
  if (a.query_start[seq + 1] - t != 1) return;  // empty, or a prefill (its own kernel)
  const int D = a.head_dim;
  const int64_t row0 = (static_cast<int64_t>(seq) * a.num_heads + h) * splits;
  float m = -INFINITY;
  for (int s = 0; s < splits; ++s) m = fmaxf(m, ml_part[(row0 + s) * 2]);
  float total = 0.0f;
  for (int s = 0; s < splits; ++s) {
    const float l = ml_part[(row0 + s) * 2 + 1];
    if (l > 0.0f) total += l * exp2f(ml_part[(row0 + s) * 2] - m);
  }
  __nv_bfloat16* out = static_cast<__nv_bfloat16*>(a.out) + static_cast<int64_t>(t) * a.out_stride + h * D;
  for (int d = threadIdx.x; d < D; d += blockDim.x) {
    float num = 0.0f;
    for (int s = 0; s < splits; ++s) {
      const float l = ml_part[(row0 + s) * 2 + 1];
      if (l > 0.0f) num += l * exp2f(ml_part[(row0 + s) * 2] - m) * o_part[(row0 + s) * D + d];
    }
    out[d] = __float2bfloat16(total > 0.0f ? num / total : 0.0f);
  }
}

template <int D>
void LaunchDecode(const AttentionArgs& a, const DecodePlan& plan, float* workspace, cudaStream_t stream) {
  const int group = a.num_heads / a.num_kv_heads;
  // A partition of P tokens touches at most P / block_size + 2 pages.
  const int page_cap = std::min(plan.partition_tokens / std::max(a.block_size, 1) + 2, kMaxStagedPages);
  const size_t smem = DecodeShape<D>::SmemBytes(group, page_cap);
  static const cudaError_t attr =
      cudaFuncSetAttribute(DecodeKernel<D>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                           static_cast<int>(DecodeShape<D>::SmemBytes(kMaxAttentionGroup, kMaxStagedPages)));
  (void)attr;
  float* o_part = workspace ? workspace + kDecodeCounterBytes / sizeof(float) : nullptr;
  float* ml_part = o_part ? o_part + static_cast<size_t>(a.num_seqs) * a.num_heads * plan.splits * D : nullptr;
  dim3 grid(a.num_kv_heads, a.num_seqs, plan.splits);
  LaunchPdl(DecodeKernel<D>, grid, kThreads, smem, stream, a, plan.partition_tokens, page_cap, o_part, ml_part);
  if (plan.splits > 1) LaunchDecodeReduce(a, plan.splits, o_part, ml_part, stream);
}

}  // namespace

void LaunchDecodeReduce(const AttentionArgs& a, int splits, const float* o_part, const float* ml_part,
                        cudaStream_t stream) {
  LaunchPdl(DecodeReduceKernel, dim3(a.num_heads, a.num_seqs), 128, 0, stream, a, splits, o_part, ml_part);
}

bool AttentionHeadDimSupported(int32_t head_dim) {
  switch (head_dim) {
    case 8: case 16: case 32: case 64: case 128: case 256: return true;
    default: return false;
  }
}

bool Fp8AttentionHeadDimSupported(int32_t head_dim) {
  return MmaDecodeSupported(head_dim) && MmaPrefillSupported(head_dim);
}

DecodePlan PlanDecodeAttention(const AttentionArgs& a, int num_sms, const DecodePlan* layout) {
  if (MmaDecodeSupported(a.head_dim)) return PlanMmaDecode(a, num_sms, layout);
  DecodePlan plan;
  const int64_t ctas = std::max<int64_t>(1, static_cast<int64_t>(a.num_seqs) * a.num_kv_heads);
  const int64_t tiles = std::max<int64_t>(1, (std::max(a.max_context_len, 1) + kTile - 1) / kTile);
  // Enough CTAs for a few waves (so the last wave's tail is short), partitions of at
  // most 32 tiles, and at least 4 tiles each so the pipeline gets going.
  const int64_t resident = static_cast<int64_t>(std::max(num_sms, 1)) * 3;
  int64_t splits = std::max((4 * resident + ctas - 1) / ctas, (tiles + 31) / 32);
  splits = std::clamp<int64_t>(std::min(splits, (tiles + 3) / 4), 1, 1024);
  const int64_t tiles_per_split = (tiles + splits - 1) / splits;
  plan.splits = static_cast<int32_t>((tiles + tiles_per_split - 1) / tiles_per_split);
  plan.grid_splits = plan.splits;
  plan.partition_tokens = static_cast<int32_t>(tiles_per_split * kTile);
  if (plan.splits > 1) {
    plan.workspace_bytes = kDecodeCounterBytes +
                           sizeof(float) * static_cast<size_t>(a.num_seqs) * a.num_heads * plan.splits * (a.head_dim + 2);
  }
  return plan;
}

void LaunchDecodeAttention(const AttentionArgs& a, const DecodePlan& plan, float* workspace, cudaStream_t stream) {
  if (a.num_seqs <= 0) return;
  if (MmaDecodeSupported(a.head_dim)) return LaunchMmaDecode(a, plan, workspace, stream);
  switch (a.head_dim) {
    case 8: return LaunchDecode<8>(a, plan, workspace, stream);
    case 16: return LaunchDecode<16>(a, plan, workspace, stream);
    case 256: return LaunchDecode<256>(a, plan, workspace, stream);
    default: return;
  }
}

}  // namespace tessera::cuda
