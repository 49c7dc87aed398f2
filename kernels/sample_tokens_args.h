// Argument checks of Backend::SampleTokens, shared by every backend so that they
// reject the same inputs with the same messages.
#pragma once

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "kernels/backend.h"

namespace tessera {

inline absl::Status ValidateSampleTokensArgs(const TensorView& logits, const std::vector<SamplingRow>& rows) {
  if (logits.dtype != DType::kF32) return absl::InvalidArgumentError("sample_tokens: logits must be f32");
  if (logits.cols <= 0) return absl::InvalidArgumentError("sample_tokens: empty vocabulary");
  if (static_cast<int64_t>(rows.size()) > logits.rows)
    return absl::InvalidArgumentError(
        absl::StrCat("sample_tokens: ", rows.size(), " rows of parameters for ", logits.rows, " rows of logits"));
  for (size_t i = 0; i < rows.size(); ++i) {
    const SamplingRow& r = rows[i];
    if (!(r.temperature >= 0.0f) || !(r.top_p > 0.0f && r.top_p <= 1.0f) || !(r.min_p >= 0.0f && r.min_p <= 1.0f))
      return absl::InvalidArgumentError(absl::StrCat("sample_tokens: row ", i, " has invalid parameters"));
  }
  return absl::OkStatus();
}

}  // namespace tessera
