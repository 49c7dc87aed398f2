// A frozen reference window for one (model, adapter): the raw values it was captured from
// (what gets persisted) and, derived from them, sorted values and reference-quantile bins.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "runtime/drift/features.h"
#include "runtime/drift/stats.h"

namespace tessera::drift {

struct BaselineData {
  std::string model;
  std::string adapter;
  absl::Time created = absl::UnixEpoch();
  int64_t count = 0;                                            // requests in the window
  std::array<std::vector<double>, kNumNumericFeatures> values;  // one per request each
  CategoryCounts finish_reasons;
  std::array<int64_t, kNumTokenBuckets> token_buckets{};
};

class Baseline {
 public:
  // Validates the data (count > 0, one finite value per request and feature) and derives the
  // bins; num_bins is the target before equal quantiles merge.
  static absl::StatusOr<std::shared_ptr<const Baseline>> Create(BaselineData data, int num_bins);

  const BaselineData& data() const { return data_; }  // numeric values ascending
  int64_t count() const { return data_.count; }
  std::span<const double> sorted_values(int feature) const { return data_.values[feature]; }
  const std::array<std::vector<double>, kNumNumericFeatures>& edges() const { return edges_; }
  std::span<const int64_t> bin_counts(int feature) const { return bin_counts_[feature]; }

 private:
  Baseline() = default;
  BaselineData data_;
  std::array<std::vector<double>, kNumNumericFeatures> edges_;
  std::array<std::vector<int64_t>, kNumNumericFeatures> bin_counts_;
};

}  // namespace tessera::drift
