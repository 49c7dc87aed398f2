// Shared between the split-K decode attention kernels (cuda_decode_attention.cu: CUDA
// cores, any head dim; cuda_decode_mma.cu and cuda_decode_warp.cu: tensor cores, head dims
// 32/64/128): the merge of context partitions and the tensor-core kernels' entry points.
#pragma once

#include <cuda_runtime.h>

#include "kernels/cuda/cuda_launch.h"

namespace tessera::cuda {

// Merges `splits` partial results per (sequence, head): o_part [seq, head, split, D]
// normalised by their own sums, ml_part [seq, head, split, 2] = (max in log2 units, sum).
void LaunchDecodeReduce(const AttentionArgs& a, int splits, const float* o_part, const float* ml_part,
                        cudaStream_t stream);

bool MmaDecodeSupported(int32_t head_dim);
DecodePlan PlanMmaDecode(const AttentionArgs& a, int num_sms, const DecodePlan* layout);
void LaunchMmaDecode(const AttentionArgs& a, const DecodePlan& plan, float* workspace, cudaStream_t stream);

// One warp per (kv head, sequence, partition) (cuda_decode_warp.cu): kv heads a multiple of 4
// and a tensor-core head dim; the CTAs of four warps a device holds at once under `plan`'s
// policy; the plan's split of the context (sets warp_items); the launch.
bool WarpDecodeSupported(const AttentionArgs& a);
int WarpDecodeResidentCtas(const AttentionArgs& a, const DecodePlan& plan, int num_sms);
void PlanWarpDecode(const AttentionArgs& a, int num_sms, DecodePlan* plan);
void LaunchWarpDecode(const AttentionArgs& a, const DecodePlan& plan, float* workspace, cudaStream_t stream);

}  // namespace tessera::cuda
