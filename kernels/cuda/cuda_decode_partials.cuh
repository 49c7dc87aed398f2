// Shared by the split-K decode attention kernels (cuda_decode_attention.cu,
// cuda_decode_mma.cu, cuda_decode_warp.cu): a partition's bounds, block-table entries and
// cache slots, what a CTA writes for a partition that holds none of its sequence's tokens,
// and the merge of a sequence's partitions by the last to finish.
#pragma once

#include <cuda_bf16.h>

#include <cmath>
#include <cstdint>

#include "kernels/cuda/cuda_launch.h"

namespace tessera::cuda {

// The pages of a partition's tokens [start, end). Their block-table entries are staged in
// shared memory when at most `page_cap` of them (uniform across the CTA; the caller
// synchronises before Slot reads them): read from global memory inside the tile loads,
// each lookup would be a dependent L2 round trip ahead of its cp.async.
struct PartitionPages {
  const int32_t* table;  // the sequence's row of the block table
  const int32_t* pages;  // the staged entries from first_page on
  int bs, shift, first_page;
  bool pow2, staged;

  // The cache slot of token j (start <= j < end).
  __device__ int64_t Slot(int j) const {
    const int page = pow2 ? j >> shift : j / bs;
    const int32_t block = staged ? pages[page - first_page] : table[page];
    return static_cast<int64_t>(block) * bs + (j - page * bs);
  }
};

__device__ inline PartitionPages StagePartitionPages(const int32_t* table, int bs, int start, int end, int page_cap,
                                                     int32_t* pages, int tid, int threads) {
  PartitionPages p;
  p.table = table;
  p.pages = pages;
  p.bs = bs;
  p.pow2 = (bs & (bs - 1)) == 0;
  p.shift = __ffs(bs) - 1;
  p.first_page = p.pow2 ? start >> p.shift : start / bs;
  const int last_page = p.pow2 ? (end - 1) >> p.shift : (end - 1) / bs;
  p.staged = last_page - p.first_page < page_cap;
  if (p.staged) {
    for (int i = tid; i <= last_page - p.first_page; i += threads) pages[i] = table[p.first_page + i];
  }
  return p;
}

// The (sequence seq, query token t, kv head kvh) group's G heads: zeros as the output when
// the context is not split, else an empty partial (max -inf, sum 0) that the merge weighs 0.
template <int D>
__device__ inline void WriteEmptyPartition(const AttentionArgs& a, int seq, int t, int kvh, int G, int split,
                                           int splits, float* o_part, float* ml_part, int tid, int threads) {
  for (int u = tid; u < G * D; u += threads) {
    const int h = kvh * G + u / D, d = u % D;
    if (splits == 1) {
      static_cast<__nv_bfloat16*>(a.out)[static_cast<int64_t>(t) * a.out_stride + h * D + d] = __float2bfloat16(0.0f);
    } else {
      const int64_t row = (static_cast<int64_t>(seq) * a.num_heads + h) * splits + split;
      o_part[row * D + d] = 0.0f;
      if (d == 0) {
        ml_part[row * 2] = -INFINITY;
        ml_part[row * 2 + 1] = 0.0f;
      }
    }
  }
}

// This CTA's (or warp's) share [start, end) of the sequence's `len` tokens: the context is
// cut into at most `splits` partitions of whole `sub`-token sub-tiles, at least `min_subs`
// sub-tiles each. `parts` is how many of them are non-empty (the first `parts`).
__device__ __forceinline__ void Partition(int len, int sub, int split, int splits, int min_subs, int* start, int* end,
                                          int* parts) {
  const int subs = (len + sub - 1) / sub;
  const int used = max(1, min(splits, (subs + min_subs - 1) / min_subs));
  const int per = (subs + used - 1) / used;
  *start = min(len, split * per * sub);
  *end = min(len, (split + 1) * per * sub);
  *parts = (subs + per - 1) / per;
}

// The merge of a (sequence seq, query token t, kv head kvh) group's `parts` partitions by
// the last of them to finish: weights sum_i * 2^(max_i - max) over o_part / ml_part as
// LaunchDecodeReduce reads them, written to the output. kOneTrip: up to kChunk partitions
// are read in one round trip (more registers; off where they are capped at 128).
template <int D, bool kOneTrip = true>
__device__ inline void MergePartitions(const AttentionArgs& a, int seq, int t, int kvh, int G, int splits, int parts,
                                       const float* o_part, const float* ml_part, int tid, int threads) {
  // Partials are read kChunk partitions at a time, all loads issued before their uses, so
  // the merge costs parts / kChunk L2 round trips instead of one per partition (H100, batch
  // 1 of 8 kv heads at 4k over FP8, 66 partitions: 35.3 -> 32.9 us). Same order of sums.
  constexpr int kChunk = 8;
  for (int u = tid; u < G * D; u += threads) {
    const int r = u / D, d = u % D, h = kvh * G + r;
    const int64_t row0 = (static_cast<int64_t>(seq) * a.num_heads + h) * splits;
    const float* ml = ml_part + row0 * 2;
    const float* o = o_part + row0 * D + d;
    if (kOneTrip && parts <= kChunk) {
      // One round trip: every partial's max, sum and output at once (the same values and
      // order of sums as the two passes below).
      float mx[kChunk], l[kChunk], ov[kChunk];
#pragma unroll
      for (int i = 0; i < kChunk; ++i) {
        const bool in = i < parts;
        mx[i] = in ? __ldcg(ml + i * 2) : -INFINITY;
        l[i] = in ? __ldcg(ml + i * 2 + 1) : 0.0f;
        ov[i] = in ? __ldcg(o + static_cast<int64_t>(i) * D) : 0.0f;
      }
      float m = -INFINITY;
#pragma unroll
      for (int i = 0; i < kChunk; ++i) m = fmaxf(m, mx[i]);
      float total = 0.0f, num = 0.0f;
#pragma unroll
      for (int i = 0; i < kChunk; ++i) {
        if (i < parts) {
          const float w = l[i] * exp2f(mx[i] - m);
          total += w;
          num += w * ov[i];
        }
      }
      static_cast<__nv_bfloat16*>(a.out)[static_cast<int64_t>(t) * a.out_stride + h * D + d] =
          __float2bfloat16(total > 0.0f ? num / total : 0.0f);
      continue;
    }
    float m = -INFINITY;
    for (int sp0 = 0; sp0 < parts; sp0 += kChunk) {
      float v[kChunk];
#pragma unroll
      for (int i = 0; i < kChunk; ++i) v[i] = sp0 + i < parts ? __ldcg(ml + (sp0 + i) * 2) : -INFINITY;
#pragma unroll
      for (int i = 0; i < kChunk; ++i) m = fmaxf(m, v[i]);
    }
    float total = 0.0f, num = 0.0f;
    for (int sp0 = 0; sp0 < parts; sp0 += kChunk) {
      float mx[kChunk], l[kChunk], ov[kChunk];
#pragma unroll
      for (int i = 0; i < kChunk; ++i) {
        const bool in = sp0 + i < parts;
        mx[i] = in ? __ldcg(ml + (sp0 + i) * 2) : 0.0f;
        l[i] = in ? __ldcg(ml + (sp0 + i) * 2 + 1) : 0.0f;
        ov[i] = in ? __ldcg(o + static_cast<int64_t>(sp0 + i) * D) : 0.0f;
      }
#pragma unroll
      for (int i = 0; i < kChunk; ++i) {
        if (sp0 + i < parts) {
          const float w = l[i] * exp2f(mx[i] - m);
          total += w;
          num += w * ov[i];
        }
      }
    }
    static_cast<__nv_bfloat16*>(a.out)[static_cast<int64_t>(t) * a.out_stride + h * D + d] =
        __float2bfloat16(total > 0.0f ? num / total : 0.0f);
  }
}

// MergePartitions for all threads of a CTA with `smem_bytes` of shared memory free at
// `smem`: the (max, sum) of every (row, partition) are read at once (one round trip, not
// two chains of parts / 8) and each row's weights formed once, not once per output
// element; each thread then reads only its outputs' partials, 16 partitions at a time. The
// same sums in the same order as MergePartitions (the same bits), which it falls back to
// when the rows' weights do not fit in `smem`, and below 32 (row, partition) pairs, where
// its two block barriers cost more than the chains they save (H100: batch 1 of 32 kv heads
// at 256-4k context, 8 partitions, 0.1-0.4 us slower; 4 rows x 8 partitions 1 us faster).
template <int D, bool kOneTrip = true>
__device__ inline void MergePartitionsBlock(const AttentionArgs& a, int seq, int t, int kvh, int G, int splits,
                                            int parts, const float* o_part, const float* ml_part, int tid,
                                            int threads, float* smem, size_t smem_bytes) {
  const int n = G * parts;
  if (n < 32 || static_cast<size_t>(2 * n + G) * sizeof(float) > smem_bytes) {
    MergePartitions<D, kOneTrip>(a, seq, t, kvh, G, splits, parts, o_part, ml_part, tid, threads);
    return;
  }
  float* mx = smem;      // [G][parts] each partition's max, then its weight
  float* ls = mx + n;    // [G][parts] each partition's sum
  float* tot = ls + n;   // [G] the rows' summed weights
  const int64_t head0 = static_cast<int64_t>(seq) * a.num_heads + static_cast<int64_t>(kvh) * G;
  for (int i = tid; i < n; i += threads) {
    const int r = i / parts, sp = i - r * parts;
    const float* src = ml_part + ((head0 + r) * splits + sp) * 2;
    mx[i] = __ldcg(src);
    ls[i] = __ldcg(src + 1);
  }
  __syncthreads();
  if (tid < G) {
    float* rm = mx + tid * parts;
    const float* rl = ls + tid * parts;
    float m = -INFINITY;
    for (int sp = 0; sp < parts; ++sp) m = fmaxf(m, rm[sp]);
    float total = 0.0f;
    for (int sp = 0; sp < parts; ++sp) {
      const float w = rl[sp] * exp2f(rm[sp] - m);
      rm[sp] = w;
      total += w;
    }
    tot[tid] = total;
  }
  __syncthreads();
  constexpr int kChunk = 16;
  for (int u = tid; u < G * D; u += threads) {
    const int r = u / D, d = u % D;
    const float* o = o_part + (head0 + r) * splits * D + d;
    const float* w = mx + r * parts;
    float num = 0.0f;
    for (int sp0 = 0; sp0 < parts; sp0 += kChunk) {
      float ov[kChunk];
#pragma unroll
      for (int i = 0; i < kChunk; ++i) ov[i] = sp0 + i < parts ? __ldcg(o + static_cast<int64_t>(sp0 + i) * D) : 0.0f;
#pragma unroll
      for (int i = 0; i < kChunk; ++i) {
        if (sp0 + i < parts) num += w[sp0 + i] * ov[i];
      }
    }
    const float total = tot[r];
    static_cast<__nv_bfloat16*>(a.out)[static_cast<int64_t>(t) * a.out_stride + (kvh * G + r) * D + d] =
        __float2bfloat16(total > 0.0f ? num / total : 0.0f);
  }
}

}  // namespace tessera::cuda
