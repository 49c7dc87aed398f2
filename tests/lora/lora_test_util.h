// Test adapters in the PEFT layout with random A and B, and the merged-weights model
// (W + scale·B·A) they must be equivalent to, written with plain loops that share nothing
// with the loader.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "runtime/common/dtype.h"
#include "runtime/model/config.h"

namespace tessera::testing {

struct PeftTensor {
  std::string name;
  std::vector<int64_t> shape;
  std::vector<float> data;
};

struct RandomAdapterSpec {
  int rank = 8;
  double alpha = 16.0;
  bool use_rslora = false;
  std::vector<std::string> targets = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"};
  unsigned seed = 1;
  float b_std = 0.2f;  // B is nonzero so the adapter changes the output
  DType dtype = DType::kF32;
};

struct RandomAdapter {
  std::string config_json;
  std::vector<PeftTensor> tensors;  // PEFT names, A [r, in] and B [out, r]
  // Module key ("model.layers.0.self_attn.q_proj") -> scale·B·A as [out, in].
  std::map<std::string, std::vector<double>> deltas;
};

RandomAdapter MakeRandomAdapter(const ModelConfig& model, const RandomAdapterSpec& spec);
// Writes adapter_config.json and adapter_model.safetensors (tensors in `dtype`).
void WritePeftAdapter(const std::string& dir, const std::string& config_json, const std::vector<PeftTensor>& tensors,
                      DType dtype = DType::kF32);
// Copies the model directory `base_dir` to `out_dir` with every delta added to its weight (f32).
void WriteMergedModel(const std::string& base_dir, const RandomAdapter& adapter, const std::string& out_dir);
// A fresh empty directory under the test temp dir (fixtures remove it in TearDown).
std::string MakeTempDir(const std::string& prefix);

}  // namespace tessera::testing
