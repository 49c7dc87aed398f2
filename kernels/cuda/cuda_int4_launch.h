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
// Two kernels: up to kInt4DecodeMaxRows rows the decode kernel (cuda_int4_decode.cu): blocks
// of 8 warps cover warps_n * nb 16-column blocks and a run of chunks_per_split 64-input
// chunks, nt tiles of 8 rows. Above it the tile kernel (cuda_int4.cu): blocks cover 16*mt rows
// x 128 columns x a run of chunks_per_split chunks. Split-K blocks of either meet in the
// workspace (arrival counters at its start, kGptqGemvPartialOffset bytes, then f32 partial
// sums), and activations that are permuted or unaligned are first gathered into it as bf16
// rows of gather_ld.
constexpr int64_t kInt4DecodeMaxRows = 16;
struct Int4Plan {
  bool decode = false;
  int mt = 1;  // tile kernel: m16 tiles per block: 1, 2 or 4
  // Decode kernel: n8 row tiles (1 or 2), 16-column blocks per warp (2 or 4), warps side by
  // side over columns (1, 2, 4 or 8; the others split the block's K run), its shared memory
  // (staged activations of x_stride bf16 per row, then metadata at meta_offset; reused for
  // the warps' sums).
  // cluster: the K splits (2 to 8 of them) meet in distributed shared memory as one
  // cluster instead of the workspace (off in planned plans); pdl: launched as a programmatic
  // dependent of the previous kernel (weights stream while it finishes).
  // min_blocks: the kernel's register bound, 2 or 3 (nt 1, nb 2 only) blocks per multiprocessor.
  // ring: 64-input chunk steps of weight loads each warp keeps in flight (2, 4 or 8; above 2
  // only at nb 2 and 2 blocks per multiprocessor, and 8 only at one row tile).
  // release_once: a block's split-K arrival is one thread's acquire-release atomic after a
  // barrier instead of a fence in every thread (on in planned plans).
  // fold_zero: the zero point is applied once per group from the activations' sums instead
  // of to every nibble pair (one lop3 per pair instead of lop3 + subtract).
  // slice_stage: the warps that share a K slice stage its activations and metadata alone and
  // meet at a named barrier of their own (no block-wide barrier before the first mma); the
  // metadata then lies in one region of slice_meta_bytes per slice and the warps' sums at
  // red_offset (else over the staged inputs, red_offset 0). Set by the planner's caller
  // before the shared memory is sized, so it is a PlanInt4Decode argument.
  // batched_meet: the last block of a split-K tile keeps several outputs' loads of every
  // split in flight per thread (else one output and one split at a time).
  int nt = 1, nb = 4, warps_n = 2, min_blocks = 2, ring = 2;
  bool cluster = false, pdl = false, release_once = false, fold_zero = false, slice_stage = false;
  bool batched_meet = false;
  int32_t x_stride = 0, meta_offset = 0, smem_bytes = 0, slice_meta_bytes = 0, red_offset = 0;
  int32_t row_blocks = 0, col_tiles = 0, splits = 1, chunks_per_split = 0;
  bool gather = false;
  int64_t gather_ld = 0;
  size_t partial_offset = 0, gather_offset = 0, workspace_bytes = 0;
};
// The repacked weight as a dense bf16 [out_features, in_features] matrix in the original
// input order (an act-order permutation undone), each element (q - zero) * scale rounded to
// bf16: for products of many rows, a dense GEMM over it (cuda_int4_dequant.cu).
void LaunchInt4Dequantize(const Int4Args& w, void* out, cudaStream_t stream);

// x_direct: x needs no gathering (no perm, in_features % 8 == 0, 16-byte aligned rows).
Int4Plan PlanInt4Matmul(const Int4Args& w, int64_t rows, bool x_direct, int num_sms);
// The decode kernel's plan with its knobs set (rows <= kInt4DecodeMaxRows; nb 2 or 4;
// warps_n 1, 2, 4 or 8; splits 0 fills the device, 1 gives each block all of K; min_blocks 2
// or 3; ring 2, 4 or 8, lowered to what the other knobs allow; slice_stage as in Int4Plan).
// decode is false when the shape does not fit it (more column tiles than split-K counters).
Int4Plan PlanInt4Decode(const Int4Args& w, int64_t rows, bool x_direct, int num_sms, int nb, int warps_n,
                        int splits, int min_blocks, int ring, bool slice_stage);
// Blocks of a decode plan's kernel that the device holds at once.
int64_t Int4DecodeResidentBlocks(const Int4Plan& p, int num_sms);
// Sets the workspace fields of a plan whose kernel fields are set.
void PlaceInt4Workspace(const Int4Args& w, int64_t rows, bool x_direct, Int4Plan* p);
// x [rows, in_features] bf16 -> out [rows, out_features] bf16 or f32.
void LaunchInt4Matmul(const Int4Args& w, const Int4Plan& plan, const void* x, int64_t rows, void* out,
                      DType out_dtype, void* workspace, cudaStream_t stream);
// Rows up to which CudaBackend::SiluMulMatmul runs LaunchInt4SiluMulMatmul. Forming the
// activations costs the staging about 0.37 us per row on 4096x11008 (silu in f32 and loads
// through registers instead of cp.async) against ~1.5 us saved by dropping the SiluMul
// kernel: 1.09x at one row, 1.01x at four, 0.82x at sixteen (H100, cuda_quant_bench).
constexpr int64_t kInt4SiluFuseMaxRows = 4;
// SiluMul fused into the decode kernel's staging: out = (silu(gate) * up) · Wᵀ for gate_up
// [rows, 2 * in_features] bf16 (gate then up), the activations rounded to bf16 as the SiluMul
// kernel rounds them (so the result is bit-identical to SiluMul then LaunchInt4Matmul). Needs
// a decode plan without gathering (plan.decode, !plan.gather: no perm, in_features % 8 == 0)
// and 16-byte aligned gate_up.
void LaunchInt4SiluMulMatmul(const Int4Args& w, const Int4Plan& plan, const void* gate_up, int64_t rows,
                             void* out, DType out_dtype, void* workspace, cudaStream_t stream);
// The decode kernel alone, on activations already gathered (x rows of lda bf16, read as
// zero from k_valid on); LaunchInt4Matmul calls it. With up_offset > 0, x holds gate rows
// whose up halves lie up_offset elements further, and the kernel stages silu(gate) * up.
void LaunchInt4Decode(const Int4Args& w, const Int4Plan& plan, const void* x, int64_t lda, int64_t k_valid,
                      int64_t rows, void* out, DType out_dtype, float* partial, unsigned* counters,
                      cudaStream_t stream, int64_t up_offset = 0);

}  // namespace tessera::cuda
