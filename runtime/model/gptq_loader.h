// Loads GPTQ-quantized linears (qweight, qzeros, scales, g_idx) from a checkpoint, checks
// every shape and index, and reorders act-order weights so groups are contiguous.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/backend.h"
#include "runtime/model/gptq_format.h"
#include "runtime/model/weights.h"

namespace tessera {

// One quantized linear in host memory, in the layout QuantizedWeight describes: groups
// contiguous along the input; perm (empty when the identity) maps reordered input row j to
// the checkpoint's input feature perm[j].
struct GptqHostWeight {
  int bits = 4;
  int group_size = 128;
  int64_t in_features = 0;
  int64_t out_features = 0;
  std::vector<int32_t> qweight;   // [GptqPackedWords(in, bits), out]
  std::vector<int32_t> qzeros;    // [groups, GptqPackedWords(out, bits)]
  std::vector<uint16_t> scales;   // [groups, out] fp16
  std::vector<int32_t> perm;      // [in] or empty
  bool zeros_minus_one = false;

  int64_t num_groups() const { return in_features / group_size; }
  // A view whose pointers refer to this object's host vectors.
  QuantizedWeight View() const;
};

// Reads `prefix`.qweight/.qzeros/.scales/.g_idx for a linear of in_features -> out_features.
absl::StatusOr<GptqHostWeight> LoadGptqLinear(const WeightStore& store, const std::string& prefix,
                                              int64_t in_features, int64_t out_features, const GptqConfig& config);

// Stacks b's output features after a's (gate and up into one gate_up matmul). Both must
// share bits, group size, input permutation and zero convention.
absl::StatusOr<GptqHostWeight> ConcatGptqOutFeatures(const GptqHostWeight& a, const GptqHostWeight& b);

// A GptqHostWeight copied onto a backend's device: in the backend's own layout when it has
// one for this weight (Backend::PackQuantizedWeight), else as the AutoGPTQ arrays.
class GptqDeviceWeight {
 public:
  static absl::StatusOr<std::unique_ptr<GptqDeviceWeight>> Upload(Backend& backend, const GptqHostWeight& host);
  const QuantizedWeight& weight() const { return weight_; }
  size_t bytes() const { return bytes_; }

 private:
  QuantizedWeight weight_;
  DeviceBuffer qweight_, qzeros_, scales_, perm_, packed_;
  size_t bytes_ = 0;
};

}  // namespace tessera
