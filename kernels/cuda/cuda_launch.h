// Host-side launchers of the CUDA kernels (defined in the .cu files). They only
// enqueue work on the given stream: no allocation, no synchronisation, so every op
// stays capturable in a CUDA graph. Shape checks live in CudaBackend.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "runtime/common/dtype.h"

namespace tessera::cuda {

void LaunchEmbedding(const void* table, DType table_dtype, int64_t d, const int32_t* ids, int32_t n,
                     void* out, DType out_dtype, cudaStream_t stream);
// out = RmsNorm(x) * w per row; with `residual` set, residual += x first and the
// (rounded) residual is normalised, as a later read of it would see.
void LaunchRmsNorm(const void* x, DType x_dtype, void* residual, DType residual_dtype, const void* w,
                   DType w_dtype, float eps, int64_t rows, int64_t d, void* out, DType out_dtype,
                   cudaStream_t stream);
void LaunchRope(void* q, int64_t q_cols, void* k, int64_t k_cols, DType dtype, int64_t n,
                const int32_t* positions, const float* inv_freq, int32_t head_dim, cudaStream_t stream);
void LaunchSiluMul(const void* gate_up, DType in_dtype, void* out, DType out_dtype, int64_t rows, int64_t f,
                   cudaStream_t stream);
void LaunchAdd(const void* x, DType x_dtype, void* out, DType out_dtype, int64_t n, cudaStream_t stream);
// Rope + StoreKv over the fused projection qkv [n, (q_heads + 2·kv_heads)·head_dim]: rotated
// q to q_out, rotated k and v into the cache at slots (tokens past num_slots, or slot -1, skip).
// head_dim even and at most 2 * kRopeMaxHalf (the token's angle table is in shared memory).
constexpr int kRopeMaxHalf = 128;
void LaunchRopeStoreKv(const void* qkv, DType dtype, void* q_out, int64_t q_heads, int64_t kv_heads, int64_t n,
                       const int32_t* positions, const float* inv_freq, int32_t head_dim, const int32_t* slots,
                       int32_t num_slots, void* k_cache, void* v_cache, DType cache_dtype, cudaStream_t stream);
void LaunchStoreKv(const void* k, const void* v, DType src_dtype, const int32_t* slots, int32_t n, void* k_cache,
                   void* v_cache, DType cache_dtype, int64_t width, cudaStream_t stream);
// The FP8 (E4M3) cache forms of the two above (cuda_kv_fp8.cu): each (token, kv head) of k
// and v is quantized as QuantizeKvHeadE4M3 does, its scale written to k_scale/v_scale
// [slot, kv_heads]; k is rounded to the activation dtype first, as Rope then StoreKv would.
// head_dim even and at most 256.
void LaunchRopeStoreKvFp8(const void* qkv, DType dtype, void* q_out, int64_t q_heads, int64_t kv_heads, int64_t n,
                          const int32_t* positions, const float* inv_freq, int32_t head_dim, const int32_t* slots,
                          int32_t num_slots, uint8_t* k_cache, uint8_t* v_cache, float* k_scale, float* v_scale,
                          cudaStream_t stream);
void LaunchStoreKvFp8(const void* k, const void* v, DType src_dtype, const int32_t* slots, int32_t n,
                      int64_t kv_heads, int32_t head_dim, uint8_t* k_cache, uint8_t* v_cache, float* k_scale,
                      float* v_scale, cudaStream_t stream);
void LaunchGatherRows(const void* x, size_t row_bytes, const int32_t* rows, int32_t count, void* out,
                      cudaStream_t stream);

// Everything the attention kernels need; q and out are bf16, the caches bf16 or, with
// kv_fp8, E4M3 codes with a scale per (slot, kv head) (tensor-core kernels only).
struct AttentionArgs {
  const void* q = nullptr;  // [num_tokens, q_stride]
  void* out = nullptr;      // [num_tokens, out_stride]
  const void* k_cache = nullptr;
  const void* v_cache = nullptr;
  bool kv_fp8 = false;
  const float* k_scale = nullptr;  // [slots, num_kv_heads] when kv_fp8
  const float* v_scale = nullptr;
  const int32_t* positions = nullptr;
  const int32_t* query_start = nullptr;
  const int32_t* block_tables = nullptr;
  int32_t num_tokens = 0;
  int32_t num_seqs = 0;
  int32_t max_blocks_per_seq = 0;
  int32_t block_size = 16;
  int32_t max_query_len = 0;
  int32_t max_context_len = 0;
  int32_t num_heads = 0;
  int32_t num_kv_heads = 0;
  int32_t head_dim = 0;
  int64_t q_stride = 0;
  int64_t out_stride = 0;
  float scale = 1.0f;
  // Mixed batches: sequences of one query token go to the decode kernel, and the prefill
  // kernel leaves them alone.
  bool single_token_seqs_elsewhere = false;
  // Prefill attention: when set, its grid covers these num_prefill_seqs sequences alone
  // (those of more than one query token) instead of all num_seqs.
  const int32_t* prefill_seqs = nullptr;
  int32_t num_prefill_seqs = 0;
};

// Head dims and GQA group sizes the attention kernels are built for.
bool AttentionHeadDimSupported(int32_t head_dim);
// With an FP8 cache (the tensor-core kernels only).
bool Fp8AttentionHeadDimSupported(int32_t head_dim);
constexpr int32_t kMaxAttentionGroup = 16;

// Split-K decode plan: the context is cut into `splits` partitions of
// `partition_tokens` so that small batches still fill every multiprocessor.
struct DecodePlan {
  int32_t splits = 1;
  // CTAs along the split axis; each walks partitions z, z + grid_splits, ... (tensor-core
  // kernel; the CUDA-core one launches one CTA per partition).
  int32_t grid_splits = 1;
  int32_t partition_tokens = 0;
  // Tensor-core kernel: each sequence is cut into min(splits, ceil(len / this)) partitions
  // of its own length, so short sequences split only while the grid is small.
  int32_t min_partition_tokens = 0;
  // The last partition of a (sequence, kv head) to finish merges them (no reduce kernel);
  // it counts arrivals in the workspace's first kDecodeCounterBytes.
  bool fused_merge = false;
  // Tensor-core kernel over an FP8 cache with groups of at most 8 query heads: tokens as the
  // mma rows and queries as columns (Fp8TokenRows) instead of queries as rows, with a ring of
  // `ring_stages` (2 or 3) sub-tiles per warp.
  bool token_rows = false;
  int32_t ring_stages = 3;
  // Tensor-core kernel: one warp per (sequence, kv head, partition) instead of a CTA of four
  // (DecodeWarpKernel), for grids of many short sequences.
  bool warp_items = false;
  // Tensor-core kernels: the block tables and the first sub-tiles of the cache (all but each
  // sequence's own token) are read before the previous kernel finishes (cuda_decode_policy.cuh,
  // IssueRingHead). The four-warp kernel does so for grids of a few waves.
  bool early_stream = true;
  size_t workspace_bytes = 0;  // partial outputs + (max, sum) per split; 0 when splits == 1
};
// `layout`, if given, fixes the tensor-core kernel's token_rows (where the cache and group
// allow it), ring_stages and warp_items (where the kv heads allow it) instead of the
// planner's choice: tests and benchmarks compare them.
DecodePlan PlanDecodeAttention(const AttentionArgs& a, int num_sms, const DecodePlan* layout = nullptr);
// The decode workspace starts with arrival counters (zeroed when it is allocated; every
// launch leaves them at zero), then the partial outputs.
constexpr int32_t kDecodeMergeCounters = 1 << 16;  // sequences x kv heads
constexpr size_t kDecodeCounterBytes = kDecodeMergeCounters * sizeof(unsigned);
// Every sequence has at most one query token.
void LaunchDecodeAttention(const AttentionArgs& a, const DecodePlan& plan, float* workspace, cudaStream_t stream);
// Any mix of prefill chunks and decodes.
void LaunchPrefillAttention(const AttentionArgs& a, cudaStream_t stream);

// Skinny GEMM out[n, m] = x[n, k] · w[m, k]ᵀ for decode batches: bf16 x and w (16-byte
// aligned, k % 8 == 0), bf16 or f32 out, n <= kMaxGemvRows.
constexpr int64_t kMaxGemvRows = 4;  // beyond, cuBLASLt is as fast (bench/results/)
bool GemvSupported(int64_t n, int64_t k, const void* x, const void* w);
void LaunchGemv(const void* x, const void* w, void* out, DType out_dtype, int64_t n, int64_t k, int64_t m,
                cudaStream_t stream);

// One row's sampling parameters (Backend::SamplingRow, as the kernel reads it).
struct SampleRowArgs {
  float temperature;
  float top_p;
  float min_p;
  int32_t top_k;
  uint64_t seed;
  uint64_t step;
};
// ids[r], logprobs[r] for rows r < rows of f32 logits [rows, stride] (vocab columns used);
// with `stats` (may be null), (entropy, top-1 probability) of row r at stats[2r], stats[2r+1].
void LaunchSampleTokens(const float* logits, int64_t stride, int32_t rows, int32_t vocab, const SampleRowArgs* params,
                        int32_t* ids, float* logprobs, float* stats, cudaStream_t stream);

}  // namespace tessera::cuda
