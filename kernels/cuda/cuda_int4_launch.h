// Host-side launcher of the int4 tensor-core matmul over the repacked layout (cuda_int4.cu,
// layout in int4_layout.h). Like cuda_launch.h it only enqueues work; CudaBackend
// (cuda_quant_ops.cc) chooses it and owns the workspace.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "runtime/common/dtype.h"

namespace tessera::cuda {

// One repacked weight as the kernel reads it (the fields of Int4Layout plus pointers).
struct Int4Args {
  int64_t in_features = 0, out_features = 0;
  int64_t n_blocks = 0, k_chunks = 0, group_size = 0, groups = 0;
  const uint32_t* words = nullptr;      // [n_blocks][k_chunks][32][4]
  const unsigned char* meta = nullptr;  // [groups][n_blocks] 64-byte records
  const int32_t* perm = nullptr;        // act-order input permutation, or null
};

// Work split of one call, a function of the weight's shape and the row count only.
// Blocks cover 16*mt rows x 128 columns x a run of chunks_per_split 64-input chunks; split-K
// blocks meet in the workspace (arrival counters at its start, kGptqGemvPartialOffset
// bytes, then f32 partial sums), and activations that are permuted or unaligned are first
// gathered into it as bf16 rows of gather_ld.
struct Int4Plan {
  int mt = 1;  // m16 tiles per block: 1, 2 or 4
  int32_t row_blocks = 0, col_tiles = 0, splits = 1, chunks_per_split = 0;
  bool gather = false;
  int64_t gather_ld = 0;
  size_t partial_offset = 0, gather_offset = 0, workspace_bytes = 0;
};
// x_direct: x needs no gathering (no perm, in_features % 8 == 0, 16-byte aligned rows).
Int4Plan PlanInt4Matmul(const Int4Args& w, int64_t rows, bool x_direct, int num_sms);
// x [rows, in_features] bf16 -> out [rows, out_features] bf16 or f32.
void LaunchInt4Matmul(const Int4Args& w, const Int4Plan& plan, const void* x, int64_t rows, void* out,
                      DType out_dtype, void* workspace, cudaStream_t stream);

}  // namespace tessera::cuda
