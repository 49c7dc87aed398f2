// Reference windows: validation and quantile binning.
#include "runtime/drift/baseline.h"

#include <algorithm>
#include <cmath>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace tessera::drift {

absl::StatusOr<std::shared_ptr<const Baseline>> Baseline::Create(BaselineData data, int num_bins) {
  if (data.count <= 0) return absl::InvalidArgumentError("a baseline needs at least one request");
  if (num_bins < 2) return absl::InvalidArgumentError("a baseline needs at least two bins");
  for (int f = 0; f < kNumNumericFeatures; ++f) {
    std::vector<double>& v = data.values[f];
    if (static_cast<int64_t>(v.size()) != data.count) {
      return absl::InvalidArgumentError(
          absl::StrCat("baseline feature ", std::string(NumericFeatureName(f)), " has ", v.size(),
                       " values for ", data.count, " requests"));
    }
    if (std::any_of(v.begin(), v.end(), [](double x) { return !std::isfinite(x); })) {
      return absl::InvalidArgumentError(absl::StrCat(
          "baseline feature ", std::string(NumericFeatureName(f)), " has a non-finite value"));
    }
    std::sort(v.begin(), v.end());
  }
  std::shared_ptr<Baseline> b(new Baseline());
  for (int f = 0; f < kNumNumericFeatures; ++f) {
    b->edges_[f] = QuantileEdges(data.values[f], num_bins);
    b->bin_counts_[f] = BinCounts(b->edges_[f], data.values[f]);
  }
  b->data_ = std::move(data);
  return std::shared_ptr<const Baseline>(std::move(b));
}

}  // namespace tessera::drift
