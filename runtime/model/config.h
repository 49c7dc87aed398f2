// Llama-family model configuration read from a Hugging Face config.json, and the rotary
// frequencies it implies (default, linear, dynamic NTK and llama3 scaling).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace tessera {

struct RopeScaling {
  enum class Type { kNone, kLinear, kDynamic, kLlama3 };
  Type type = Type::kNone;
  double factor = 1.0;
  double low_freq_factor = 1.0;   // llama3
  double high_freq_factor = 4.0;  // llama3
  int64_t original_max_position_embeddings = 0;  // llama3 (and dynamic, when given)
};

struct ModelConfig {
  std::string model_type = "llama";
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t num_hidden_layers = 0;
  int64_t num_attention_heads = 0;
  int64_t num_key_value_heads = 0;
  int64_t head_dim = 0;
  int64_t vocab_size = 0;
  int64_t max_position_embeddings = 2048;
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  RopeScaling rope_scaling;
  bool tie_word_embeddings = false;
  int32_t bos_token_id = 1;
  std::vector<int32_t> eos_token_ids = {2};
  std::string torch_dtype = "float32";

  // Parses and validates; errors name the file and the offending key.
  static absl::StatusOr<ModelConfig> FromJsonText(const std::string& text, const std::string& origin);
  static absl::StatusOr<ModelConfig> FromFile(const std::string& path);
  absl::Status Validate() const;

  // inv_freq[i] for i in [0, head_dim/2), for a batch whose longest sequence is seq_len
  // (only dynamic scaling depends on it).
  std::vector<float> RopeInvFreq(int64_t seq_len) const;
};

}  // namespace tessera
