// CPU reference paged attention: each query token attends causally to its sequence's
// cached keys through the block table (GQA: query head h reads kv head h / group); an
// FP8 cache is dequantized as it is read.
#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/cpu/cpu_backend.h"
#include "kernels/cpu/cpu_kv_cache.h"
#include "runtime/common/thread_pool.h"

namespace tessera {

void CpuBackend::PagedAttention(const TensorView& q, const DeviceBatch& batch, const KvLayerView& cache,
                                const AttentionParams& p, TensorView out) {
  const int32_t D = p.head_dim;
  const int32_t group = p.num_heads / p.num_kv_heads;
  std::vector<int32_t> seq_of(batch.num_tokens);
  for (int32_t s = 0; s < batch.num_seqs; ++s)
    for (int32_t t = batch.query_start[s]; t < batch.query_start[s + 1]; ++t) seq_of[t] = s;
  const int64_t work = static_cast<int64_t>(batch.num_tokens) * p.num_heads;
  pool_->ParallelFor(work, [&](int64_t b, int64_t e) {
    std::vector<float> scores;
    std::vector<float> acc(D), scratch(D);
    for (int64_t w = b; w < e; ++w) {
      const int32_t t = static_cast<int32_t>(w / p.num_heads);
      const int32_t h = static_cast<int32_t>(w % p.num_heads);
      const int32_t kvh = h / group;
      const int32_t s = seq_of[t];
      const int32_t len = batch.positions[t] + 1;
      const int32_t* table = batch.block_tables + static_cast<int64_t>(s) * batch.max_blocks_per_seq;
      const float* qv = static_cast<const float*>(q.data) + static_cast<int64_t>(t) * q.cols + h * D;
      scores.resize(len);
      float mx = -INFINITY;
      for (int32_t j = 0; j < len; ++j) {
        int64_t slot = static_cast<int64_t>(table[j / batch.block_size]) * batch.block_size + j % batch.block_size;
        const float* kv = cpu::LoadKvHead(cache, cpu::KvPart::kK, slot, kvh, scratch.data());
        float dot = 0.0f;
        for (int32_t d = 0; d < D; ++d) dot += qv[d] * kv[d];
        scores[j] = dot * p.scale;
        mx = std::max(mx, scores[j]);
      }
      float sum = 0.0f;
      for (int32_t j = 0; j < len; ++j) {
        scores[j] = std::exp(scores[j] - mx);
        sum += scores[j];
      }
      std::fill(acc.begin(), acc.end(), 0.0f);
      for (int32_t j = 0; j < len; ++j) {
        int64_t slot = static_cast<int64_t>(table[j / batch.block_size]) * batch.block_size + j % batch.block_size;
        const float* vv = cpu::LoadKvHead(cache, cpu::KvPart::kV, slot, kvh, scratch.data());
        const float wgt = scores[j];
        for (int32_t d = 0; d < D; ++d) acc[d] += wgt * vv[d];
      }
      float* o = static_cast<float*>(out.data) + static_cast<int64_t>(t) * out.cols + h * D;
      for (int32_t d = 0; d < D; ++d) o[d] = acc[d] / sum;
    }
  });
}

}  // namespace tessera
