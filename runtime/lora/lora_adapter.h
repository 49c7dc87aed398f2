// One PEFT LoRA adapter read from disk (adapter_config.json + adapter_model.safetensors),
// validated against the base model and converted to the layout the slot tables take:
// per module A [rank, in] and (scale·B)ᵀ [rank, out] in the backend's activation dtype.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/backend.h"
#include "runtime/lora/lora_config.h"
#include "runtime/model/config.h"

namespace tessera {

struct LoraLoadOptions {
  int32_t max_lora_rank = 64;
  DType dtype = DType::kF32;  // of the converted matrices: the backend's activation dtype
  absl::Status Validate() const;
};

// Host copy of one adapted module; rank 0 when the adapter leaves it alone.
struct LoraModuleHost {
  int32_t rank = 0;
  std::vector<char> a;    // [rank, in_features]
  std::vector<char> b_t;  // [rank, out_features], the module's scale folded in
};

class LoraAdapter {
 public:
  // Reads DIR. Pickle checkpoints (adapter_model.bin, *.pt, ...) are refused, never opened.
  // Errors name the file and, for tensors, the tensor.
  static absl::StatusOr<std::unique_ptr<LoraAdapter>> Load(const std::string& dir, const ModelConfig& model,
                                                           const LoraLoadOptions& options);

  const LoraConfig& config() const { return config_; }
  const std::string& dir() const { return dir_; }
  int32_t num_layers() const { return num_layers_; }
  int32_t max_rank() const { return max_rank_; }
  DType dtype() const { return dtype_; }
  size_t host_bytes() const { return host_bytes_; }
  const LoraModuleHost& module(int layer, int target) const { return modules_[layer * kNumLoraTargets + target]; }

 private:
  LoraAdapter() = default;
  LoraConfig config_;
  std::string dir_;
  int32_t num_layers_ = 0;
  int32_t max_rank_ = 0;
  DType dtype_ = DType::kF32;
  size_t host_bytes_ = 0;
  std::vector<LoraModuleHost> modules_;
};

// in/out features of a target projection of `model`.
int64_t LoraInFeatures(const ModelConfig& model, int target);
int64_t LoraOutFeatures(const ModelConfig& model, int target);

}  // namespace tessera
