// Shared between the two split-K decode attention kernels (cuda_decode_attention.cu: CUDA
// cores, any head dim; cuda_decode_mma.cu: tensor cores, head dims 32/64/128): the merge
// of context partitions and the tensor-core kernel's entry points.
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

}  // namespace tessera::cuda
