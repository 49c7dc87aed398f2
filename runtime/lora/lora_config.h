// adapter_config.json of a PEFT LoRA adapter: which Llama projections it adapts, with
// which rank and scale (r, lora_alpha, use_rslora, rank_pattern, alpha_pattern), and
// the options tessera refuses because it cannot honour them (DoRA, biases, ...).
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"

namespace tessera {

// The projection names PEFT uses, indexed by LoraTarget (kernels/backend.h).
const char* LoraTargetName(int target);
// "model.layers.{layer}.self_attn.q_proj": the module key PEFT matches its patterns against.
std::string LoraModuleKey(int64_t layer, int target);

struct LoraConfig {
  int64_t r = 8;
  double lora_alpha = 8.0;
  bool use_rslora = false;  // scale alpha / sqrt(r) instead of alpha / r
  std::string base_model_name_or_path;
  // target_modules: a list of names (a module matches when its key equals one or ends
  // with "." + one), a regular expression matched against the whole key, or "all-linear".
  std::vector<std::string> target_names;
  std::string target_regex;
  bool all_linear = false;
  std::vector<int64_t> layers_to_transform;  // empty: every layer
  // Per-module overrides, tried in file order like PEFT's get_pattern_key.
  std::vector<std::pair<std::string, int64_t>> rank_pattern;
  std::vector<std::pair<std::string, double>> alpha_pattern;

  // Parses and validates; errors name `origin` and the offending key.
  static absl::StatusOr<LoraConfig> FromJsonText(const std::string& text, const std::string& origin);
  static absl::StatusOr<LoraConfig> FromFile(const std::string& path);

  // Whether the adapter modifies `target` of `layer`.
  absl::StatusOr<bool> Targets(int64_t layer, int target) const;
  int64_t RankFor(int64_t layer, int target) const;
  double AlphaFor(int64_t layer, int target) const;
  // The factor B·A is multiplied by for a module of rank `rank`.
  double ScaleFor(int64_t layer, int target, int64_t rank) const;
};

}  // namespace tessera
