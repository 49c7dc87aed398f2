#include "kernels/cpu/cpu_kv_cache.h"

#include <array>
#include <cstring>

#include "runtime/common/dtype.h"

namespace tessera::cpu {
namespace {

const std::array<float, 256>& E4M3Table() {
  static const std::array<float, 256> table = [] {
    std::array<float, 256> t;
    for (int c = 0; c < 256; ++c) t[c] = E4M3ToF32(static_cast<uint8_t>(c));
    return t;
  }();
  return table;
}

}  // namespace

void StoreKvRow(const KvLayerView& cache, KvPart part, int64_t slot, const float* row) {
  const int32_t D = cache.head_dim;
  const int64_t width = static_cast<int64_t>(cache.num_kv_heads) * D;
  void* base = part == KvPart::kK ? cache.k : cache.v;
  if (cache.dtype != DType::kF8E4M3) {
    std::memcpy(static_cast<float*>(base) + slot * width, row, width * sizeof(float));
    return;
  }
  uint8_t* codes = static_cast<uint8_t*>(base) + slot * width;
  float* scales = (part == KvPart::kK ? cache.k_scale : cache.v_scale) + slot * cache.num_kv_heads;
  for (int32_t h = 0; h < cache.num_kv_heads; ++h) QuantizeKvHeadE4M3(row + h * D, D, codes + h * D, scales + h);
}

const float* LoadKvHead(const KvLayerView& cache, KvPart part, int64_t slot, int32_t kv_head, float* scratch) {
  const int32_t D = cache.head_dim;
  const int64_t offset = (slot * cache.num_kv_heads + kv_head) * D;
  const void* base = part == KvPart::kK ? cache.k : cache.v;
  if (cache.dtype != DType::kF8E4M3) return static_cast<const float*>(base) + offset;
  const uint8_t* codes = static_cast<const uint8_t*>(base) + offset;
  const float scale = (part == KvPart::kK ? cache.k_scale : cache.v_scale)[slot * cache.num_kv_heads + kv_head];
  const std::array<float, 256>& table = E4M3Table();
  for (int32_t d = 0; d < D; ++d) scratch[d] = table[codes[d]] * scale;
  return scratch;
}

}  // namespace tessera::cpu
