// adapter_config.json parsing: the target_modules forms PEFT writes, rank/alpha patterns,
// rsLoRA scaling, and the options tessera refuses.
#include "runtime/lora/lora_config.h"

#include <cmath>

#include "gtest/gtest.h"
#include "kernels/backend.h"

namespace tessera {
namespace {

LoraConfig Parse(const std::string& json) {
  auto c = LoraConfig::FromJsonText(json, "adapter_config.json");
  EXPECT_TRUE(c.ok()) << c.status();
  return c.ok() ? *c : LoraConfig();
}

absl::Status ParseError(const std::string& json) { return LoraConfig::FromJsonText(json, "cfg.json").status(); }

bool Targets(const LoraConfig& c, int64_t layer, int target) {
  auto t = c.Targets(layer, target);
  EXPECT_TRUE(t.ok()) << t.status();
  return t.ok() && *t;
}

TEST(LoraConfigTest, ListTargetsMatchByNameAndScaleIsAlphaOverRank) {
  LoraConfig c = Parse(R"({"r": 16, "lora_alpha": 32, "target_modules": ["q_proj", "mlp.down_proj"],
                           "base_model_name_or_path": "meta-llama/Llama-2-7b-hf", "bias": "none"})");
  EXPECT_EQ(c.base_model_name_or_path, "meta-llama/Llama-2-7b-hf");
  EXPECT_TRUE(Targets(c, 3, kLoraQ));
  EXPECT_TRUE(Targets(c, 0, kLoraDown));
  EXPECT_FALSE(Targets(c, 0, kLoraK));
  EXPECT_FALSE(Targets(c, 0, kLoraGate));
  EXPECT_DOUBLE_EQ(c.ScaleFor(0, kLoraQ, 16), 2.0);
}

TEST(LoraConfigTest, ParsesWhatPeft021Writes) {
  // save_pretrained output of peft 0.21 (LoraConfig with rank/alpha patterns, defaults elsewhere).
  LoraConfig c = Parse(R"({"alora_invocation_tokens": null, "alpha_pattern": {"v_proj": 4.0}, "arrow_config": null,
    "auto_mapping": null, "base_model_name_or_path": null, "bias": "none", "corda_config": null,
    "ensure_weight_tying": false, "eva_config": null, "exclude_modules": null, "fan_in_fan_out": false,
    "inference_mode": true, "init_lora_weights": false, "kasa_config": null, "layer_replication": null,
    "layers_pattern": null, "layers_to_transform": null, "loftq_config": {}, "lora_alpha": 16, "lora_bias": false,
    "lora_dropout": 0.0, "lora_ga_config": null, "megatron_config": null, "megatron_core": "megatron.core",
    "modules_to_save": null, "monteclora_config": null, "peft_type": "LORA", "peft_version": "0.21.0",
    "qalora_group_size": 16, "r": 8, "rank_pattern": {"down_proj": 4}, "revision": null,
    "target_modules": ["down_proj", "up_proj", "o_proj", "v_proj", "gate_proj", "q_proj", "k_proj"],
    "target_parameters": null, "task_type": "CAUSAL_LM", "trainable_token_indices": null, "use_bdlora": null,
    "use_dora": false, "use_qalora": false, "use_rslora": false, "velora_config": null})");
  for (int t = 0; t < kNumLoraTargets; ++t) EXPECT_TRUE(Targets(c, 1, t)) << LoraTargetName(t);
  EXPECT_EQ(c.RankFor(0, kLoraDown), 4);
  EXPECT_EQ(c.RankFor(0, kLoraUp), 8);
  EXPECT_DOUBLE_EQ(c.ScaleFor(0, kLoraV, 8), 0.5);
  EXPECT_DOUBLE_EQ(c.ScaleFor(0, kLoraDown, 4), 4.0);
}

TEST(LoraConfigTest, AllLinearAndRegexForms) {
  LoraConfig all = Parse(R"({"r": 4, "lora_alpha": 8, "target_modules": "all-linear"})");
  for (int t = 0; t < kNumLoraTargets; ++t) EXPECT_TRUE(Targets(all, 2, t)) << LoraTargetName(t);
  LoraConfig re = Parse(R"({"r": 4, "lora_alpha": 8, "target_modules": ".*\\.(q|v)_proj"})");
  EXPECT_TRUE(Targets(re, 1, kLoraQ));
  EXPECT_TRUE(Targets(re, 1, kLoraV));
  EXPECT_FALSE(Targets(re, 1, kLoraK));
  EXPECT_FALSE(Targets(re, 1, kLoraUp));
}

TEST(LoraConfigTest, RsLoraScalesByRootOfRank) {
  LoraConfig c = Parse(R"({"r": 16, "lora_alpha": 8, "use_rslora": true, "target_modules": ["v_proj"]})");
  EXPECT_DOUBLE_EQ(c.ScaleFor(0, kLoraV, 16), 2.0);
}

TEST(LoraConfigTest, RankAndAlphaPatternsOverrideTheDefaultsPerModule) {
  LoraConfig c = Parse(R"({"r": 8, "lora_alpha": 16, "target_modules": ["q_proj", "v_proj"],
                           "rank_pattern": {"v_proj": 4, "model.layers.1.self_attn.q_proj": 2},
                           "alpha_pattern": {"layers.1.self_attn.q_proj": 6}})");
  EXPECT_EQ(c.RankFor(0, kLoraQ), 8);
  EXPECT_EQ(c.RankFor(1, kLoraQ), 2);
  EXPECT_EQ(c.RankFor(3, kLoraV), 4);
  EXPECT_DOUBLE_EQ(c.AlphaFor(0, kLoraQ), 16);
  EXPECT_DOUBLE_EQ(c.AlphaFor(1, kLoraQ), 6);
  EXPECT_DOUBLE_EQ(c.ScaleFor(1, kLoraQ, 2), 3.0);
  // "q_proj" as a pattern must not match "...k_proj" or a longer name ending in it.
  EXPECT_EQ(c.RankFor(1, kLoraK), 8);
}

TEST(LoraConfigTest, LayersToTransformRestrictsTheLayers) {
  LoraConfig c = Parse(R"({"r": 8, "target_modules": ["q_proj"], "layers_to_transform": [0, 2]})");
  EXPECT_TRUE(Targets(c, 0, kLoraQ));
  EXPECT_FALSE(Targets(c, 1, kLoraQ));
  EXPECT_TRUE(Targets(c, 2, kLoraQ));
}

TEST(LoraConfigTest, RefusesWhatItCannotHonour) {
  const std::string base = R"("r": 8, "lora_alpha": 16, "target_modules": ["q_proj"])";
  struct Case {
    std::string extra, needle;
  };
  for (const Case& c : std::vector<Case>{{R"("use_dora": true)", "DoRA"},
                                         {R"("modules_to_save": ["lm_head"])", "modules_to_save"},
                                         {R"("bias": "lora_only")", "bias"},
                                         {R"("fan_in_fan_out": true)", "fan_in_fan_out"},
                                         {R"("peft_type": "IA3")", "LORA"},
                                         {R"("alora_invocation_tokens": [5, 6])", "alora"},
                                         {R"("use_qalora": true)", "use_qalora"}}) {
    absl::Status st = ParseError("{" + base + ", " + c.extra + "}");
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << c.extra;
    EXPECT_NE(st.message().find(c.needle), std::string::npos) << st;
    EXPECT_NE(st.message().find("cfg.json"), std::string::npos) << st;
  }
  absl::Status head = ParseError(R"({"r": 8, "target_modules": ["q_proj", "lm_head"]})");
  EXPECT_NE(head.message().find("lm_head"), std::string::npos) << head;
  EXPECT_FALSE(ParseError(R"({"r": 8, "target_modules": 3})").ok());
  EXPECT_FALSE(ParseError(R"({"r": 0, "target_modules": ["q_proj"]})").ok());
  EXPECT_FALSE(ParseError(R"({"r": 8, "target_modules": "(unclosed"})").ok());
  EXPECT_FALSE(ParseError("not json").ok());
}

}  // namespace
}  // namespace tessera
