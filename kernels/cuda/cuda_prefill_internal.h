// The tensor-core prefill attention kernel's entry points (cuda_prefill_mma.cu), used by
// LaunchPrefillAttention for the head dims it takes.
#pragma once

#include <cuda_runtime.h>

#include "kernels/cuda/cuda_launch.h"

namespace tessera::cuda {

bool MmaPrefillSupported(int32_t head_dim);
void LaunchMmaPrefill(const AttentionArgs& a, cudaStream_t stream);

}  // namespace tessera::cuda
