// tessera-make-random-model: writes a Llama model with random weights in the real
// Hugging Face layout (config.json + safetensors, sharded when large), for speed tests of
// shapes that cannot be shipped (Llama-2-7B, TinyLlama-1.1B).
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "runtime/common/dtype.h"
#include "runtime/common/thread_pool.h"
#include "runtime/model/safetensors.h"
#include "server/cli/args.h"

namespace {

using tessera::DType;
namespace fs = std::filesystem;

struct Shape {
  int64_t hidden, inter, layers, heads, kv_heads, vocab, max_pos;
  double rope_theta;
  bool tie;
};

const std::map<std::string, Shape>& Shapes() {
  static const std::map<std::string, Shape> shapes = {
      {"llama2-7b", {4096, 11008, 32, 32, 32, 32000, 4096, 10000.0, false}},
      {"tinyllama", {2048, 5632, 22, 32, 4, 32000, 2048, 10000.0, false}},
      {"llama3-8b", {4096, 14336, 32, 32, 8, 128256, 8192, 500000.0, false}},
      {"tiny-test", {256, 688, 2, 8, 2, 32000, 1024, 10000.0, false}},
  };
  return shapes;
}

// Fills n values ~ N(0, std) (Irwin–Hall approximation from a fast generator) in `dtype`.
void FillRandom(std::vector<char>& buf, int64_t n, DType dtype, float stddev, uint64_t seed, float constant, bool use_constant) {
  const size_t es = tessera::DTypeSize(dtype);
  buf.resize(static_cast<size_t>(n) * es);
  tessera::ThreadPool::Default().ParallelFor(n, [&](int64_t b, int64_t e) {
    uint64_t s = seed * 0x9E3779B97F4A7C15ull + static_cast<uint64_t>(b) * 0xBF58476D1CE4E5B9ull + 1;
    std::vector<float> tmp(4096);
    for (int64_t i = b; i < e; i += 4096) {
      const int64_t m = std::min<int64_t>(4096, e - i);
      for (int64_t j = 0; j < m; ++j) {
        if (use_constant) {
          tmp[j] = constant;
          continue;
        }
        float acc = 0.0f;
        for (int r = 0; r < 4; ++r) {
          s ^= s << 13;
          s ^= s >> 7;
          s ^= s << 17;
          acc += static_cast<float>(s >> 40) * (1.0f / 16777216.0f);
        }
        tmp[j] = (acc - 2.0f) * 1.7320508f * stddev;  // 4 uniforms: variance 1/3
      }
      tessera::ConvertFromF32(tmp.data(), dtype, buf.data() + i * es, m);
    }
  });
}

int Usage(const std::string& msg) {
  std::fprintf(stderr,
               "tessera-make-random-model: %s\n"
               "usage: tessera-make-random-model --shape llama2-7b|tinyllama|llama3-8b|tiny-test --out DIR\n"
               "       [--dtype bfloat16|float16|float32] [--seed S] [--layers N] [--tokenizer FILE]\n"
               "       [--shard-bytes B] [--std 0.02]\n",
               msg.c_str());
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  auto parsed = tessera::cli::Args::Parse(std::vector<std::string>(argv + 1, argv + argc),
                                          {"shape", "out", "dtype", "seed", "layers", "tokenizer", "shard-bytes", "std"}, {});
  if (!parsed.ok()) return Usage(std::string(parsed.status().message()));
  const auto& args = *parsed;
  auto it = Shapes().find(args.GetOr("shape", ""));
  if (it == Shapes().end() || !args.Has("out")) return Usage("--shape (known) and --out are required");
  Shape sh = it->second;
  if (args.Has("layers")) sh.layers = *args.GetInt("layers", sh.layers);
  const std::string dtype_name = args.GetOr("dtype", "bfloat16");
  DType dtype = dtype_name == "float32" ? DType::kF32 : dtype_name == "float16" ? DType::kF16 : DType::kBF16;
  const uint64_t seed = static_cast<uint64_t>(*args.GetInt("seed", 0));
  const int64_t shard_bytes = *args.GetInt("shard-bytes", 4'000'000'000LL);
  const float stddev = static_cast<float>(*args.GetDouble("std", 0.02));
  const fs::path out = *args.Get("out");
  fs::create_directories(out);

  nlohmann::json config = {{"architectures", {"LlamaForCausalLM"}},
                           {"model_type", "llama"},
                           {"hidden_size", sh.hidden},
                           {"intermediate_size", sh.inter},
                           {"num_hidden_layers", sh.layers},
                           {"num_attention_heads", sh.heads},
                           {"num_key_value_heads", sh.kv_heads},
                           {"head_dim", sh.hidden / sh.heads},
                           {"vocab_size", sh.vocab},
                           {"max_position_embeddings", sh.max_pos},
                           {"rms_norm_eps", 1e-5},
                           {"rope_theta", sh.rope_theta},
                           {"hidden_act", "silu"},
                           {"tie_word_embeddings", sh.tie},
                           {"bos_token_id", 1},
                           {"eos_token_id", 2},
                           {"torch_dtype", dtype_name}};
  std::ofstream(out / "config.json") << config.dump(2) << "\n";
  if (args.Has("tokenizer")) {
    fs::copy_file(*args.Get("tokenizer"), out / "tokenizer.model", fs::copy_options::overwrite_existing);
  }

  struct Spec {
    std::string name;
    std::vector<int64_t> shape;
    bool ones;
  };
  std::vector<Spec> specs;
  const int64_t D = sh.hidden / sh.heads;
  specs.push_back({"model.embed_tokens.weight", {sh.vocab, sh.hidden}, false});
  for (int64_t l = 0; l < sh.layers; ++l) {
    const std::string p = absl::StrCat("model.layers.", l, ".");
    specs.push_back({p + "input_layernorm.weight", {sh.hidden}, true});
    specs.push_back({p + "post_attention_layernorm.weight", {sh.hidden}, true});
    specs.push_back({p + "self_attn.q_proj.weight", {sh.heads * D, sh.hidden}, false});
    specs.push_back({p + "self_attn.k_proj.weight", {sh.kv_heads * D, sh.hidden}, false});
    specs.push_back({p + "self_attn.v_proj.weight", {sh.kv_heads * D, sh.hidden}, false});
    specs.push_back({p + "self_attn.o_proj.weight", {sh.hidden, sh.heads * D}, false});
    specs.push_back({p + "mlp.gate_proj.weight", {sh.inter, sh.hidden}, false});
    specs.push_back({p + "mlp.up_proj.weight", {sh.inter, sh.hidden}, false});
    specs.push_back({p + "mlp.down_proj.weight", {sh.hidden, sh.inter}, false});
  }
  specs.push_back({"model.norm.weight", {sh.hidden}, true});
  if (!sh.tie) specs.push_back({"lm_head.weight", {sh.vocab, sh.hidden}, false});

  // Group tensors into shards of at most shard_bytes (one shard: model.safetensors).
  std::vector<std::vector<size_t>> shards(1);
  int64_t current = 0;
  for (size_t i = 0; i < specs.size(); ++i) {
    int64_t n = 1;
    for (int64_t d : specs[i].shape) n *= d;
    const int64_t bytes = n * static_cast<int64_t>(tessera::DTypeSize(dtype));
    if (current > 0 && current + bytes > shard_bytes) {
      shards.emplace_back();
      current = 0;
    }
    shards.back().push_back(i);
    current += bytes;
  }
  nlohmann::json index;
  int64_t total = 0;
  for (size_t s = 0; s < shards.size(); ++s) {
    const std::string file = shards.size() == 1 ? "model.safetensors"
                                                : absl::StrCat("model-", absl::Dec(s + 1, absl::kZeroPad5), "-of-",
                                                               absl::Dec(shards.size(), absl::kZeroPad5), ".safetensors");
    std::vector<std::vector<char>> buffers(shards[s].size());
    std::vector<tessera::TensorToWrite> tensors;
    for (size_t k = 0; k < shards[s].size(); ++k) {
      const Spec& sp = specs[shards[s][k]];
      int64_t n = 1;
      for (int64_t d : sp.shape) n *= d;
      FillRandom(buffers[k], n, dtype, stddev, seed * 100003 + shards[s][k], 1.0f, sp.ones);
      tensors.push_back({sp.name, dtype, sp.shape, buffers[k].data(), buffers[k].size()});
      index["weight_map"][sp.name] = file;
      total += static_cast<int64_t>(buffers[k].size());
    }
    absl::Status st = tessera::WriteSafetensors((out / file).string(), tensors, {{"format", "pt"}});
    if (!st.ok()) {
      std::fprintf(stderr, "tessera-make-random-model: %s\n", std::string(st.message()).c_str());
      return 1;
    }
    std::fprintf(stderr, "wrote %s (%zu tensors)\n", (out / file).c_str(), tensors.size());
  }
  if (shards.size() > 1) {
    index["metadata"]["total_size"] = total;
    std::ofstream(out / "model.safetensors.index.json") << index.dump(2) << "\n";
  }
  std::fprintf(stderr, "%s: %s shape, %.2f GB of %s weights\n", out.c_str(), it->first.c_str(), total / 1e9,
               dtype_name.c_str());
  return 0;
}
