#include "runtime/lora/lora_config.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <regex>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "kernels/backend.h"
#include "nlohmann/json.hpp"
#include "runtime/common/status_macros.h"

namespace tessera {
namespace {

using Json = nlohmann::ordered_json;

constexpr const char* kTargetNames[kNumLoraTargets] = {"q_proj",    "k_proj",  "v_proj",   "o_proj",
                                                       "gate_proj", "up_proj", "down_proj"};

bool EndsWithComponent(const std::string& key, const std::string& name) {
  if (key == name) return true;
  return key.size() > name.size() && key.compare(key.size() - name.size(), name.size(), name) == 0 &&
         key[key.size() - name.size() - 1] == '.';
}

// PEFT's get_pattern_key: pattern P applies to a key when the key is "(prefix.)P".
absl::StatusOr<bool> PatternMatches(const std::string& pattern, const std::string& key) {
  try {
    return std::regex_match(key, std::regex("(.*\\.)?(" + pattern + ")"));
  } catch (const std::regex_error&) {
    return absl::InvalidArgumentError(absl::StrCat("pattern '", pattern, "' is not a valid regular expression"));
  }
}

bool IsNullOrEmpty(const Json& j) {
  return j.is_null() || (j.is_array() && j.empty()) || (j.is_object() && j.empty()) ||
         (j.is_string() && j.get<std::string>().empty());
}

absl::Status Refuse(const std::string& origin, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat(origin, ": ", what));
}

}  // namespace

const char* LoraTargetName(int target) { return kTargetNames[target]; }

std::string LoraModuleKey(int64_t layer, int target) {
  const char* block = target <= kLoraO ? "self_attn" : "mlp";
  return absl::StrCat("model.layers.", layer, ".", block, ".", kTargetNames[target]);
}

absl::StatusOr<LoraConfig> LoraConfig::FromJsonText(const std::string& text, const std::string& origin) {
  Json j = Json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return Refuse(origin, "not a JSON object");
  LoraConfig c;
  auto number = [&](const char* key, double* out) -> absl::Status {
    if (!j.contains(key) || j[key].is_null()) return absl::OkStatus();
    if (!j[key].is_number()) return Refuse(origin, absl::StrCat("'", key, "' must be a number"));
    *out = j[key].get<double>();
    return absl::OkStatus();
  };
  auto flag = [&](const char* key, bool* out) -> absl::Status {
    if (!j.contains(key) || j[key].is_null()) return absl::OkStatus();
    if (!j[key].is_boolean()) return Refuse(origin, absl::StrCat("'", key, "' must be true or false"));
    *out = j[key].get<bool>();
    return absl::OkStatus();
  };
  if (j.contains("peft_type") && j["peft_type"].is_string() && j["peft_type"] != "LORA")
    return Refuse(origin, absl::StrCat("peft_type '", j["peft_type"].get<std::string>(), "' is not LORA"));
  double r = static_cast<double>(c.r), alpha = c.lora_alpha;
  RETURN_IF_ERROR(number("r", &r));
  RETURN_IF_ERROR(number("lora_alpha", &alpha));
  if (r < 1 || r != std::floor(r)) return Refuse(origin, "'r' must be a positive integer");
  c.r = static_cast<int64_t>(r);
  c.lora_alpha = alpha;
  RETURN_IF_ERROR(flag("use_rslora", &c.use_rslora));
  bool fan_in_fan_out = false, use_dora = false, lora_bias = false;
  RETURN_IF_ERROR(flag("fan_in_fan_out", &fan_in_fan_out));
  RETURN_IF_ERROR(flag("use_dora", &use_dora));
  RETURN_IF_ERROR(flag("lora_bias", &lora_bias));
  if (fan_in_fan_out) return Refuse(origin, "fan_in_fan_out adapters (Conv1D/GPT-2 layout) are not supported");
  if (use_dora) return Refuse(origin, "DoRA adapters (use_dora) are not supported");
  if (lora_bias) return Refuse(origin, "lora_bias adapters are not supported");
  if (j.contains("bias") && !j["bias"].is_null() && j["bias"] != "none")
    return Refuse(origin, "'bias' must be \"none\" (adapters that train biases are not supported)");
  for (const char* key : {"modules_to_save", "exclude_modules", "layer_replication", "target_parameters",
                          "trainable_token_indices"}) {
    if (j.contains(key) && !IsNullOrEmpty(j[key]))
      return Refuse(origin, absl::StrCat("'", key, "' is not supported (the adapter must only hold LoRA A/B matrices)"));
  }
  // Variants whose forward is not x·Aᵀ·Bᵀ on every token (activated LoRA, Arrow routing,
  // QA-LoRA pooling, block-diagonal LoRA).
  for (const char* key : {"alora_invocation_tokens", "arrow_config", "use_qalora", "use_bdlora"}) {
    if (j.contains(key) && !IsNullOrEmpty(j[key]) && j[key] != false)
      return Refuse(origin, absl::StrCat("'", key, "' adapters are not supported"));
  }
  if (j.contains("base_model_name_or_path") && j["base_model_name_or_path"].is_string())
    c.base_model_name_or_path = j["base_model_name_or_path"].get<std::string>();

  const Json& tm = j.contains("target_modules") ? j["target_modules"] : Json();
  if (tm.is_string()) {
    const std::string s = tm.get<std::string>();
    if (s == "all-linear") c.all_linear = true;
    else c.target_regex = s;
  } else if (tm.is_array()) {
    for (const Json& t : tm) {
      if (!t.is_string()) return Refuse(origin, "'target_modules' entries must be strings");
      c.target_names.push_back(t.get<std::string>());
    }
  } else {
    return Refuse(origin, "'target_modules' must be a list of module names, a regular expression or \"all-linear\"");
  }
  if (!c.target_regex.empty()) {
    try {
      std::regex probe(c.target_regex);
    } catch (const std::regex_error&) {
      return Refuse(origin, absl::StrCat("'target_modules' '", c.target_regex, "' is not a valid regular expression"));
    }
  }
  // A listed name that is no Llama projection (lm_head, embed_tokens, ...) would be trained
  // but not applied: refuse rather than serve a different model.
  for (const std::string& name : c.target_names) {
    bool known = false;
    for (int t = 0; t < kNumLoraTargets && !known; ++t) known = EndsWithComponent(name, kTargetNames[t]);
    if (!known)
      return Refuse(origin, absl::StrCat("target module '", name, "' is not supported; tessera adapts ",
                                         absl::StrJoin(kTargetNames, ", ")));
  }
  if (j.contains("layers_to_transform") && !j["layers_to_transform"].is_null()) {
    const Json& lt = j["layers_to_transform"];
    if (lt.is_number_integer()) {
      c.layers_to_transform.push_back(lt.get<int64_t>());
    } else if (lt.is_array()) {
      for (const Json& v : lt) {
        if (!v.is_number_integer()) return Refuse(origin, "'layers_to_transform' must hold integers");
        c.layers_to_transform.push_back(v.get<int64_t>());
      }
    } else {
      return Refuse(origin, "'layers_to_transform' must be an integer or a list of integers");
    }
  }
  if (j.contains("rank_pattern") && !j["rank_pattern"].is_null()) {
    if (!j["rank_pattern"].is_object()) return Refuse(origin, "'rank_pattern' must be an object");
    for (const auto& [k, v] : j["rank_pattern"].items()) {
      if (!v.is_number_integer() || v.get<int64_t>() < 1)
        return Refuse(origin, absl::StrCat("rank_pattern '", k, "' must be a positive integer"));
      RETURN_IF_ERROR(PatternMatches(k, "").status());
      c.rank_pattern.emplace_back(k, v.get<int64_t>());
    }
  }
  if (j.contains("alpha_pattern") && !j["alpha_pattern"].is_null()) {
    if (!j["alpha_pattern"].is_object()) return Refuse(origin, "'alpha_pattern' must be an object");
    for (const auto& [k, v] : j["alpha_pattern"].items()) {
      if (!v.is_number()) return Refuse(origin, absl::StrCat("alpha_pattern '", k, "' must be a number"));
      RETURN_IF_ERROR(PatternMatches(k, "").status());
      c.alpha_pattern.emplace_back(k, v.get<double>());
    }
  }
  return c;
}

absl::StatusOr<LoraConfig> LoraConfig::FromFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open ", path));
  std::stringstream ss;
  ss << in.rdbuf();
  return FromJsonText(ss.str(), path);
}

absl::StatusOr<bool> LoraConfig::Targets(int64_t layer, int target) const {
  if (!layers_to_transform.empty() &&
      std::find(layers_to_transform.begin(), layers_to_transform.end(), layer) == layers_to_transform.end())
    return false;
  if (all_linear) return true;
  const std::string key = LoraModuleKey(layer, target);
  if (!target_regex.empty()) {
    try {
      return std::regex_match(key, std::regex(target_regex));
    } catch (const std::regex_error&) {
      return absl::InvalidArgumentError(absl::StrCat("target_modules '", target_regex, "' is not a valid regular expression"));
    }
  }
  for (const std::string& name : target_names) {
    if (EndsWithComponent(key, name)) return true;
  }
  return false;
}

int64_t LoraConfig::RankFor(int64_t layer, int target) const {
  const std::string key = LoraModuleKey(layer, target);
  for (const auto& [pattern, rank] : rank_pattern) {
    auto m = PatternMatches(pattern, key);
    if (m.ok() && *m) return rank;
  }
  return r;
}

double LoraConfig::AlphaFor(int64_t layer, int target) const {
  const std::string key = LoraModuleKey(layer, target);
  for (const auto& [pattern, alpha] : alpha_pattern) {
    auto m = PatternMatches(pattern, key);
    if (m.ok() && *m) return alpha;
  }
  return lora_alpha;
}

double LoraConfig::ScaleFor(int64_t layer, int target, int64_t rank) const {
  const double alpha = AlphaFor(layer, target);
  return use_rslora ? alpha / std::sqrt(static_cast<double>(rank)) : alpha / static_cast<double>(rank);
}

}  // namespace tessera
