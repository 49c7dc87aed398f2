// Shared by the two split-K decode attention kernels (cuda_decode_attention.cu,
// cuda_decode_mma.cu): a partition's block-table entries and cache slots, and what a CTA
// writes for a partition that holds none of its sequence's tokens.
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

}  // namespace tessera::cuda
