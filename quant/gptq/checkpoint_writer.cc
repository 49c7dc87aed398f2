#include "quant/gptq/checkpoint_writer.h"

#include <deque>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "runtime/common/status_macros.h"
#include "runtime/model/safetensors.h"
#include "runtime/model/weights.h"

namespace tessera::quant {
namespace {

namespace fs = std::filesystem;

absl::Status WriteText(const fs::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::trunc);
  out << text << "\n";
  out.flush();
  if (!out) return absl::DataLossError(absl::StrCat(path.string(), ": write failed"));
  return absl::OkStatus();
}

}  // namespace

absl::Status WriteGptqCheckpoint(const std::string& src_dir, const std::string& out_dir, const GptqConfig& config,
                                 const std::map<std::string, QuantizedLinear>& linears) {
  RETURN_IF_ERROR(config.Validate());
  ASSIGN_OR_RETURN(auto store, WeightStore::Open(src_dir));
  std::error_code ec;
  fs::create_directories(out_dir, ec);
  if (ec) return absl::PermissionDeniedError(absl::StrCat(out_dir, ": cannot create: ", ec.message()));

  std::deque<std::vector<char>> buffers;  // keeps every tensor's bytes alive until written
  std::vector<TensorToWrite> tensors;
  auto add = [&](const std::string& name, DType dtype, std::vector<int64_t> shape, std::vector<char> bytes) {
    buffers.push_back(std::move(bytes));
    tensors.push_back({name, dtype, std::move(shape), buffers.back().data(), buffers.back().size()});
  };
  auto bytes_of = [](const auto& v) {
    std::vector<char> b(v.size() * sizeof(v[0]));
    std::memcpy(b.data(), v.data(), b.size());
    return b;
  };

  for (const std::string& name : store->Names()) {
    if (absl::EndsWith(name, ".weight") && linears.count(name.substr(0, name.size() - 7))) continue;
    ASSIGN_OR_RETURN(const TensorInfo* t, store->Get(name));
    if (t->dtype == DType::kF32 || t->dtype == DType::kBF16 || t->dtype == DType::kF16) {
      std::vector<float> f(static_cast<size_t>(t->numel()));
      ConvertToF32(t->data, t->dtype, f.data(), f.size());
      std::vector<char> half(f.size() * 2);
      ConvertFromF32(f.data(), DType::kF16, half.data(), f.size());
      add(name, DType::kF16, t->shape, std::move(half));
    } else {
      std::vector<char> raw(t->nbytes);
      std::memcpy(raw.data(), t->data, t->nbytes);
      add(name, t->dtype, t->shape, std::move(raw));
    }
  }
  for (const auto& [prefix, q] : linears) {
    if (!store->Contains(prefix + ".weight"))
      return absl::InvalidArgumentError(absl::StrCat(src_dir, ": no tensor '", prefix, ".weight' to replace"));
    if (q.bits != config.bits)
      return absl::InvalidArgumentError(absl::StrCat(prefix, ": quantized to ", q.bits, " bits, config says ", config.bits));
    const int64_t in = q.in_features, out = q.out_features, groups = q.num_groups();
    std::vector<uint32_t> stored = q.zeros;
    if (config.format == GptqCheckpointFormat::kGptqV1) {
      for (uint32_t& z : stored) {
        if (z == 0) return absl::InternalError(absl::StrCat(prefix, ": zero point 0 cannot be stored in the gptq (v1) format"));
        z -= 1;
      }
    }
    add(prefix + ".qweight", DType::kI32, {GptqPackedWords(in, q.bits), out}, bytes_of(GptqPackRows(q.q, in, out, q.bits)));
    add(prefix + ".qzeros", DType::kI32, {groups, GptqPackedWords(out, q.bits)},
        bytes_of(GptqPackCols(stored, groups, out, q.bits)));
    add(prefix + ".scales", DType::kF16, {groups, out}, bytes_of(q.scales));
    add(prefix + ".g_idx", DType::kI32, {in}, bytes_of(q.g_idx));
  }
  RETURN_IF_ERROR(WriteSafetensors((fs::path(out_dir) / "model.safetensors").string(), tensors, {{"format", "pt"}}));

  RETURN_IF_ERROR(WriteText(fs::path(out_dir) / "quantize_config.json", config.ToJson()));
  std::ifstream cin(fs::path(src_dir) / "config.json");
  std::stringstream ss;
  ss << cin.rdbuf();
  nlohmann::json cj = nlohmann::json::parse(ss.str(), nullptr, false);
  if (cj.is_discarded() || !cj.is_object()) return absl::InvalidArgumentError(absl::StrCat(src_dir, "/config.json: not a JSON object"));
  cj["quantization_config"] = nlohmann::json::parse(config.ToJson());
  cj["torch_dtype"] = "float16";
  RETURN_IF_ERROR(WriteText(fs::path(out_dir) / "config.json", cj.dump(2)));
  for (const char* f : {"tokenizer.model", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                        "generation_config.json"}) {
    const fs::path src = fs::path(src_dir) / f;
    if (!fs::exists(src)) continue;
    fs::copy_file(src, fs::path(out_dir) / f, fs::copy_options::overwrite_existing, ec);
    if (ec) return absl::PermissionDeniedError(absl::StrCat("cannot copy ", src.string(), ": ", ec.message()));
  }
  return absl::OkStatus();
}

}  // namespace tessera::quant
