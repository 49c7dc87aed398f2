// tessera-make-random-adapter: writes LoRA adapters with random A and B in the PEFT layout
// (adapter_config.json + adapter_model.safetensors, bf16) for a model directory, for speed
// tests of many adapters on shapes whose real adapters cannot be shipped.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "nlohmann/json.hpp"
#include "runtime/common/dtype.h"
#include "runtime/model/config.h"
#include "runtime/model/safetensors.h"
#include "server/cli/args.h"

namespace {

namespace fs = std::filesystem;

struct Proj {
  std::string name, block;
  int64_t in, out;
};

std::vector<Proj> Projections(const tessera::ModelConfig& c) {
  const int64_t H = c.hidden_size, F = c.intermediate_size;
  const int64_t q = c.num_attention_heads * c.head_dim, kv = c.num_key_value_heads * c.head_dim;
  return {{"q_proj", "self_attn", H, q},  {"k_proj", "self_attn", H, kv}, {"v_proj", "self_attn", H, kv},
          {"o_proj", "self_attn", q, H},  {"gate_proj", "mlp", H, F},     {"up_proj", "mlp", H, F},
          {"down_proj", "mlp", F, H}};
}

// n bf16 values uniform in [-bound, bound] from a xorshift stream (fast: a 7B adapter of
// every projection holds 40M values).
std::vector<char> RandomBf16(int64_t n, float bound, uint64_t& state) {
  std::vector<float> f(static_cast<size_t>(n));
  for (float& v : f) {
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    v = (static_cast<float>(state >> 40) * (2.0f / 16777216.0f) - 1.0f) * bound;
  }
  std::vector<char> out(f.size() * 2);
  tessera::ConvertFromF32(f.data(), tessera::DType::kBF16, out.data(), f.size());
  return out;
}

int Usage(const std::string& msg) {
  std::fprintf(stderr,
               "tessera-make-random-adapter: %s\n"
               "usage: tessera-make-random-adapter --model DIR --out DIR [--rank 16] [--alpha 32]\n"
               "       [--targets q_proj,v_proj] [--seed S] [--count N]\n"
               "  --count N writes N adapters OUT/a0 .. OUT/a{N-1} with seeds S .. S+N-1\n",
               msg.c_str());
  return 2;
}

absl::Status WriteAdapter(const tessera::ModelConfig& c, const std::string& model_dir, const fs::path& out, int rank,
                          double alpha, const std::vector<std::string>& targets, uint64_t seed) {
  fs::create_directories(out);
  nlohmann::json cfg = {{"peft_type", "LORA"},
                        {"r", rank},
                        {"lora_alpha", alpha},
                        {"lora_dropout", 0.0},
                        {"use_rslora", false},
                        {"target_modules", targets},
                        {"bias", "none"},
                        {"fan_in_fan_out", false},
                        {"use_dora", false},
                        {"modules_to_save", nullptr},
                        {"base_model_name_or_path", model_dir},
                        {"task_type", "CAUSAL_LM"}};
  std::ofstream(out / "adapter_config.json") << cfg.dump(2) << "\n";
  uint64_t state = seed * 0x9E3779B97F4A7C15ull + 0x2545F4914F6CDD1Dull;
  std::vector<std::vector<char>> buffers;
  std::vector<tessera::TensorToWrite> tensors;
  buffers.reserve(static_cast<size_t>(c.num_hidden_layers) * 14);
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    for (const Proj& p : Projections(c)) {
      if (std::find(targets.begin(), targets.end(), p.name) == targets.end()) continue;
      const std::string key = absl::StrCat("base_model.model.model.layers.", l, ".", p.block, ".", p.name);
      // A like PEFT's Kaiming-uniform init; B small but nonzero so the adapter changes outputs.
      buffers.push_back(RandomBf16(rank * p.in, 1.0f / std::sqrt(static_cast<float>(p.in)), state));
      tensors.push_back({key + ".lora_A.weight", tessera::DType::kBF16, {rank, p.in}, buffers.back().data(),
                         buffers.back().size()});
      buffers.push_back(RandomBf16(p.out * rank, 0.02f, state));
      tensors.push_back({key + ".lora_B.weight", tessera::DType::kBF16, {p.out, rank}, buffers.back().data(),
                         buffers.back().size()});
    }
  }
  return tessera::WriteSafetensors((out / "adapter_model.safetensors").string(), tensors, {{"format", "pt"}});
}

}  // namespace

int main(int argc, char** argv) {
  auto parsed = tessera::cli::Args::Parse(std::vector<std::string>(argv + 1, argv + argc),
                                          {"model", "out", "rank", "alpha", "targets", "seed", "count"}, {});
  if (!parsed.ok()) return Usage(std::string(parsed.status().message()));
  const auto& args = *parsed;
  if (!args.Has("model") || !args.Has("out")) return Usage("--model and --out are required");
  auto rank = args.GetInt("rank", 16);
  auto alpha = args.GetDouble("alpha", 32.0);
  auto seed = args.GetInt("seed", 0);
  auto count = args.GetInt("count", 0);
  if (!rank.ok() || !alpha.ok() || !seed.ok() || !count.ok() || *rank < 1 || *count < 0)
    return Usage("--rank, --alpha, --seed and --count must be numbers (rank >= 1)");
  std::vector<std::string> targets = absl::StrSplit(args.GetOr("targets", "q_proj,v_proj"), ',', absl::SkipEmpty());
  const std::vector<std::string> known = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"};
  for (const std::string& t : targets) {
    if (std::find(known.begin(), known.end(), t) == known.end()) return Usage("unknown target '" + t + "'");
  }
  if (targets.empty()) return Usage("--targets names no projection");
  const std::string model_dir = *args.Get("model");
  auto config = tessera::ModelConfig::FromFile(model_dir + "/config.json");
  if (!config.ok()) {
    std::fprintf(stderr, "tessera-make-random-adapter: %s\n", std::string(config.status().message()).c_str());
    return 1;
  }
  const fs::path out = *args.Get("out");
  const int64_t n = std::max<int64_t>(1, *count);
  for (int64_t i = 0; i < n; ++i) {
    const fs::path dir = *count > 0 ? out / absl::StrCat("a", i) : out;
    absl::Status st = WriteAdapter(*config, model_dir, dir, static_cast<int>(*rank), *alpha, targets,
                                   static_cast<uint64_t>(*seed + i));
    if (!st.ok()) {
      std::fprintf(stderr, "tessera-make-random-adapter: %s\n", std::string(st.message()).c_str());
      return 1;
    }
  }
  std::fprintf(stderr, "wrote %lld adapter(s) of rank %lld on %s under %s\n", static_cast<long long>(n),
               static_cast<long long>(*rank), args.GetOr("targets", "q_proj,v_proj").c_str(), out.c_str());
  return 0;
}
