// Host-side launchers of the GPTQ matmul kernels (cuda_gptq.cu) and the multi-LoRA
// kernels (cuda_lora.cu). Like cuda_launch.h they only enqueue work on the stream; the
// shape and support checks live in CudaBackend (cuda_quant_ops.cc).
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "runtime/common/dtype.h"

namespace tessera::cuda {

// A GPTQ weight as the kernels read it (the fields of QuantizedWeight).
struct GptqArgs {
  int bits = 4;  // 2, 4 or 8: fields never straddle words
  int64_t group_size = 128;
  int64_t in_features = 0;
  int64_t out_features = 0;
  const int32_t* qweight = nullptr;
  const int32_t* qzeros = nullptr;
  const uint16_t* scales = nullptr;
  const int32_t* perm = nullptr;
  bool zeros_minus_one = false;
};

// Decode path (any row count, best at 1-8 rows): split-K GEMV whose blocks reduce their
// partial sums in `workspace`; the last block of each column tile writes the output.
// The workspace starts with the per-column-tile arrival counters at a fixed place (zeroed
// once on allocation, left at zero by every launch, whatever the weight's shape), then the
// partial sums.
constexpr int32_t kGptqGemvMaxColTiles = 4096;  // 128 output features per tile
constexpr size_t kGptqGemvPartialOffset = kGptqGemvMaxColTiles * sizeof(unsigned);
struct GptqGemvPlan {
  int32_t splits = 1;
  int32_t chunk_words = 0;  // qweight word rows per split
  int32_t col_tiles = 0;
  size_t workspace_bytes = 0;  // counters + partial sums; 0 when splits == 1
};
GptqGemvPlan PlanGptqGemv(const GptqArgs& w, int64_t rows, int num_sms);
void LaunchGptqGemv(const GptqArgs& w, const GptqGemvPlan& plan, const void* x, int64_t rows, void* out,
                    DType out_dtype, void* workspace, cudaStream_t stream);

// Prefill / large batches: tensor-core GEMM over weight tiles dequantised into shared
// memory. Needs group_size % 32 == 0 or a single group.
bool GptqGemmSupported(const GptqArgs& w);
void LaunchGptqGemm(const GptqArgs& w, const void* x, int64_t rows, void* out, DType out_dtype, cudaStream_t stream);

// One (layer, target) LoRA table and its batch, bf16 A/Bᵀ and x.
struct LoraArgs {
  const void* x = nullptr;  // [num_tokens, in_features] bf16
  void* out = nullptr;      // [num_tokens, out_cols], bf16 or f32, updated at col_offset
  DType out_dtype = DType::kBF16;
  int64_t out_cols = 0;
  int64_t col_offset = 0;
  const int32_t* token_slots = nullptr;
  int32_t num_tokens = 0;
  const void* a = nullptr;    // [num_slots, max_rank, in_features]
  const void* b_t = nullptr;  // [num_slots, max_rank, out_features]
  const int32_t* ranks = nullptr;
  int32_t num_slots = 0;
  int32_t max_rank = 0;
  int64_t in_features = 0;
  int64_t out_features = 0;
};
// How one LoraApply runs. BGMV (decode, up to kLoraBgmvMaxTokens tokens): one fused
// kernel, `splits` blocks per token. SGMV otherwise. The workspace starts with per-token
// arrival counters (zeroed once on allocation, left at zero by every launch), then f32
// scratch for the shrunk activations.
// A group of LoraArgs (up to kLoraMaxGroup targets reading the same x and tokens) runs in
// one BGMV launch, each target with its own counters and scratch.
constexpr int32_t kLoraBgmvMaxTokens = 128;
constexpr int32_t kLoraMaxGroup = 3;
constexpr size_t kLoraCounterBytes = kLoraMaxGroup * 2 * kLoraBgmvMaxTokens * sizeof(unsigned);
struct LoraGroupArgs {
  LoraArgs m[kLoraMaxGroup];
  int32_t count = 0;
};
struct LoraPlan {
  bool bgmv = false;
  int32_t splits = 1;
  size_t workspace_bytes = 0;
};
LoraPlan PlanLoraApply(const LoraGroupArgs& g, int num_sms);
void LaunchLoraApply(const LoraGroupArgs& g, const LoraPlan& plan, void* workspace, cudaStream_t stream);

}  // namespace tessera::cuda
