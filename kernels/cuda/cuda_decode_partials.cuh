// Shared by the two split-K decode attention kernels (cuda_decode_attention.cu,
// cuda_decode_mma.cu): what a CTA writes for a context partition that holds none of its
// sequence's tokens.
#pragma once

#include <cuda_bf16.h>

#include <cmath>
#include <cstdint>

#include "kernels/cuda/cuda_launch.h"

namespace tessera::cuda {

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
