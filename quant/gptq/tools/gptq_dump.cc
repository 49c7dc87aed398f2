// tessera-gptq-dump: dequantizes every GPTQ linear of a checkpoint the way tessera loads it
// (loader + CPU reference kernel, act-order permutation undone) and writes the dense f32
// weights [out, in] as <prefix>.weight to a safetensors file, for interop checks.
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/cpu/cpu_backend.h"
#include "runtime/common/status_macros.h"
#include "runtime/model/config.h"
#include "runtime/model/gptq_loader.h"
#include "runtime/model/safetensors.h"

namespace tessera {
namespace {

absl::Status Dump(const std::string& dir, const std::string& out_path) {
  ASSIGN_OR_RETURN(ModelConfig c, ModelConfig::FromFile(dir + "/config.json"));
  ASSIGN_OR_RETURN(std::optional<GptqConfig> gptq, GptqConfig::FromModelDir(dir));
  if (!gptq) return absl::InvalidArgumentError(absl::StrCat(dir, ": not a GPTQ checkpoint (no quantize_config.json)"));
  ASSIGN_OR_RETURN(auto store, WeightStore::Open(dir));
  const int64_t H = c.hidden_size, F = c.intermediate_size;
  const int64_t qdim = c.num_attention_heads * c.head_dim, kvdim = c.num_key_value_heads * c.head_dim;
  const std::tuple<const char*, int64_t, int64_t> linears[] = {
      {"self_attn.q_proj", H, qdim}, {"self_attn.k_proj", H, kvdim}, {"self_attn.v_proj", H, kvdim},
      {"self_attn.o_proj", qdim, H}, {"mlp.gate_proj", H, F},        {"mlp.up_proj", H, F},
      {"mlp.down_proj", F, H}};
  std::vector<std::vector<float>> dense;
  std::vector<TensorToWrite> tensors;
  dense.reserve(c.num_hidden_layers * 7);
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    for (const auto& [name, in, out] : linears) {
      const std::string prefix = absl::StrCat("model.layers.", l, ".", name);
      ASSIGN_OR_RETURN(GptqHostWeight w, LoadGptqLinear(*store, prefix, in, out, *gptq));
      std::vector<float> reordered(static_cast<size_t>(in * out));
      CpuDequantizeGptq(w.View(), reordered.data());
      std::vector<float> original(reordered.size());
      for (int64_t o = 0; o < out; ++o)
        for (int64_t j = 0; j < in; ++j)
          original[o * in + (w.perm.empty() ? j : w.perm[j])] = reordered[o * in + j];
      dense.push_back(std::move(original));
      tensors.push_back({prefix + ".weight", DType::kF32, {out, in}, dense.back().data(), dense.back().size() * 4});
    }
  }
  return WriteSafetensors(out_path, tensors);
}

}  // namespace
}  // namespace tessera

int main(int argc, char** argv) {
  std::string model, out;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if ((a == "--model" || a == "--out") && i + 1 < argc) {
      (a == "--model" ? model : out) = argv[++i];
    } else {
      std::fprintf(stderr, "usage: tessera-gptq-dump --model DIR --out FILE.safetensors\n");
      return 2;
    }
  }
  if (model.empty() || out.empty()) {
    std::fprintf(stderr, "usage: tessera-gptq-dump --model DIR --out FILE.safetensors\n");
    return 2;
  }
  absl::Status st = tessera::Dump(model, out);
  if (!st.ok()) {
    std::fprintf(stderr, "tessera-gptq-dump: %s\n", std::string(st.message()).c_str());
    return 1;
  }
  return 0;
}
