// Pieces shared by DecodeMmaKernel (cuda_decode_mma.cu) and DecodeWarpKernel
// (cuda_decode_warp.cu): a warp's stream of sub-tiles through its ring, the choice of warp
// policy (cuda_decode_tiles.cuh, cuda_decode_token_rows.cuh) from a plan, occupancy, and
// the split workspace's layout.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>

#include "kernels/cuda/cuda_common.cuh"
#include "kernels/cuda/cuda_decode_partials.cuh"
#include "kernels/cuda/cuda_decode_tiles.cuh"
#include "kernels/cuda/cuda_decode_token_rows.cuh"
#include "kernels/cuda/cuda_launch.h"

namespace tessera::cuda {

// A warp's n sub-tiles of the partition ending at token `end`, sub-tile i starting at token
// tok0 + i * tok_step, stream through its ring of P::kStages stages; lane l < 16 copies
// token l of each sub-tile (warp-uniform: every lane takes part in the shuffles). Three
// parts, so that a kernel launched as a programmatic dependent can start its stream before
// PdlWait (cuda_pdl.h):
//  1. IssueRingHead copies the first kStages - 1 sub-tiles, leaving out token `held` (the
//     step's own token, which the kernel before this one stores; -1: none). Everything else
//     it reads was written before the step's first kernel (the block tables and the cache of
//     earlier steps). Returns which of those sub-tiles holds `held` (-1: none).
//  2. After PdlWait, IssueHeldRow copies that token's rows into their stage, as one more
//     commit group (empty when none).
//  3. StreamSubTiles runs P::Step on every sub-tile in order, refilling the ring; returns
//     with every copy landed.
template <typename P>
__device__ __forceinline__ void CopySubTile(char* stage, const AttentionArgs& a, int kvh, const PartitionPages& pp,
                                            int first, int end, int held, int lane) {
  const int j = first + lane % decode::kSub;
  const int slot = j == held ? decode::kHeldSlot : j < end ? static_cast<int>(pp.Slot(j)) : -1;
  P::Copy(stage, a, kvh, slot, lane);
}

template <typename P>
__device__ __forceinline__ int IssueRingHead(char* ring, const AttentionArgs& a, int kvh, const PartitionPages& pp,
                                             int tok0, int tok_step, int n, int end, int held, int lane) {
  int held_at = -1;
#pragma unroll
  for (int i = 0; i < P::kStages - 1; ++i) {
    if (i < n) {
      const int first = tok0 + i * tok_step;
      if (held >= first && held < first + decode::kSub) held_at = i;
      CopySubTile<P>(ring + i * P::kStageBytes, a, kvh, pp, first, end, held, lane);
    }
    CpAsyncCommit();
  }
  return held_at;
}

template <typename P>
__device__ __forceinline__ void IssueHeldRow(char* ring, const AttentionArgs& a, int kvh, const PartitionPages& pp,
                                             int tok0, int tok_step, int held, int held_at, int lane) {
  if (held_at >= 0) {
    const int first = tok0 + held_at * tok_step;
    P::CopyRow(ring + held_at * P::kStageBytes, a, kvh, static_cast<int>(pp.Slot(held)), held - first, lane);
  }
  CpAsyncCommit();
}

// kHeldGroup: IssueHeldRow committed its group after the head (else the head alone).
template <typename P, bool kHeldGroup>
__device__ __forceinline__ void StreamSubTiles(typename P::State& st, char* ring, const AttentionArgs& a, int kvh,
                                               const PartitionPages& pp, int tok0, int tok_step, int n, int end,
                                               float qscale, int held_at, int lane) {
  constexpr int kStages = P::kStages;
  // Groups so far: the kStages - 1 of the head, then the held row's. Sub-tile i < kStages - 1
  // is group i; a later one is group i + 1. The held row's stage waits for everything: it is
  // the sequence's last token, so the warp's last sub-tile, and nothing is left to overlap.
  for (int i = 0; i < n; ++i) {
    if (i + kStages - 1 < n) {
      const int k = i + kStages - 1;
      CopySubTile<P>(ring + (k % kStages) * P::kStageBytes, a, kvh, pp, tok0 + k * tok_step, end, -1, lane);
    }
    CpAsyncCommit();
    if constexpr (!kHeldGroup) {
      CpAsyncWait<kStages - 1>();
    } else if (i == held_at) {
      CpAsyncWait<0>();
    } else if (i < kStages - 1) {
      CpAsyncWait<kStages>();
    } else {
      CpAsyncWait<kStages - 1>();
    }
    __syncwarp();  // every lane's copies of sub-tile i have landed
    P::Step(st, ring + (i % kStages) * P::kStageBytes, tok0 + i * tok_step, end, qscale, lane);
    __syncwarp();  // the stage is refilled by the next iteration
  }
  CpAsyncWait<0>();
}

// Calls f with a value-initialised policy of the plan's layout, cache format and head dim.
template <int D, typename F>
auto WithDecodePolicyOfDim(const AttentionArgs& a, const DecodePlan& plan, F&& f) {
  if (!a.kv_fp8) return f(decode::HeadRows<decode::Bf16Tile<D>>{});
  if (!plan.token_rows) return f(decode::HeadRows<decode::Fp8Tile<D>>{});
  if (plan.ring_stages == 3) return f(decode::Fp8TokenRows<D, 3>{});
  return f(decode::Fp8TokenRows<D, 2>{});
}

// Head dims 32, 64 and 128 (MmaDecodeSupported).
template <typename F>
auto WithDecodePolicy(const AttentionArgs& a, const DecodePlan& plan, F&& f) {
  switch (a.head_dim) {
    case 32: return WithDecodePolicyOfDim<32>(a, plan, f);
    case 64: return WithDecodePolicyOfDim<64>(a, plan, f);
    default: return WithDecodePolicyOfDim<128>(a, plan, f);
  }
}

// A decode kernel's CTAs per multiprocessor at `typical_smem` bytes of dynamic shared
// memory, after raising its limit to `max_smem` (at least 1).
template <typename Kernel>
int DecodeResidentBlocks(Kernel kernel, int threads, size_t max_smem, size_t typical_smem) {
  cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(max_smem));
  int n = 0;
  if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, kernel, threads, typical_smem) != cudaSuccess) {
    cudaGetLastError();
    n = 1;
  }
  return n > 1 ? n : 1;
}

// The workspace of a split plan: arrival counters (fused merge only), then the partial
// outputs [seq, head, split, D] and their (max, sum).
struct DecodePartials {
  unsigned* counters = nullptr;
  float* o_part = nullptr;
  float* ml_part = nullptr;
};
inline DecodePartials DecodePartialsOf(const AttentionArgs& a, const DecodePlan& plan, int head_dim, float* workspace) {
  DecodePartials p;
  p.counters = plan.fused_merge ? reinterpret_cast<unsigned*>(workspace) : nullptr;
  p.o_part = workspace ? workspace + kDecodeCounterBytes / sizeof(float) : nullptr;
  p.ml_part = p.o_part ? p.o_part + static_cast<size_t>(a.num_seqs) * a.num_heads * plan.splits * head_dim : nullptr;
  return p;
}

}  // namespace tessera::cuda
