// tessera-make-random-model: writes a Llama model with random weights in the real
// Hugging Face layout (config.json + safetensors, sharded when large), for speed tests of
// shapes that cannot be shipped (Llama-2-7B, TinyLlama-1.1B). With --gptq-bits the linears
// are written directly as a random GPTQ checkpoint (AutoGPTQ v1 layout, quantize_config.json),
// with no quantization run; embeddings, norms and the head stay in --dtype.
#include <algorithm>
#include <cmath>
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
#include "runtime/model/gptq_format.h"
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

// Fills n uniformly random 32-bit words (packed GPTQ fields: every level equally likely).
void FillRandomWords(std::vector<char>& buf, int64_t n, uint64_t seed) {
  buf.resize(static_cast<size_t>(n) * 4);
  auto* words = reinterpret_cast<uint32_t*>(buf.data());
  tessera::ThreadPool::Default().ParallelFor(n, [&](int64_t b, int64_t e) {
    uint64_t s = seed * 0x9E3779B97F4A7C15ull + static_cast<uint64_t>(b) * 0xBF58476D1CE4E5B9ull + 1;
    for (int64_t i = b; i < e; ++i) {
      s ^= s << 13;
      s ^= s >> 7;
      s ^= s << 17;
      words[i] = static_cast<uint32_t>(s >> 16);
    }
  });
}

// n copies of one 32-bit or 16-bit pattern.
template <typename T>
void FillConstant(std::vector<char>& buf, int64_t n, T value) {
  buf.resize(static_cast<size_t>(n) * sizeof(T));
  auto* v = reinterpret_cast<T*>(buf.data());
  std::fill(v, v + n, value);
}

int Usage(const std::string& msg) {
  std::fprintf(stderr,
               "tessera-make-random-model: %s\n"
               "usage: tessera-make-random-model --shape llama2-7b|tinyllama|llama3-8b|tiny-test --out DIR\n"
               "       [--dtype bfloat16|float16|float32] [--seed S] [--layers N] [--tokenizer FILE]\n"
               "       [--shard-bytes B] [--std 0.02] [--gptq-bits 4 [--group-size 128]]\n",
               msg.c_str());
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  auto parsed = tessera::cli::Args::Parse(std::vector<std::string>(argv + 1, argv + argc),
                                          {"shape", "out", "dtype", "seed", "layers", "tokenizer", "shard-bytes", "std", "gptq-bits",
                                           "group-size"},
                                          {});
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
  const int gptq_bits = static_cast<int>(*args.GetInt("gptq-bits", 0));
  const int64_t group_size = *args.GetInt("group-size", 128);
  if (gptq_bits != 0 && gptq_bits != 2 && gptq_bits != 4 && gptq_bits != 8) {
    return Usage("--gptq-bits must be 2, 4 or 8");
  }
  if (gptq_bits != 0 && group_size != -1 &&
      (group_size <= 0 || sh.hidden % group_size != 0 || sh.inter % group_size != 0)) {
    return Usage(absl::StrCat("--group-size ", group_size, " must divide hidden size ", sh.hidden,
                              " and intermediate size ", sh.inter, " (or be -1)"));
  }
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
  tessera::GptqConfig gptq;
  if (gptq_bits != 0) {
    // Symmetric v1 ("gptq") checkpoints, as AutoGPTQ writes by default: zero 2^(bits-1),
    // stored minus one.
    gptq.bits = gptq_bits;
    gptq.group_size = static_cast<int>(group_size);
    gptq.format = tessera::GptqCheckpointFormat::kGptqV1;
    std::ofstream(out / "quantize_config.json") << gptq.ToJson() << "\n";
    config["quantization_config"] = nlohmann::json::parse(gptq.ToJson());
  }
  std::ofstream(out / "config.json") << config.dump(2) << "\n";
  if (args.Has("tokenizer")) {
    fs::copy_file(*args.Get("tokenizer"), out / "tokenizer.model", fs::copy_options::overwrite_existing);
  }

  // kNormal: random float, kOnes: 1.0; the rest are a GPTQ linear's tensors.
  enum Kind { kNormal, kOnes, kQweight, kQzeros, kScales, kGidx };
  struct Spec {
    std::string name;
    std::vector<int64_t> shape;
    Kind kind;
    DType dtype;
    int64_t group_size = 0;  // kGidx
  };
  std::vector<Spec> specs;
  const int64_t D = sh.hidden / sh.heads;
  auto linear = [&](const std::string& name, int64_t out_features, int64_t in_features) {
    if (gptq_bits == 0) {
      specs.push_back({name + ".weight", {out_features, in_features}, kNormal, dtype});
      return;
    }
    const int64_t gs = gptq.EffectiveGroupSize(in_features), groups = in_features / gs;
    specs.push_back({name + ".qweight", {tessera::GptqPackedWords(in_features, gptq_bits), out_features}, kQweight,
                     DType::kI32});
    specs.push_back({name + ".qzeros", {groups, tessera::GptqPackedWords(out_features, gptq_bits)}, kQzeros,
                     DType::kI32});
    specs.push_back({name + ".scales", {groups, out_features}, kScales, DType::kF16});
    specs.push_back({name + ".g_idx", {in_features}, kGidx, DType::kI32, gs});
  };
  specs.push_back({"model.embed_tokens.weight", {sh.vocab, sh.hidden}, kNormal, dtype});
  for (int64_t l = 0; l < sh.layers; ++l) {
    const std::string p = absl::StrCat("model.layers.", l, ".");
    specs.push_back({p + "input_layernorm.weight", {sh.hidden}, kOnes, dtype});
    specs.push_back({p + "post_attention_layernorm.weight", {sh.hidden}, kOnes, dtype});
    linear(p + "self_attn.q_proj", sh.heads * D, sh.hidden);
    linear(p + "self_attn.k_proj", sh.kv_heads * D, sh.hidden);
    linear(p + "self_attn.v_proj", sh.kv_heads * D, sh.hidden);
    linear(p + "self_attn.o_proj", sh.hidden, sh.heads * D);
    linear(p + "mlp.gate_proj", sh.inter, sh.hidden);
    linear(p + "mlp.up_proj", sh.inter, sh.hidden);
    linear(p + "mlp.down_proj", sh.hidden, sh.inter);
  }
  specs.push_back({"model.norm.weight", {sh.hidden}, kOnes, dtype});
  if (!sh.tie) specs.push_back({"lm_head.weight", {sh.vocab, sh.hidden}, kNormal, dtype});
  // Uniform levels around the zero have a standard deviation of about 2^bits / sqrt(12):
  // scale so the dequantised weights match --std.
  const float level_std = gptq_bits ? static_cast<float>((1 << gptq_bits) / std::sqrt(12.0)) : 1.0f;
  const uint16_t scale_bits = tessera::F32ToF16(stddev / level_std);
  uint32_t zero_word = 0;  // every field holds zero - 1 = 2^(bits-1) - 1
  for (int f = 0; gptq_bits && f < 32 / gptq_bits; ++f) zero_word |= ((1u << (gptq_bits - 1)) - 1u) << (f * gptq_bits);

  // Group tensors into shards of at most shard_bytes (one shard: model.safetensors).
  std::vector<std::vector<size_t>> shards(1);
  int64_t current = 0;
  for (size_t i = 0; i < specs.size(); ++i) {
    int64_t n = 1;
    for (int64_t d : specs[i].shape) n *= d;
    const int64_t bytes = n * static_cast<int64_t>(tessera::DTypeSize(specs[i].dtype));
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
      const uint64_t tensor_seed = seed * 100003 + shards[s][k];
      switch (sp.kind) {
        case kNormal: case kOnes:
          FillRandom(buffers[k], n, dtype, stddev, tensor_seed, 1.0f, sp.kind == kOnes);
          break;
        case kQweight: FillRandomWords(buffers[k], n, tensor_seed); break;
        case kQzeros: FillConstant<uint32_t>(buffers[k], n, zero_word); break;
        case kScales: FillConstant<uint16_t>(buffers[k], n, scale_bits); break;
        case kGidx:
          buffers[k].resize(static_cast<size_t>(n) * 4);
          for (int64_t i = 0; i < n; ++i) reinterpret_cast<int32_t*>(buffers[k].data())[i] = static_cast<int32_t>(i / sp.group_size);
          break;
      }
      tensors.push_back({sp.name, sp.dtype, sp.shape, buffers[k].data(), buffers[k].size()});
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
  std::fprintf(stderr, "%s: %s shape, %.2f GB of %s weights%s\n", out.c_str(), it->first.c_str(), total / 1e9,
               dtype_name.c_str(), gptq_bits ? absl::StrCat(" (linears GPTQ ", gptq_bits, "-bit, group ", group_size, ")").c_str() : "");
  return 0;
}
