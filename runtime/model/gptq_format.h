// The AutoGPTQ/GPTQModel checkpoint format: quantize_config.json and the bit packing of
// qweight (along input features) and qzeros (along output features). See quant/gptq/FORMAT.md.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace tessera {

// "gptq" (AutoGPTQ v1) stores zero - 1 in qzeros; "gptq_v2" (GPTQModel) the zero itself.
enum class GptqCheckpointFormat { kGptqV1, kGptqV2 };

struct GptqConfig {
  int bits = 4;
  int group_size = 128;  // -1: one group over all input features (per-channel)
  bool desc_act = false;
  bool sym = true;
  bool true_sequential = true;
  double damp_percent = 0.01;
  GptqCheckpointFormat format = GptqCheckpointFormat::kGptqV1;

  absl::Status Validate() const;
  static absl::StatusOr<GptqConfig> FromJsonText(const std::string& text, const std::string& origin);
  // quantize_config.json as AutoGPTQ writes it (the same object goes into config.json's
  // "quantization_config").
  std::string ToJson() const;
  // DIR/quantize_config.json, else config.json's "quantization_config" when its quant_method
  // is "gptq"; nullopt when the directory holds no GPTQ checkpoint.
  static absl::StatusOr<std::optional<GptqConfig>> FromModelDir(const std::string& dir);
  // The group size of a linear with `in_features` inputs (resolves -1).
  int64_t EffectiveGroupSize(int64_t in_features) const { return group_size == -1 ? in_features : group_size; }
};

// int32 words needed for n fields of `bits` bits laid end to end: ceil(n * bits / 32).
inline int64_t GptqPackedWords(int64_t n, int bits) { return (n * bits + 31) / 32; }

// Field `index` of a little-endian bit stream of `bits`-wide fields over the words
// words[0], words[stride], words[2 * stride], ... A field may straddle two words (3 bits).
inline uint32_t GptqReadField(const int32_t* words, int64_t stride, int64_t index, int bits) {
  const int64_t bit = index * bits;
  const int64_t w = bit / 32;
  const int shift = static_cast<int>(bit % 32);
  uint64_t v = static_cast<uint32_t>(words[w * stride]) >> shift;
  if (shift + bits > 32) v |= static_cast<uint64_t>(static_cast<uint32_t>(words[(w + 1) * stride])) << (32 - shift);
  return static_cast<uint32_t>(v) & ((1u << bits) - 1u);
}

// ORs `value` into field `index` (the words start zeroed).
inline void GptqWriteField(int32_t* words, int64_t stride, int64_t index, int bits, uint32_t value) {
  const int64_t bit = index * bits;
  const int64_t w = bit / 32;
  const int shift = static_cast<int>(bit % 32);
  value &= (1u << bits) - 1u;
  words[w * stride] = static_cast<int32_t>(static_cast<uint32_t>(words[w * stride]) | (value << shift));
  if (shift + bits > 32)
    words[(w + 1) * stride] =
        static_cast<int32_t>(static_cast<uint32_t>(words[(w + 1) * stride]) | (value >> (32 - shift)));
}

// values [rows, cols] -> [GptqPackedWords(rows), cols], packed down each column (qweight).
std::vector<int32_t> GptqPackRows(const std::vector<uint32_t>& values, int64_t rows, int64_t cols, int bits);
std::vector<uint32_t> GptqUnpackRows(const int32_t* packed, int64_t rows, int64_t cols, int bits);
// values [rows, cols] -> [rows, GptqPackedWords(cols)], packed along each row (qzeros).
std::vector<int32_t> GptqPackCols(const std::vector<uint32_t>& values, int64_t rows, int64_t cols, int bits);
std::vector<uint32_t> GptqUnpackCols(const int32_t* packed, int64_t rows, int64_t cols, int bits);

}  // namespace tessera
