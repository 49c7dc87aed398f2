// Writes a quantized Llama model as an AutoGPTQ-layout checkpoint directory (FORMAT.md):
// packed linears, 16-bit everything else, quantize_config.json, config.json, tokenizer.
#pragma once

#include <map>
#include <string>

#include "absl/status/status.h"
#include "quant/gptq/quantizer.h"
#include "runtime/model/gptq_format.h"

namespace tessera::quant {

// `linears` maps a checkpoint prefix ("model.layers.0.self_attn.q_proj") to its quantized
// weight; the source's "<prefix>.weight" is replaced by qweight/qzeros/scales/g_idx and
// every other float tensor is written as fp16.
absl::Status WriteGptqCheckpoint(const std::string& src_dir, const std::string& out_dir, const GptqConfig& config,
                                 const std::map<std::string, QuantizedLinear>& linears);

}  // namespace tessera::quant
