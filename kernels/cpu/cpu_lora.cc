// CPU reference for multi-adapter LoRA (out += x · Aᵀ · (scale·B)ᵀ per token's slot). Tokens
// are cut into tiles of one slot: a prefill run of one adapter becomes several tiles that
// reuse each A/B row across tokens (SGMV), scattered decode tokens become one-token tiles
// (BGMV). Every token's sums run in the same order whatever tile it lands in, so the
// result does not depend on how the batch is composed.
#include <algorithm>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/cpu/cpu_backend.h"
#include "runtime/common/thread_pool.h"

namespace tessera {
namespace {

constexpr int32_t kTileTokens = 8;

__attribute__((target_clones("arch=haswell", "default")))
float LoraDot(const float* a, const float* b, int64_t k) {
  float s = 0.0f;
#pragma omp simd reduction(+ : s)
  for (int64_t i = 0; i < k; ++i) s += a[i] * b[i];
  return s;
}

__attribute__((target_clones("arch=haswell", "default")))
void Axpy(float alpha, const float* x, float* y, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) y[i] += alpha * x[i];
}

struct Tile {
  int32_t begin = 0;
  int32_t count = 0;
  int32_t slot = 0;
};

}  // namespace

void CpuBackend::LoraApply(const TensorView& x, const LoraBatch& lora, int layer, int target, TensorView out,
                           int64_t col_offset) {
  const LoraSlotTables* tables = lora.tables;
  if (tables == nullptr || lora.token_slots == nullptr) {
    RecordOpError(absl::InvalidArgumentError("LoraApply: the batch has no slot tables or token slots"));
    return;
  }
  if (layer < 0 || layer >= tables->num_layers || target < 0 || target >= kNumLoraTargets) {
    RecordOpError(absl::InvalidArgumentError(absl::StrCat("LoraApply: no tables for layer ", layer, " target ", target)));
    return;
  }
  const LoraModuleSlots& m = tables->module(layer, target);
  const int64_t in = m.in_features, nout = m.out_features;
  if (tables->dtype != DType::kF32 || x.dtype != DType::kF32 || out.dtype != DType::kF32) {
    RecordOpError(absl::InvalidArgumentError("LoraApply on the cpu backend needs f32 activations and slot tables"));
    return;
  }
  if (x.cols != in || x.rows != lora.num_tokens || out.rows != x.rows || col_offset < 0 ||
      col_offset + nout > out.cols) {
    RecordOpError(absl::InvalidArgumentError(
        absl::StrCat("LoraApply layer ", layer, " target ", target, ": x [", x.rows, ", ", x.cols, "] and out [", out.rows,
                     ", ", out.cols, "] at column ", col_offset, " do not fit A [", in, "] / B [", nout, "] over ",
                     lora.num_tokens, " tokens")));
    return;
  }
  std::vector<Tile> tiles;
  for (int32_t t = 0; t < lora.num_tokens;) {
    const int32_t slot = lora.token_slots[t];
    int32_t end = t + 1;
    while (end < lora.num_tokens && end - t < kTileTokens && lora.token_slots[end] == slot) ++end;
    if (slot >= tables->num_slots) {
      RecordOpError(absl::InvalidArgumentError(absl::StrCat("LoraApply: token ", t, " uses slot ", slot, " of ",
                                                            tables->num_slots)));
      return;
    }
    if (slot >= 0 && m.ranks[slot] > 0) tiles.push_back({t, end - t, slot});
    t = end;
  }
  if (tiles.empty()) return;
  const int32_t max_rank = tables->max_rank;
  const float* xin = static_cast<const float*>(x.data);
  float* o = static_cast<float*>(out.data);
  const float* a_all = static_cast<const float*>(m.a);
  const float* bt_all = static_cast<const float*>(m.b_t);
  pool_->ParallelFor(
      static_cast<int64_t>(tiles.size()),
      [&](int64_t begin, int64_t end) {
        std::vector<float> shrunk(static_cast<size_t>(kTileTokens) * max_rank);
        for (int64_t i = begin; i < end; ++i) {
          const Tile& tile = tiles[i];
          const int32_t rank = std::min(m.ranks[tile.slot], max_rank);
          const float* a = a_all + static_cast<int64_t>(tile.slot) * max_rank * in;
          const float* bt = bt_all + static_cast<int64_t>(tile.slot) * max_rank * nout;
          // Shrink: each A row is read once per tile.
          for (int32_t r = 0; r < rank; ++r) {
            for (int32_t t = 0; t < tile.count; ++t) {
              shrunk[t * max_rank + r] = LoraDot(xin + (tile.begin + t) * in, a + r * in, in);
            }
          }
          // Expand: each Bᵀ row is read once per tile; rank order is fixed per output element.
          for (int32_t r = 0; r < rank; ++r) {
            for (int32_t t = 0; t < tile.count; ++t) {
              Axpy(shrunk[t * max_rank + r], bt + r * nout, o + (tile.begin + t) * out.cols + col_offset, nout);
            }
          }
        }
      },
      1);
}

}  // namespace tessera
