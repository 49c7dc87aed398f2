#include "runtime/model/config.h"

#include <cmath>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "runtime/common/status_macros.h"

namespace tessera {
namespace {

using json = nlohmann::json;

absl::Status Bad(const std::string& origin, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat(origin, ": ", what));
}

absl::Status ReadInt(const json& j, const char* key, bool required, int64_t* out, const std::string& origin) {
  if (!j.contains(key) || j[key].is_null()) {
    return required ? Bad(origin, absl::StrCat("missing required key '", key, "'")) : absl::OkStatus();
  }
  if (!j[key].is_number_integer()) return Bad(origin, absl::StrCat("'", key, "' must be an integer"));
  *out = j[key].get<int64_t>();
  return absl::OkStatus();
}

absl::Status ReadDouble(const json& j, const char* key, double* out, const std::string& origin) {
  if (!j.contains(key) || j[key].is_null()) return absl::OkStatus();
  if (!j[key].is_number()) return Bad(origin, absl::StrCat("'", key, "' must be a number"));
  *out = j[key].get<double>();
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<ModelConfig> ModelConfig::FromFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open"));
  std::stringstream ss;
  ss << in.rdbuf();
  return FromJsonText(ss.str(), path);
}

absl::StatusOr<ModelConfig> ModelConfig::FromJsonText(const std::string& text, const std::string& origin) {
  json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return Bad(origin, "not a JSON object");
  ModelConfig c;
  if (j.contains("model_type") && j["model_type"].is_string()) c.model_type = j["model_type"].get<std::string>();
  if (c.model_type != "llama")
    return Bad(origin, absl::StrCat("model_type '", c.model_type, "' is not supported (llama)"));
  RETURN_IF_ERROR(ReadInt(j, "hidden_size", true, &c.hidden_size, origin));
  RETURN_IF_ERROR(ReadInt(j, "intermediate_size", true, &c.intermediate_size, origin));
  RETURN_IF_ERROR(ReadInt(j, "num_hidden_layers", true, &c.num_hidden_layers, origin));
  RETURN_IF_ERROR(ReadInt(j, "num_attention_heads", true, &c.num_attention_heads, origin));
  c.num_key_value_heads = c.num_attention_heads;
  RETURN_IF_ERROR(ReadInt(j, "num_key_value_heads", false, &c.num_key_value_heads, origin));
  RETURN_IF_ERROR(ReadInt(j, "vocab_size", true, &c.vocab_size, origin));
  RETURN_IF_ERROR(ReadInt(j, "max_position_embeddings", false, &c.max_position_embeddings, origin));
  if (c.num_attention_heads > 0) c.head_dim = c.hidden_size / c.num_attention_heads;
  RETURN_IF_ERROR(ReadInt(j, "head_dim", false, &c.head_dim, origin));
  RETURN_IF_ERROR(ReadDouble(j, "rms_norm_eps", &c.rms_norm_eps, origin));
  RETURN_IF_ERROR(ReadDouble(j, "rope_theta", &c.rope_theta, origin));
  if (j.contains("tie_word_embeddings") && j["tie_word_embeddings"].is_boolean())
    c.tie_word_embeddings = j["tie_word_embeddings"].get<bool>();
  if (j.contains("bos_token_id") && j["bos_token_id"].is_number_integer())
    c.bos_token_id = j["bos_token_id"].get<int32_t>();
  if (j.contains("eos_token_id")) {
    const json& e = j["eos_token_id"];
    if (e.is_number_integer()) {
      c.eos_token_ids = {e.get<int32_t>()};
    } else if (e.is_array()) {
      c.eos_token_ids.clear();
      for (const auto& v : e) {
        if (!v.is_number_integer()) return Bad(origin, "'eos_token_id' list must hold integers");
        c.eos_token_ids.push_back(v.get<int32_t>());
      }
    } else if (!e.is_null()) {
      return Bad(origin, "'eos_token_id' must be an integer or a list of integers");
    }
  }
  if (j.contains("torch_dtype") && j["torch_dtype"].is_string()) c.torch_dtype = j["torch_dtype"].get<std::string>();
  if (j.contains("dtype") && j["dtype"].is_string()) c.torch_dtype = j["dtype"].get<std::string>();
  if (j.contains("hidden_act") && j["hidden_act"].is_string() && j["hidden_act"] != "silu")
    return Bad(origin, absl::StrCat("hidden_act '", j["hidden_act"].get<std::string>(), "' is not supported (silu only)"));
  for (const char* bias : {"attention_bias", "mlp_bias"}) {
    if (j.contains(bias) && j[bias].is_boolean() && j[bias].get<bool>())
      return Bad(origin, absl::StrCat("'", bias, "': biases are not supported"));
  }
  // transformers 5 writes rope_theta and the scaling together under "rope_parameters".
  const char* rope_key = nullptr;
  if (j.contains("rope_parameters") && j["rope_parameters"].is_object()) {
    rope_key = "rope_parameters";
    RETURN_IF_ERROR(ReadDouble(j["rope_parameters"], "rope_theta", &c.rope_theta, origin));
  } else if (j.contains("rope_scaling") && !j["rope_scaling"].is_null()) {
    rope_key = "rope_scaling";
  }
  if (rope_key != nullptr) {
    const json& r = j[rope_key];
    if (!r.is_object()) return Bad(origin, absl::StrCat("'", rope_key, "' must be an object or null"));
    std::string type = "default";
    if (r.contains("rope_type") && r["rope_type"].is_string()) type = r["rope_type"].get<std::string>();
    else if (r.contains("type") && r["type"].is_string()) type = r["type"].get<std::string>();
    if (type == "linear") c.rope_scaling.type = RopeScaling::Type::kLinear;
    else if (type == "dynamic") c.rope_scaling.type = RopeScaling::Type::kDynamic;
    else if (type == "llama3") c.rope_scaling.type = RopeScaling::Type::kLlama3;
    else if (type == "default") c.rope_scaling.type = RopeScaling::Type::kNone;
    else return Bad(origin, absl::StrCat("rope_scaling type '", type, "' is not supported (linear, dynamic, llama3)"));
    RETURN_IF_ERROR(ReadDouble(r, "factor", &c.rope_scaling.factor, origin));
    RETURN_IF_ERROR(ReadDouble(r, "low_freq_factor", &c.rope_scaling.low_freq_factor, origin));
    RETURN_IF_ERROR(ReadDouble(r, "high_freq_factor", &c.rope_scaling.high_freq_factor, origin));
    c.rope_scaling.original_max_position_embeddings = c.max_position_embeddings;
    RETURN_IF_ERROR(ReadInt(r, "original_max_position_embeddings", false,
                            &c.rope_scaling.original_max_position_embeddings, origin));
  }
  absl::Status st = c.Validate();
  if (!st.ok()) return Bad(origin, std::string(st.message()));
  return c;
}

absl::Status ModelConfig::Validate() const {
  auto positive = [](int64_t v, const char* name) -> absl::Status {
    if (v <= 0) return absl::InvalidArgumentError(absl::StrCat("'", name, "' must be positive, got ", v));
    return absl::OkStatus();
  };
  RETURN_IF_ERROR(positive(hidden_size, "hidden_size"));
  RETURN_IF_ERROR(positive(intermediate_size, "intermediate_size"));
  RETURN_IF_ERROR(positive(num_hidden_layers, "num_hidden_layers"));
  RETURN_IF_ERROR(positive(num_attention_heads, "num_attention_heads"));
  RETURN_IF_ERROR(positive(num_key_value_heads, "num_key_value_heads"));
  RETURN_IF_ERROR(positive(head_dim, "head_dim"));
  RETURN_IF_ERROR(positive(vocab_size, "vocab_size"));
  RETURN_IF_ERROR(positive(max_position_embeddings, "max_position_embeddings"));
  if (num_attention_heads % num_key_value_heads != 0)
    return absl::InvalidArgumentError(absl::StrCat("num_attention_heads (", num_attention_heads,
                                                   ") must be a multiple of num_key_value_heads (", num_key_value_heads, ")"));
  if (head_dim % 2 != 0) return absl::InvalidArgumentError("head_dim must be even for rotary embeddings");
  if (rms_norm_eps <= 0) return absl::InvalidArgumentError("'rms_norm_eps' must be positive");
  if (rope_theta <= 0) return absl::InvalidArgumentError("'rope_theta' must be positive");
  if (rope_scaling.type != RopeScaling::Type::kNone && rope_scaling.factor <= 0)
    return absl::InvalidArgumentError("rope_scaling 'factor' must be positive");
  if (bos_token_id < 0 || bos_token_id >= vocab_size)
    return absl::InvalidArgumentError(absl::StrCat("bos_token_id ", bos_token_id, " is outside the vocabulary"));
  return absl::OkStatus();
}

std::vector<float> ModelConfig::RopeInvFreq(int64_t seq_len) const {
  const int64_t half = head_dim / 2;
  double base = rope_theta;
  const RopeScaling& rs = rope_scaling;
  if (rs.type == RopeScaling::Type::kDynamic) {
    const double max_pos = static_cast<double>(
        rs.original_max_position_embeddings > 0 ? rs.original_max_position_embeddings : max_position_embeddings);
    if (static_cast<double>(seq_len) > max_pos) {
      base = rope_theta * std::pow(rs.factor * seq_len / max_pos - (rs.factor - 1.0),
                                   static_cast<double>(head_dim) / (head_dim - 2));
    }
  }
  std::vector<float> inv(half);
  for (int64_t i = 0; i < half; ++i) {
    // As transformers computes it: float32 exponent, then 1 / base**exponent.
    double exponent = static_cast<double>(static_cast<float>(2 * i) / static_cast<float>(head_dim));
    double f = 1.0 / std::pow(base, exponent);
    if (rs.type == RopeScaling::Type::kLinear) f /= rs.factor;
    if (rs.type == RopeScaling::Type::kLlama3) {
      const double old_ctx = static_cast<double>(rs.original_max_position_embeddings);
      const double low_wavelen = old_ctx / rs.low_freq_factor;
      const double high_wavelen = old_ctx / rs.high_freq_factor;
      const double wavelen = 2.0 * M_PI / f;
      if (wavelen > low_wavelen) {
        f = f / rs.factor;
      } else if (wavelen >= high_wavelen) {
        double smooth = (old_ctx / wavelen - rs.low_freq_factor) / (rs.high_freq_factor - rs.low_freq_factor);
        f = (1.0 - smooth) * f / rs.factor + smooth * f;
      }
    }
    inv[i] = static_cast<float>(f);
  }
  return inv;
}

}  // namespace tessera
