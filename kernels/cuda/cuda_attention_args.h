// The attention kernels' arguments from the backend's views: one place that maps a
// DeviceBatch, the layer's cache and the attention params onto cuda::AttentionArgs.
#pragma once

#include "kernels/backend.h"
#include "kernels/cuda/cuda_launch.h"

namespace tessera::cuda {

inline AttentionArgs AttentionArgsOf(const TensorView& q, const DeviceBatch& batch, const KvLayerView& cache,
                                     const AttentionParams& p, const TensorView& out) {
  AttentionArgs a;
  a.q = q.data;
  a.out = out.data;
  a.k_cache = cache.k;
  a.v_cache = cache.v;
  a.kv_fp8 = cache.dtype == DType::kF8E4M3;
  a.k_scale = cache.k_scale;
  a.v_scale = cache.v_scale;
  a.positions = batch.positions;
  a.query_start = batch.query_start;
  a.block_tables = batch.block_tables;
  a.num_tokens = batch.num_tokens;
  a.num_seqs = batch.num_seqs;
  a.max_blocks_per_seq = batch.max_blocks_per_seq;
  a.block_size = batch.block_size;
  a.max_query_len = batch.max_query_len;
  a.max_context_len = batch.max_context_len;
  a.num_heads = p.num_heads;
  a.num_kv_heads = p.num_kv_heads;
  a.head_dim = p.head_dim;
  a.q_stride = q.cols;
  a.out_stride = out.cols;
  a.scale = p.scale;
  return a;
}

}  // namespace tessera::cuda
