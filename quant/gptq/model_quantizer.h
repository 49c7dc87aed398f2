// Quantizes every decoder linear of a Llama model (GPTQ or round-to-nearest) layer by layer:
// layer i is calibrated on the inputs produced by the already-quantized layers before it.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include "absl/status/status.h"
#include "quant/gptq/quantizer.h"
#include "runtime/model/gptq_format.h"

namespace tessera::quant {

struct ModelQuantizeOptions {
  std::string model_dir;
  std::string out_dir;
  std::string method = "gptq";  // gptq | rtn
  QuantizeOptions quant;
  std::string calib_file;  // required by gptq; rtn uses it only to report errors
  int64_t nsamples = 64;   // calibration windows
  int64_t seqlen = 256;    // tokens per window, BOS included
  uint64_t seed = 0;       // picks the windows
  GptqCheckpointFormat format = GptqCheckpointFormat::kGptqV1;
  absl::Status Validate() const;
};

struct LayerProgress {
  int64_t layer = 0, num_layers = 0;
  double seconds = 0.0;
  // Relative squared error of the layer's residual update against the unquantized layer on
  // the same input; negative when there was no calibration data.
  double output_error = -1.0;
};

absl::Status QuantizeModel(const ModelQuantizeOptions& options,
                           const std::function<void(const LayerProgress&)>& progress = nullptr);

}  // namespace tessera::quant
