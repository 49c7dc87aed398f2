// Model directories: sharded checkpoints, 16-bit weights, and clear errors for missing or
// misshaped tensors.
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "runtime/model/llama_model.h"
#include "runtime/model/weights.h"
#include "tests/testing/paths.h"

namespace tessera {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

class ModelDirTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("tessera_wt_" + std::to_string(::getpid()) + "_" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::create_directories(dir_);
    fs::copy_file(testing::DefaultModelDir() + "/config.json", dir_ / "config.json");
    auto src = SafetensorsFile::Open(testing::DefaultModelDir() + "/model.safetensors");
    ASSERT_TRUE(src.ok());
    source_ = std::move(*src);
    backend_ = std::move(*CreateBackend("cpu"));
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::vector<TensorToWrite> Tensors(const std::function<bool(const std::string&)>& keep) {
    std::vector<TensorToWrite> out;
    for (const auto& [name, t] : source_->tensors()) {
      if (keep(name)) out.push_back({name, t.dtype, t.shape, t.data, t.nbytes});
    }
    return out;
  }

  // Logits of a 3-token prompt through the model in `dir`.
  absl::StatusOr<std::vector<float>> Logits(const std::string& dir, const std::string& dtype = "auto") {
    ModelLoadOptions o;
    o.dtype = dtype;
    auto m = LlamaModel::Load(dir, backend_.get(), o);
    if (!m.ok()) return m.status();
    auto kv = PagedKvStorage::Create(*backend_, (*m)->config(), 4, 16);
    BatchLayout b;
    b.token_ids = {1, 403, 407};
    b.positions = {0, 1, 2};
    b.slot_mapping = {0, 1, 2};
    b.query_start = {0, 3};
    b.context_lens = {3};
    b.block_tables = {0};
    b.max_blocks_per_seq = 1;
    b.logits_rows = {2};
    return (*m)->Forward(b, **kv);
  }

  fs::path dir_;
  std::unique_ptr<SafetensorsFile> source_;
  std::unique_ptr<Backend> backend_;
};

TEST_F(ModelDirTest, ShardedCheckpointGivesTheSameLogitsAsTheSingleFile) {
  auto first = Tensors([](const std::string& n) { return n < "model.layers.3"; });
  auto second = Tensors([](const std::string& n) { return n >= "model.layers.3"; });
  ASSERT_TRUE(WriteSafetensors((dir_ / "model-00001-of-00002.safetensors").string(), first).ok());
  ASSERT_TRUE(WriteSafetensors((dir_ / "model-00002-of-00002.safetensors").string(), second).ok());
  nlohmann::json index;
  for (const auto& t : first) index["weight_map"][t.name] = "model-00001-of-00002.safetensors";
  for (const auto& t : second) index["weight_map"][t.name] = "model-00002-of-00002.safetensors";
  std::ofstream(dir_ / "model.safetensors.index.json") << index.dump();
  auto sharded = Logits(dir_.string());
  ASSERT_TRUE(sharded.ok()) << sharded.status();
  auto single = Logits(testing::DefaultModelDir());
  ASSERT_TRUE(single.ok());
  EXPECT_EQ(*sharded, *single);
}

TEST_F(ModelDirTest, IndexPointingAtAMissingShardIsAnError) {
  std::ofstream(dir_ / "model.safetensors.index.json") << R"({"weight_map":{"model.norm.weight":"gone.safetensors"}})";
  auto m = Logits(dir_.string());
  EXPECT_THAT(m.status().message(), HasSubstr("gone.safetensors"));
}

TEST_F(ModelDirTest, MissingTensorIsNamed) {
  ASSERT_TRUE(WriteSafetensors((dir_ / "model.safetensors").string(),
                               Tensors([](const std::string& n) { return n != "model.layers.2.mlp.up_proj.weight"; }))
                  .ok());
  auto m = Logits(dir_.string());
  EXPECT_EQ(m.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(m.status().message(), HasSubstr("model.layers.2.mlp.up_proj.weight"));
}

TEST_F(ModelDirTest, MisshapedTensorIsNamedWithBothShapes) {
  auto tensors = Tensors([](const std::string&) { return true; });
  for (auto& t : tensors) {
    if (t.name == "model.layers.1.self_attn.k_proj.weight") t.shape = {64, 32};  // transposed
  }
  ASSERT_TRUE(WriteSafetensors((dir_ / "model.safetensors").string(), tensors).ok());
  auto m = Logits(dir_.string());
  EXPECT_THAT(m.status().message(), HasSubstr("k_proj.weight' has shape [64, 32], expected [32, 64]"));
}

TEST_F(ModelDirTest, Bf16AndF16CheckpointsGiveCloseLogits) {
  auto ref = Logits(testing::DefaultModelDir());
  ASSERT_TRUE(ref.ok());
  for (DType dt : {DType::kBF16, DType::kF16}) {
    std::vector<std::vector<uint16_t>> storage;
    std::vector<TensorToWrite> tensors;
    for (const auto& [name, t] : source_->tensors()) {
      std::vector<uint16_t> half(t.numel());
      ConvertFromF32(static_cast<const float*>(t.data), dt, half.data(), half.size());
      storage.push_back(std::move(half));
      tensors.push_back({name, dt, t.shape, storage.back().data(), storage.back().size() * 2});
    }
    ASSERT_TRUE(WriteSafetensors((dir_ / "model.safetensors").string(), tensors).ok());
    auto got = Logits(dir_.string());
    ASSERT_TRUE(got.ok()) << got.status();
    double num = 0, den = 0;
    for (size_t i = 0; i < ref->size(); ++i) {
      num += std::pow((*got)[i] - (*ref)[i], 2);
      den += std::pow((*ref)[i], 2);
    }
    EXPECT_LT(std::sqrt(num / den), dt == DType::kBF16 ? 2e-2 : 2e-3) << DTypeName(dt);
  }
}

TEST_F(ModelDirTest, DtypeFlagConvertsF32WeightsToBf16) {
  auto ref = Logits(testing::DefaultModelDir());
  auto bf = Logits(testing::DefaultModelDir(), "bfloat16");
  ASSERT_TRUE(bf.ok()) << bf.status();
  EXPECT_NE(*bf, *ref);  // really converted
  double num = 0, den = 0;
  for (size_t i = 0; i < ref->size(); ++i) {
    num += std::pow((*bf)[i] - (*ref)[i], 2);
    den += std::pow((*ref)[i], 2);
  }
  EXPECT_LT(std::sqrt(num / den), 2e-2);
}

}  // namespace
}  // namespace tessera
