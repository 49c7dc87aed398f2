// Reading PEFT adapters: the conversion (A as written, scale folded into Bᵀ), the tensor
// name variants PEFT writes, and clear refusals of everything that does not fit.
#include "runtime/lora/lora_adapter.h"

#include <filesystem>
#include <fstream>

#include "gtest/gtest.h"
#include "tests/lora/lora_test_util.h"
#include "tests/testing/paths.h"

namespace tessera {
namespace {

namespace fs = std::filesystem;

class LoraAdapterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto c = ModelConfig::FromFile(testing::DefaultModelDir() + "/config.json");
    ASSERT_TRUE(c.ok()) << c.status();
    model_ = *c;
    dir_ = testing::MakeTempDir("adapter");
  }
  void TearDown() override { fs::remove_all(dir_); }
  absl::StatusOr<std::unique_ptr<LoraAdapter>> Load(int max_rank = 64) {
    LoraLoadOptions o;
    o.max_lora_rank = max_rank;
    return LoraAdapter::Load(dir_, model_, o);
  }
  // Expects Load to fail with a message containing every needle.
  void ExpectError(const std::vector<std::string>& needles, int max_rank = 64) {
    auto a = Load(max_rank);
    ASSERT_FALSE(a.ok());
    for (const std::string& n : needles) EXPECT_NE(a.status().message().find(n), std::string::npos) << a.status();
  }

  ModelConfig model_;
  std::string dir_;
};

TEST_F(LoraAdapterTest, KeepsAAndFoldsTheScaleIntoBTransposed) {
  testing::RandomAdapterSpec spec;
  spec.rank = 4;
  spec.alpha = 12;
  spec.targets = {"q_proj", "down_proj"};
  auto ra = testing::MakeRandomAdapter(model_, spec);
  testing::WritePeftAdapter(dir_, ra.config_json, ra.tensors);
  auto a = Load();
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ((*a)->max_rank(), 4);
  EXPECT_EQ((*a)->module(0, kLoraK).rank, 0);
  EXPECT_EQ((*a)->config().base_model_name_or_path, "stories260K");
  // Layer 2's down_proj: A [4, F] as written, b_t [4, H] = 3 · Bᵀ.
  const int64_t F = model_.intermediate_size, H = model_.hidden_size;
  const testing::PeftTensor* ta = nullptr;
  const testing::PeftTensor* tb = nullptr;
  for (const auto& t : ra.tensors) {
    if (t.name == "base_model.model.model.layers.2.mlp.down_proj.lora_A.weight") ta = &t;
    if (t.name == "base_model.model.model.layers.2.mlp.down_proj.lora_B.weight") tb = &t;
  }
  ASSERT_TRUE(ta && tb);
  const LoraModuleHost& m = (*a)->module(2, kLoraDown);
  ASSERT_EQ(m.rank, 4);
  const float* af = reinterpret_cast<const float*>(m.a.data());
  const float* bt = reinterpret_cast<const float*>(m.b_t.data());
  for (int64_t i = 0; i < 4 * F; ++i) ASSERT_EQ(af[i], ta->data[i]);
  for (int r = 0; r < 4; ++r)
    for (int64_t o = 0; o < H; ++o) ASSERT_FLOAT_EQ(bt[r * H + o], 3.0f * tb->data[o * 4 + r]);
}

TEST_F(LoraAdapterTest, AcceptsAdapterNameComponentAndMissingWeightSuffix) {
  testing::RandomAdapterSpec spec;
  spec.targets = {"v_proj"};
  auto ra = testing::MakeRandomAdapter(model_, spec);
  for (size_t i = 0; i < ra.tensors.size(); ++i) {
    std::string& n = ra.tensors[i].name;
    const std::string w = ".weight";
    n = n.substr(0, n.size() - w.size());
    if (i % 2 == 0) n += ".default.weight";                         // in-memory PEFT state dict
    if (i % 4 == 1) n = n.substr(std::string("base_model.model.").size());  // prefix stripped
  }
  testing::WritePeftAdapter(dir_, ra.config_json, ra.tensors, DType::kBF16);
  auto a = Load();
  ASSERT_TRUE(a.ok()) << a.status();
  for (int l = 0; l < model_.num_hidden_layers; ++l) EXPECT_EQ((*a)->module(l, kLoraV).rank, 8);
}

TEST_F(LoraAdapterTest, RefusesPickleCheckpoints) {
  testing::RandomAdapterSpec spec;
  auto ra = testing::MakeRandomAdapter(model_, spec);
  fs::create_directories(dir_);
  std::ofstream(dir_ + "/adapter_config.json") << ra.config_json;
  std::ofstream(dir_ + "/adapter_model.bin") << "\x80\x02}q\x00.";
  ExpectError({"adapter_model.bin", "pickle"});
}

TEST_F(LoraAdapterTest, RefusesWrongShapesNamingFileAndTensor) {
  testing::RandomAdapterSpec spec;
  spec.targets = {"k_proj"};
  auto ra = testing::MakeRandomAdapter(model_, spec);
  // B of layer 1 claims a q_proj-sized output.
  for (auto& t : ra.tensors) {
    if (t.name.find("layers.1.self_attn.k_proj.lora_B") != std::string::npos) {
      t.shape[0] = model_.num_attention_heads * model_.head_dim;
      t.data.resize(t.shape[0] * t.shape[1]);
    }
  }
  testing::WritePeftAdapter(dir_, ra.config_json, ra.tensors);
  ExpectError({"adapter_model.safetensors", "layers.1.self_attn.k_proj.lora_B", "shape"});
}

TEST_F(LoraAdapterTest, RefusesRanksAboveTheLimit) {
  testing::RandomAdapterSpec spec;
  spec.rank = 16;
  spec.targets = {"o_proj"};
  auto ra = testing::MakeRandomAdapter(model_, spec);
  testing::WritePeftAdapter(dir_, ra.config_json, ra.tensors);
  ExpectError({"rank 16", "max_lora_rank 8"}, 8);
}

TEST_F(LoraAdapterTest, RefusesRankThatDisagreesWithTheConfig) {
  testing::RandomAdapterSpec spec;
  spec.rank = 4;
  spec.targets = {"o_proj"};
  auto ra = testing::MakeRandomAdapter(model_, spec);
  testing::WritePeftAdapter(dir_, R"({"r": 8, "lora_alpha": 8, "target_modules": ["o_proj"]})", ra.tensors);
  ExpectError({"rank 4", "rank 8"});
}

TEST_F(LoraAdapterTest, RefusesLayersTheModelDoesNotHave) {
  testing::RandomAdapterSpec spec;
  spec.targets = {"up_proj"};
  auto ra = testing::MakeRandomAdapter(model_, spec);
  ra.tensors.push_back(ra.tensors[0]);
  ra.tensors.back().name = "base_model.model.model.layers.5.mlp.up_proj.lora_A.weight";
  testing::WritePeftAdapter(dir_, ra.config_json, ra.tensors);
  ExpectError({"layers.5.mlp.up_proj.lora_A", "layer 5", "5 layers"});
}

TEST_F(LoraAdapterTest, RefusesTensorsForModulesTheConfigDoesNotTarget) {
  testing::RandomAdapterSpec spec;
  spec.targets = {"q_proj", "v_proj"};
  auto ra = testing::MakeRandomAdapter(model_, spec);
  testing::WritePeftAdapter(dir_, R"({"r": 8, "lora_alpha": 8, "target_modules": ["q_proj"]})", ra.tensors);
  ExpectError({"v_proj", "target_modules"});
}

TEST_F(LoraAdapterTest, RefusesMissingMatricesAndForeignTensors) {
  testing::RandomAdapterSpec spec;
  spec.targets = {"gate_proj"};
  auto ra = testing::MakeRandomAdapter(model_, spec);
  auto without_b = ra.tensors;
  without_b.erase(without_b.begin() + 1);  // layer 0's lora_B
  testing::WritePeftAdapter(dir_, ra.config_json, without_b);
  ExpectError({"missing lora_B", "model.layers.0.mlp.gate_proj"});

  auto with_dora = ra.tensors;
  with_dora.push_back({"base_model.model.model.layers.0.mlp.gate_proj.lora_magnitude_vector", {172}, std::vector<float>(172, 1.0f)});
  testing::WritePeftAdapter(dir_, ra.config_json, with_dora);
  ExpectError({"lora_magnitude_vector", "DoRA"});

  auto with_head = ra.tensors;
  with_head.push_back({"base_model.model.lm_head.lora_A.weight", {8, 64}, std::vector<float>(8 * 64, 0.1f)});
  testing::WritePeftAdapter(dir_, ra.config_json, with_head);
  ExpectError({"lm_head.lora_A"});
}

TEST_F(LoraAdapterTest, MissingDirectoryOrConfigIsNotFound) {
  LoraLoadOptions o;
  EXPECT_EQ(LoraAdapter::Load(dir_ + "/nope", model_, o).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(LoraAdapter::Load(dir_, model_, o).status().code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace tessera
