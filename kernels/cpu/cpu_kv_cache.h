// Rows of the paged KV cache as the CPU backend reads and writes them: f32 caches hold the
// values, kF8E4M3 caches the E4M3 codes with a scale per (slot, kv head).
#pragma once

#include <cstdint>

#include "kernels/backend.h"

namespace tessera::cpu {

enum class KvPart { kK, kV };

// Writes one token's K or V row (num_kv_heads * head_dim floats) into `slot`.
void StoreKvRow(const KvLayerView& cache, KvPart part, int64_t slot, const float* row);

// Head `kv_head` of `slot` as floats: a pointer into an f32 cache, or the dequantized
// values written to `scratch` (head_dim floats) for an FP8 one.
const float* LoadKvHead(const KvLayerView& cache, KvPart part, int64_t slot, int32_t kv_head, float* scratch);

}  // namespace tessera::cpu
