#include "runtime/model/gptq_format.h"

#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "runtime/common/status_macros.h"

namespace tessera {
namespace {

using json = nlohmann::json;

absl::Status Bad(const std::string& origin, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat(origin, ": ", what));
}

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open"));
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

absl::StatusOr<GptqConfig> FromJsonObject(const json& j, const std::string& origin) {
  if (!j.is_object()) return Bad(origin, "GPTQ config is not a JSON object");
  GptqConfig c;
  if (j.contains("quant_method") && j["quant_method"].is_string() && j["quant_method"] != "gptq")
    return Bad(origin, absl::StrCat("quant_method '", j["quant_method"].get<std::string>(), "' is not gptq"));
  if (!j.contains("bits") || !j["bits"].is_number_integer()) return Bad(origin, "'bits' must be an integer");
  c.bits = j["bits"].get<int>();
  if (j.contains("group_size")) {
    if (!j["group_size"].is_number_integer()) return Bad(origin, "'group_size' must be an integer");
    c.group_size = j["group_size"].get<int>();
  }
  for (auto [key, field] : {std::pair{"desc_act", &c.desc_act}, std::pair{"sym", &c.sym},
                            std::pair{"true_sequential", &c.true_sequential}}) {
    if (!j.contains(key) || j[key].is_null()) continue;
    if (!j[key].is_boolean()) return Bad(origin, absl::StrCat("'", key, "' must be true or false"));
    *field = j[key].get<bool>();
  }
  if (j.contains("damp_percent") && j["damp_percent"].is_number()) c.damp_percent = j["damp_percent"].get<double>();
  if (j.contains("checkpoint_format") && !j["checkpoint_format"].is_null()) {
    const json& f = j["checkpoint_format"];
    if (f == "gptq") c.format = GptqCheckpointFormat::kGptqV1;
    else if (f == "gptq_v2") c.format = GptqCheckpointFormat::kGptqV2;
    else return Bad(origin, absl::StrCat("checkpoint_format ", f.dump(), " is not supported (gptq or gptq_v2)"));
  }
  absl::Status st = c.Validate();
  if (!st.ok()) return Bad(origin, std::string(st.message()));
  return c;
}

}  // namespace

absl::Status GptqConfig::Validate() const {
  if (bits != 2 && bits != 3 && bits != 4 && bits != 8)
    return absl::InvalidArgumentError(absl::StrCat("bits ", bits, " is not supported (2, 3, 4 or 8)"));
  if (group_size != -1 && group_size <= 0)
    return absl::InvalidArgumentError(absl::StrCat("group_size ", group_size, " must be positive or -1"));
  if (damp_percent < 0) return absl::InvalidArgumentError("damp_percent must not be negative");
  return absl::OkStatus();
}

absl::StatusOr<GptqConfig> GptqConfig::FromJsonText(const std::string& text, const std::string& origin) {
  json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return Bad(origin, "not valid JSON");
  return FromJsonObject(j, origin);
}

std::string GptqConfig::ToJson() const {
  json j = {{"bits", bits},
            {"group_size", group_size},
            {"damp_percent", damp_percent},
            {"desc_act", desc_act},
            {"static_groups", false},
            {"sym", sym},
            {"true_sequential", true_sequential},
            {"model_name_or_path", nullptr},
            {"model_file_base_name", "model"},
            {"quant_method", "gptq"},
            {"checkpoint_format", format == GptqCheckpointFormat::kGptqV1 ? "gptq" : "gptq_v2"}};
  return j.dump(2);
}

absl::StatusOr<std::optional<GptqConfig>> GptqConfig::FromModelDir(const std::string& dir) {
  namespace fs = std::filesystem;
  const std::string qpath = (fs::path(dir) / "quantize_config.json").string();
  if (fs::exists(qpath)) {
    ASSIGN_OR_RETURN(std::string text, ReadFile(qpath));
    ASSIGN_OR_RETURN(GptqConfig c, FromJsonText(text, qpath));
    return std::optional<GptqConfig>(c);
  }
  const std::string cpath = (fs::path(dir) / "config.json").string();
  if (!fs::exists(cpath)) return std::optional<GptqConfig>();
  ASSIGN_OR_RETURN(std::string text, ReadFile(cpath));
  json j = json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object() || !j.contains("quantization_config")) return std::optional<GptqConfig>();
  const json& q = j["quantization_config"];
  if (!q.is_object() || !q.contains("quant_method") || q["quant_method"] != "gptq") return std::optional<GptqConfig>();
  ASSIGN_OR_RETURN(GptqConfig c, FromJsonObject(q, cpath + " quantization_config"));
  return std::optional<GptqConfig>(c);
}

std::vector<int32_t> GptqPackRows(const std::vector<uint32_t>& values, int64_t rows, int64_t cols, int bits) {
  std::vector<int32_t> packed(static_cast<size_t>(GptqPackedWords(rows, bits) * cols), 0);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) GptqWriteField(packed.data() + c, cols, r, bits, values[r * cols + c]);
  return packed;
}

std::vector<uint32_t> GptqUnpackRows(const int32_t* packed, int64_t rows, int64_t cols, int bits) {
  std::vector<uint32_t> values(static_cast<size_t>(rows * cols));
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) values[r * cols + c] = GptqReadField(packed + c, cols, r, bits);
  return values;
}

std::vector<int32_t> GptqPackCols(const std::vector<uint32_t>& values, int64_t rows, int64_t cols, int bits) {
  const int64_t words = GptqPackedWords(cols, bits);
  std::vector<int32_t> packed(static_cast<size_t>(rows * words), 0);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) GptqWriteField(packed.data() + r * words, 1, c, bits, values[r * cols + c]);
  return packed;
}

std::vector<uint32_t> GptqUnpackCols(const int32_t* packed, int64_t rows, int64_t cols, int bits) {
  const int64_t words = GptqPackedWords(cols, bits);
  std::vector<uint32_t> values(static_cast<size_t>(rows * cols));
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) values[r * cols + c] = GptqReadField(packed + r * words, 1, c, bits);
  return values;
}

}  // namespace tessera
