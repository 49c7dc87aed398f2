#include "runtime/lora/lora_adapter.h"

#include <filesystem>
#include <map>
#include <regex>

#include "absl/strings/str_cat.h"
#include "runtime/common/status_macros.h"
#include "runtime/model/safetensors.h"
#include "runtime/model/weights.h"

namespace tessera {
namespace {

namespace fs = std::filesystem;

// Names PEFT writes with save_pretrained ("base_model.model.model.layers.3.mlp.up_proj.lora_A.weight"),
// and the variants seen in the wild: no "base_model.model." prefix, an adapter-name component
// (".default"), no ".weight" suffix.
const std::regex& TensorNamePattern() {
  static const std::regex re(
      R"(^(?:base_model\.model\.)?model\.layers\.(\d{1,6})\.(self_attn|mlp)\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)\.lora_(A|B)(?:\.[A-Za-z0-9_\-]+)??(?:\.weight)?$)");
  return re;
}

int TargetIndex(const std::string& name) {
  for (int t = 0; t < kNumLoraTargets; ++t) {
    if (name == LoraTargetName(t)) return t;
  }
  return -1;
}

struct ModuleTensors {
  const TensorInfo* a = nullptr;
  const TensorInfo* b = nullptr;
};

absl::Status RefusePickle(const std::string& dir) {
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    const std::string ext = entry.path().extension().string();
    if (ext == ".bin" || ext == ".pt" || ext == ".pth" || ext == ".pkl" || ext == ".pickle" || ext == ".ckpt") {
      return absl::InvalidArgumentError(absl::StrCat(
          entry.path().string(), " is a pickle checkpoint, which tessera never loads (unpickling can run code); "
                                 "save the adapter with safe_serialization=True to get adapter_model.safetensors"));
    }
  }
  return absl::NotFoundError(absl::StrCat(dir, " has no adapter_model.safetensors"));
}

}  // namespace

int64_t LoraInFeatures(const ModelConfig& m, int target) {
  switch (target) {
    case kLoraO: return m.num_attention_heads * m.head_dim;
    case kLoraDown: return m.intermediate_size;
    default: return m.hidden_size;
  }
}

int64_t LoraOutFeatures(const ModelConfig& m, int target) {
  switch (target) {
    case kLoraQ: return m.num_attention_heads * m.head_dim;
    case kLoraK:
    case kLoraV: return m.num_key_value_heads * m.head_dim;
    case kLoraGate:
    case kLoraUp: return m.intermediate_size;
    default: return m.hidden_size;
  }
}

absl::Status LoraLoadOptions::Validate() const {
  if (max_lora_rank < 1 || max_lora_rank > 1024) return absl::InvalidArgumentError("--max-lora-rank must be in [1, 1024]");
  if (dtype != DType::kF32 && dtype != DType::kF16 && dtype != DType::kBF16)
    return absl::InvalidArgumentError("LoRA matrices must be converted to a float dtype");
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<LoraAdapter>> LoraAdapter::Load(const std::string& dir, const ModelConfig& model,
                                                               const LoraLoadOptions& options) {
  RETURN_IF_ERROR(options.Validate());
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return absl::NotFoundError(absl::StrCat("LoRA adapter directory ", dir, " does not exist"));
  const std::string config_path = dir + "/adapter_config.json";
  const std::string weights_path = dir + "/adapter_model.safetensors";
  ASSIGN_OR_RETURN(LoraConfig config, LoraConfig::FromFile(config_path));
  if (!fs::exists(weights_path, ec)) return RefusePickle(dir);
  ASSIGN_OR_RETURN(auto file, SafetensorsFile::Open(weights_path));

  const int64_t L = model.num_hidden_layers;
  auto fail = [&](const std::string& tensor, const std::string& why) {
    return absl::InvalidArgumentError(absl::StrCat(weights_path, ": tensor '", tensor, "': ", why));
  };
  std::map<std::pair<int64_t, int>, ModuleTensors> found;
  for (const auto& [name, info] : file->tensors()) {
    std::smatch m;
    if (!std::regex_match(name, m, TensorNamePattern())) {
      if (name.find("lora_magnitude_vector") != std::string::npos) return fail(name, "DoRA adapters are not supported");
      if (name.find("lora_embedding") != std::string::npos) return fail(name, "embedding LoRA is not supported");
      return fail(name, "not a LoRA A/B matrix of a Llama projection (q/k/v/o/gate/up/down_proj)");
    }
    const int64_t layer = std::stoll(m[1].str());
    const int target = TargetIndex(m[3].str());
    const bool attn = target <= kLoraO;
    if ((m[2].str() == "self_attn") != attn) return fail(name, "projection under the wrong block");
    if (layer >= L) return fail(name, absl::StrCat("layer ", layer, " does not exist; the base model has ", L, " layers"));
    if (info.dtype != DType::kF32 && info.dtype != DType::kF16 && info.dtype != DType::kBF16)
      return fail(name, absl::StrCat("dtype ", std::string(DTypeName(info.dtype)), " is not a float type"));
    ASSIGN_OR_RETURN(bool targeted, config.Targets(layer, target));
    if (!targeted) return fail(name, "adapts a module that target_modules in adapter_config.json does not name");
    ModuleTensors& mt = found[{layer, target}];
    const TensorInfo*& slot = m[4].str() == "A" ? mt.a : mt.b;
    if (slot != nullptr) return fail(name, absl::StrCat("duplicates '", slot->name, "'"));
    slot = &info;
  }
  if (found.empty()) return absl::InvalidArgumentError(absl::StrCat(weights_path, " holds no LoRA matrices"));

  auto adapter = std::unique_ptr<LoraAdapter>(new LoraAdapter());
  adapter->dir_ = dir;
  adapter->num_layers_ = static_cast<int32_t>(L);
  adapter->dtype_ = options.dtype;
  adapter->modules_.resize(static_cast<size_t>(L) * kNumLoraTargets);
  const size_t es = DTypeSize(options.dtype);
  for (int64_t layer = 0; layer < L; ++layer) {
    for (int target = 0; target < kNumLoraTargets; ++target) {
      ASSIGN_OR_RETURN(bool targeted, config.Targets(layer, target));
      if (!targeted) continue;
      auto it = found.find({layer, target});
      const std::string module = LoraModuleKey(layer, target);
      if (it == found.end() || it->second.a == nullptr || it->second.b == nullptr) {
        return absl::InvalidArgumentError(absl::StrCat(weights_path, ": missing lora_", (it == found.end() || !it->second.a) ? "A" : "B",
                                                       " for ", module, ", which adapter_config.json targets"));
      }
      const TensorInfo& a = *it->second.a;
      const TensorInfo& b = *it->second.b;
      const int64_t in = LoraInFeatures(model, target), out = LoraOutFeatures(model, target);
      if (a.shape.size() != 2 || a.shape[1] != in || a.shape[0] < 1)
        return fail(a.name, absl::StrCat("shape ", ShapeString(a.shape), ", expected [rank, ", in, "]"));
      const int64_t rank = a.shape[0];
      if (b.shape != std::vector<int64_t>{out, rank})
        return fail(b.name, absl::StrCat("shape ", ShapeString(b.shape), ", expected [", out, ", ", rank, "] to match ", a.name));
      if (rank > options.max_lora_rank)
        return fail(a.name, absl::StrCat("rank ", rank, " exceeds max_lora_rank ", options.max_lora_rank));
      const int64_t want = config.RankFor(layer, target);
      if (rank != want)
        return fail(a.name, absl::StrCat("rank ", rank, " differs from the rank ", want, " adapter_config.json gives ", module));
      const double scale = config.ScaleFor(layer, target, rank);
      std::vector<float> af(a.numel()), bf(b.numel()), btf(b.numel());
      ConvertToF32(a.data, a.dtype, af.data(), af.size());
      ConvertToF32(b.data, b.dtype, bf.data(), bf.size());
      for (int64_t o = 0; o < out; ++o) {
        for (int64_t r = 0; r < rank; ++r) btf[r * out + o] = static_cast<float>(scale * bf[o * rank + r]);
      }
      LoraModuleHost& h = adapter->modules_[layer * kNumLoraTargets + target];
      h.rank = static_cast<int32_t>(rank);
      h.a.resize(af.size() * es);
      h.b_t.resize(btf.size() * es);
      ConvertFromF32(af.data(), options.dtype, h.a.data(), af.size());
      ConvertFromF32(btf.data(), options.dtype, h.b_t.data(), btf.size());
      adapter->host_bytes_ += h.a.size() + h.b_t.size();
      adapter->max_rank_ = std::max(adapter->max_rank_, h.rank);
    }
  }
  adapter->config_ = std::move(config);
  return adapter;
}

}  // namespace tessera
