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
// tok0 + i * tok_step, streamed through its ring of P::kStages stages into P::Step; lane
// l < 16 copies token l of each sub-tile (warp-uniform: every lane takes part in the
// shuffles). Returns with every copy landed.
template <typename P>
__device__ __forceinline__ void StreamSubTiles(typename P::State& st, char* ring, const AttentionArgs& a, int kvh,
                                               const PartitionPages& pp, int tok0, int tok_step, int n, int end,
                                               float qscale, int lane) {
  constexpr int kStages = P::kStages;
  auto load = [&](int i, int stage) {
    const int j = tok0 + i * tok_step + lane % decode::kSub;
    const int slot = j < end ? static_cast<int>(pp.Slot(j)) : -1;
    P::Copy(ring + stage * P::kStageBytes, a, kvh, slot, lane);
  };
#pragma unroll
  for (int i = 0; i < kStages - 1; ++i) {
    if (i < n) load(i, i);
    CpAsyncCommit();
  }
  for (int i = 0; i < n; ++i) {
    if (i + kStages - 1 < n) load(i + kStages - 1, (i + kStages - 1) % kStages);
    CpAsyncCommit();
    CpAsyncWait<kStages - 1>();
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
