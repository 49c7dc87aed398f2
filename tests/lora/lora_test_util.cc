#include "tests/lora/lora_test_util.h"

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "runtime/model/safetensors.h"

namespace tessera::testing {
namespace {

namespace fs = std::filesystem;

struct Proj {
  const char* name;
  const char* block;
  int64_t in, out;
};

std::vector<Proj> Projections(const ModelConfig& c) {
  const int64_t H = c.hidden_size, F = c.intermediate_size;
  const int64_t q = c.num_attention_heads * c.head_dim, kv = c.num_key_value_heads * c.head_dim;
  return {{"q_proj", "self_attn", H, q},  {"k_proj", "self_attn", H, kv}, {"v_proj", "self_attn", H, kv},
          {"o_proj", "self_attn", q, H},  {"gate_proj", "mlp", H, F},     {"up_proj", "mlp", H, F},
          {"down_proj", "mlp", F, H}};
}

}  // namespace

std::string MakeTempDir(const std::string& prefix) {
  std::string tmpl = ::testing::TempDir() + "/tessera-lora-" + prefix + "-XXXXXX";
  char* made = ::mkdtemp(tmpl.data());
  EXPECT_NE(made, nullptr);
  return tmpl;
}

RandomAdapter MakeRandomAdapter(const ModelConfig& model, const RandomAdapterSpec& spec) {
  RandomAdapter out;
  nlohmann::json cfg = {{"peft_type", "LORA"},
                        {"r", spec.rank},
                        {"lora_alpha", spec.alpha},
                        {"use_rslora", spec.use_rslora},
                        {"target_modules", spec.targets},
                        {"bias", "none"},
                        {"fan_in_fan_out", false},
                        {"use_dora", false},
                        {"modules_to_save", nullptr},
                        {"base_model_name_or_path", "stories260K"},
                        {"task_type", "CAUSAL_LM"}};
  out.config_json = cfg.dump(2);
  const double scale = spec.use_rslora ? spec.alpha / std::sqrt(double(spec.rank)) : spec.alpha / spec.rank;
  std::mt19937 rng(spec.seed);
  const int r = spec.rank;
  for (int64_t l = 0; l < model.num_hidden_layers; ++l) {
    for (const Proj& p : Projections(model)) {
      if (std::find(spec.targets.begin(), spec.targets.end(), p.name) == spec.targets.end()) continue;
      const std::string key = "model.layers." + std::to_string(l) + "." + p.block + "." + p.name;
      std::normal_distribution<float> da(0.0f, 1.0f / std::sqrt(float(p.in)));
      std::normal_distribution<float> db(0.0f, spec.b_std / std::sqrt(float(r)));
      PeftTensor a{"base_model.model." + key + ".lora_A.weight", {r, p.in}, std::vector<float>(r * p.in)};
      PeftTensor b{"base_model.model." + key + ".lora_B.weight", {p.out, r}, std::vector<float>(p.out * r)};
      for (float& v : a.data) v = da(rng);
      for (float& v : b.data) v = db(rng);
      // The values the adapter file will hold (rounded to its dtype), merged in double.
      auto rounded = [&](std::vector<float> v) {
        if (spec.dtype != DType::kF32) {
          std::vector<uint16_t> h(v.size());
          ConvertFromF32(v.data(), spec.dtype, h.data(), v.size());
          ConvertToF32(h.data(), spec.dtype, v.data(), v.size());
        }
        return v;
      };
      const std::vector<float> ar = rounded(a.data), br = rounded(b.data);
      std::vector<double> delta(p.out * p.in, 0.0);
      for (int64_t o = 0; o < p.out; ++o)
        for (int k = 0; k < r; ++k)
          for (int64_t i = 0; i < p.in; ++i) delta[o * p.in + i] += scale * br[o * r + k] * ar[k * p.in + i];
      out.deltas[key] = std::move(delta);
      out.tensors.push_back(std::move(a));
      out.tensors.push_back(std::move(b));
    }
  }
  return out;
}

void WritePeftAdapter(const std::string& dir, const std::string& config_json, const std::vector<PeftTensor>& tensors,
                      DType dtype) {
  fs::create_directories(dir);
  std::ofstream(dir + "/adapter_config.json") << config_json;
  std::vector<std::vector<char>> storage;
  std::vector<TensorToWrite> writes;
  for (const PeftTensor& t : tensors) {
    storage.emplace_back(t.data.size() * DTypeSize(dtype));
    ConvertFromF32(t.data.data(), dtype, storage.back().data(), t.data.size());
  }
  for (size_t i = 0; i < tensors.size(); ++i)
    writes.push_back({tensors[i].name, dtype, tensors[i].shape, storage[i].data(), storage[i].size()});
  auto st = WriteSafetensors(dir + "/adapter_model.safetensors", writes, {{"format", "pt"}});
  ASSERT_TRUE(st.ok()) << st;
}

void WriteMergedModel(const std::string& base_dir, const RandomAdapter& adapter, const std::string& out_dir) {
  fs::create_directories(out_dir);
  for (const auto& entry : fs::directory_iterator(base_dir)) {
    if (entry.path().filename() != "model.safetensors")
      fs::copy_file(entry.path(), fs::path(out_dir) / entry.path().filename(), fs::copy_options::overwrite_existing);
  }
  auto file = SafetensorsFile::Open(base_dir + "/model.safetensors");
  ASSERT_TRUE(file.ok()) << file.status();
  std::vector<std::vector<float>> storage;
  std::vector<TensorToWrite> writes;
  for (const auto& [name, info] : (*file)->tensors()) {
    std::vector<float> w(info.numel());
    ConvertToF32(info.data, info.dtype, w.data(), w.size());
    const std::string suffix = ".weight";
    auto it = adapter.deltas.find(name.substr(0, name.size() - suffix.size()));
    if (it != adapter.deltas.end()) {
      EXPECT_EQ(it->second.size(), w.size()) << name;
      for (size_t i = 0; i < w.size(); ++i) w[i] = static_cast<float>(w[i] + it->second[i]);
    }
    storage.push_back(std::move(w));
    writes.push_back({name, DType::kF32, info.shape, storage.back().data(), storage.back().size() * sizeof(float)});
  }
  auto st = WriteSafetensors(out_dir + "/model.safetensors", writes);
  ASSERT_TRUE(st.ok()) << st;
}

}  // namespace tessera::testing
