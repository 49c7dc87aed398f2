// GPTQ (Frantar et al. 2022, Algorithm 1) and round-to-nearest quantization of one linear
// layer to 2/3/4/8-bit integers with per-group fp16 scales and integer zero points.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"

namespace tessera::quant {

struct QuantizeOptions {
  int bits = 4;
  int group_size = 128;   // -1: one group over all input features
  bool sym = true;
  bool act_order = false;  // GPTQ: quantize columns in order of descending Hessian diagonal
  double damp = 0.01;      // fraction of mean(diag H) added to the diagonal
  int block_size = 128;    // GPTQ lazy-update block (rounded to whole groups)
  absl::Status Validate() const;
  // Checks that the group size divides in_features.
  absl::Status ValidateFor(int64_t in_features) const;
  int64_t EffectiveGroupSize(int64_t in_features) const { return group_size == -1 ? in_features : group_size; }
};

// A quantized [out, in] weight. w[o, i] ≈ scale[g, o] * (q[i, o] - zero[g, o]) with
// g = g_idx[i]; layouts are input-major like AutoGPTQ's qweight.
struct QuantizedLinear {
  int bits = 4;
  int64_t group_size = 0;  // effective (never -1)
  int64_t in_features = 0;
  int64_t out_features = 0;
  std::vector<uint32_t> q;        // [in, out]
  std::vector<uint16_t> scales;   // [groups, out] fp16
  std::vector<uint32_t> zeros;    // [groups, out] true zero points, in [1, 2^bits - 1]
  std::vector<int32_t> g_idx;     // [in]

  int64_t num_groups() const { return in_features / group_size; }
  // The dense weight it stands for, [out, in] row-major (fp16 scale widened to f32).
  std::vector<float> Dequantize() const;
};

// Per-row quantization grid over one group of columns.
struct GroupGrid {
  float scale = 1.0f;  // exactly representable in fp16
  uint16_t scale_f16 = 0;
  uint32_t zero = 0;
};
// Grid of a row given its group's minimum and maximum (AutoGPTQ's find_params, with the
// zero point kept at least 1 so AutoGPTQ v1's stored zero - 1 never wraps).
GroupGrid FindGrid(float xmin, float xmax, int bits, bool sym);
// Integer level of x on the grid, clamped to [0, 2^bits - 1].
uint32_t QuantizeValue(double x, const GroupGrid& grid, int bits);

// Round-to-nearest: every group's grid from the original weights.
absl::StatusOr<QuantizedLinear> QuantizeRtn(const float* w, int64_t out, int64_t in, const QuantizeOptions& options);

// GPTQ with the layer's Hessian H = 2/N Σ x xᵀ ([in, in], row-major) of its inputs.
absl::StatusOr<QuantizedLinear> QuantizeGptq(const float* w, int64_t out, int64_t in, const std::vector<double>& hessian,
                                             const QuantizeOptions& options);

// Accumulates H = 2/N Σ x xᵀ over input rows x of one linear layer.
class HessianAccumulator {
 public:
  explicit HessianAccumulator(int64_t in_features);
  void Add(const float* x, int64_t rows);  // x [rows, in]
  // The running average; zero before any row was added.
  std::vector<double> Hessian() const;
  int64_t rows() const { return rows_; }
  int64_t in_features() const { return in_; }

 private:
  int64_t in_;
  int64_t rows_ = 0;
  std::vector<double> sum_;  // Σ x xᵀ
};

}  // namespace tessera::quant
