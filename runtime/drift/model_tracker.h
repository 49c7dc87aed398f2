// Drift state of one (model, adapter): its baseline, a reference capture in progress, and
// the live window; plus the statistics computed from a copy of that state.
#pragma once

#include <cstdint>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "runtime/drift/baseline.h"
#include "runtime/drift/features.h"
#include "runtime/drift/live_window.h"
#include "runtime/drift/stats.h"

namespace tessera::drift {

struct TrackerOptions {
  int64_t reference_size = 1000;
  int64_t live_size = 1000;
  absl::Duration live_age = absl::ZeroDuration();  // zero: bounded by count only
  int num_bins = 10;
};

inline constexpr double kNoValue = std::numeric_limits<double>::quiet_NaN();

struct FeatureDrift {
  std::string feature;
  bool numeric = false;  // KS is defined for numeric features only
  double ks = kNoValue;  // NaN where not defined or not yet computable
  double ks_pvalue = kNoValue;
  double psi = kNoValue;
  double kl = kNoValue;         // KL(live || reference)
  int64_t reference_count = 0;  // requests
  int64_t live_count = 0;
};

struct ModelDrift {
  std::string model;
  std::string adapter;
  bool has_baseline = false;
  bool capturing = false;        // a new reference is being taken from incoming requests
  int64_t capture_progress = 0;  // requests captured so far
  int64_t reference_count = 0;
  int64_t live_count = 0;
  std::vector<FeatureDrift> features;  // numeric features, then finish reason, token buckets
};

// What the statistics need, copied out so that they are computed without holding a lock.
struct TrackerView {
  std::string model;
  std::string adapter;
  std::shared_ptr<const Baseline> baseline;
  bool capturing = false;
  int64_t capture_progress = 0;
  int64_t live_count = 0;
  std::array<std::vector<double>, kNumNumericFeatures> live_values;
  std::array<std::vector<int64_t>, kNumNumericFeatures> live_bins;  // over the baseline's bins
  CategoryCounts live_finish_reasons;
  std::array<int64_t, kNumTokenBuckets> live_token_buckets{};
};

class ModelTracker {
 public:
  // A tracker starts capturing its reference from the first requests it sees.
  ModelTracker(std::string model, std::string adapter, const TrackerOptions& options);

  // Adds one request to the live window and, while capturing, to the new reference. Returns
  // the baseline this request completes (for the caller to persist), else null.
  std::shared_ptr<const Baseline> Add(const RequestFeatures& f);

  // Takes the next reference_size requests as the new reference; the current baseline stays
  // in use until the capture completes.
  void StartCapture();
  // Makes the current live window the baseline right away; fails when it is empty.
  absl::StatusOr<std::shared_ptr<const Baseline>> PromoteLive(absl::Time now);
  // Adopts a baseline (e.g. loaded from disk) and ends any capture.
  void Install(std::shared_ptr<const Baseline> baseline);
  // Forgets the baseline and the live window and captures a new reference from scratch.
  void Reset();
  void EvictOlderThan(absl::Time cutoff) { live_.EvictOlderThan(cutoff); }

  TrackerView View() const;
  const LiveWindow& live() const { return live_; }
  const std::shared_ptr<const Baseline>& baseline() const { return baseline_; }

 private:
  int32_t FinishReasonId(const std::string& name);
  std::shared_ptr<const Baseline> BuildBaseline(const std::vector<Sample>& samples,
                                                absl::Time created) const;

  std::string model_;
  std::string adapter_;
  TrackerOptions options_;
  std::shared_ptr<const Baseline> baseline_;
  bool capturing_ = true;
  std::vector<Sample> capture_;
  LiveWindow live_;
  std::vector<std::string> finish_names_;
  absl::flat_hash_map<std::string, int32_t> finish_ids_;
};

// KS (numeric only), PSI and KL per feature; NaN statistics until there is a baseline and at
// least one live request.
ModelDrift ComputeDrift(const TrackerView& view, double psi_epsilon, double kl_alpha);

}  // namespace tessera::drift
