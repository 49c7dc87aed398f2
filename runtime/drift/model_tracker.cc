// Per-(model, adapter) drift state and the statistics over it.
#include "runtime/drift/model_tracker.h"

#include <algorithm>
#include <numeric>

namespace tessera::drift {

ModelTracker::ModelTracker(std::string model, std::string adapter, const TrackerOptions& options)
    : model_(std::move(model)),
      adapter_(std::move(adapter)),
      options_(options),
      live_(static_cast<size_t>(options.live_size), options.live_age) {}

int32_t ModelTracker::FinishReasonId(const std::string& name) {
  auto [it, inserted] = finish_ids_.try_emplace(name, static_cast<int32_t>(finish_names_.size()));
  if (inserted) finish_names_.push_back(name);
  return it->second;
}

std::shared_ptr<const Baseline> ModelTracker::Add(const RequestFeatures& f) {
  Sample s;
  s.at = f.observed_at;
  s.numeric = f.NumericValues();
  s.finish_reason = FinishReasonId(f.finish_reason);
  s.token_buckets = f.token_buckets;
  live_.Push(s);
  if (!capturing_) return nullptr;
  capture_.push_back(s);
  if (static_cast<int64_t>(capture_.size()) < options_.reference_size) return nullptr;
  std::shared_ptr<const Baseline> b = BuildBaseline(capture_, s.at);
  Install(b);
  return b;
}

std::shared_ptr<const Baseline> ModelTracker::BuildBaseline(const std::vector<Sample>& samples,
                                                            absl::Time created) const {
  BaselineData data;
  data.model = model_;
  data.adapter = adapter_;
  data.created = created;
  data.count = static_cast<int64_t>(samples.size());
  for (auto& v : data.values) v.reserve(samples.size());
  for (const Sample& s : samples) {
    for (int f = 0; f < kNumNumericFeatures; ++f) data.values[f].push_back(s.numeric[f]);
    ++data.finish_reasons[finish_names_[s.finish_reason]];
    for (int b = 0; b < kNumTokenBuckets; ++b) data.token_buckets[b] += s.token_buckets[b];
  }
  // Samples were validated as finite on entry and are non-empty here, so this cannot fail.
  return *Baseline::Create(std::move(data), options_.num_bins);
}

void ModelTracker::StartCapture() {
  capturing_ = true;
  capture_.clear();
}

absl::StatusOr<std::shared_ptr<const Baseline>> ModelTracker::PromoteLive(absl::Time now) {
  if (live_.size() == 0) {
    return absl::FailedPreconditionError("cannot promote an empty live window to a baseline");
  }
  std::shared_ptr<const Baseline> b = BuildBaseline(live_.Samples(), now);
  Install(b);
  return b;
}

void ModelTracker::Install(std::shared_ptr<const Baseline> baseline) {
  baseline_ = std::move(baseline);
  capturing_ = false;
  capture_.clear();
  capture_.shrink_to_fit();
  live_.SetEdges(baseline_->edges());
}

void ModelTracker::Reset() {
  baseline_.reset();
  live_ = LiveWindow(static_cast<size_t>(options_.live_size), options_.live_age);
  StartCapture();
}

TrackerView ModelTracker::View() const {
  TrackerView v;
  v.model = model_;
  v.adapter = adapter_;
  v.baseline = baseline_;
  v.capturing = capturing_;
  v.capture_progress = static_cast<int64_t>(capture_.size());
  v.live_count = static_cast<int64_t>(live_.size());
  for (int f = 0; f < kNumNumericFeatures; ++f) {
    v.live_values[f] = live_.Values(f);
    if (live_.has_edges()) v.live_bins[f] = live_.bin_counts(f);
  }
  const std::vector<int64_t>& finish = live_.finish_reason_counts();
  for (size_t id = 0; id < finish.size(); ++id) {
    if (finish[id] > 0) v.live_finish_reasons[finish_names_[id]] = finish[id];
  }
  v.live_token_buckets = live_.token_bucket_counts();
  return v;
}

namespace {

void FillHistogramStats(std::span<const int64_t> ref, std::span<const int64_t> live,
                        double psi_epsilon, double kl_alpha, FeatureDrift* out) {
  if (absl::StatusOr<double> psi = Psi(ref, live, psi_epsilon); psi.ok()) out->psi = *psi;
  if (absl::StatusOr<double> kl = KlDivergence(live, ref, kl_alpha); kl.ok()) out->kl = *kl;
}

}  // namespace

ModelDrift ComputeDrift(const TrackerView& view, double psi_epsilon, double kl_alpha) {
  ModelDrift m;
  m.model = view.model;
  m.adapter = view.adapter;
  m.has_baseline = view.baseline != nullptr;
  m.capturing = view.capturing;
  m.capture_progress = view.capture_progress;
  m.reference_count = m.has_baseline ? view.baseline->count() : 0;
  m.live_count = view.live_count;
  const bool ready = m.has_baseline && m.live_count > 0;

  for (int f = 0; f < kNumNumericFeatures; ++f) {
    FeatureDrift d;
    d.feature = std::string(NumericFeatureName(f));
    d.numeric = true;
    d.reference_count = m.reference_count;
    d.live_count = m.live_count;
    if (ready) {
      std::vector<double> live = view.live_values[f];
      std::sort(live.begin(), live.end());
      if (absl::StatusOr<KsResult> ks = KsTwoSampleSorted(view.baseline->sorted_values(f), live);
          ks.ok()) {
        d.ks = ks->statistic;
        d.ks_pvalue = ks->pvalue;
      }
      FillHistogramStats(view.baseline->bin_counts(f), view.live_bins[f], psi_epsilon, kl_alpha,
                         &d);
    }
    m.features.push_back(std::move(d));
  }

  FeatureDrift finish;
  finish.feature = std::string(kFinishReasonFeature);
  finish.reference_count = m.reference_count;
  finish.live_count = m.live_count;
  if (ready) {
    AlignedCounts a =
        AlignCategories(view.baseline->data().finish_reasons, view.live_finish_reasons);
    FillHistogramStats(a.reference, a.live, psi_epsilon, kl_alpha, &finish);
  }
  m.features.push_back(std::move(finish));

  FeatureDrift buckets;
  buckets.feature = std::string(kTokenBucketFeature);
  buckets.reference_count = m.reference_count;
  buckets.live_count = m.live_count;
  if (ready) {
    // Empty when no request generated a token; Psi/Kl then report an error and stay NaN.
    FillHistogramStats(view.baseline->data().token_buckets, view.live_token_buckets, psi_epsilon,
                       kl_alpha, &buckets);
  }
  m.features.push_back(std::move(buckets));
  return m;
}

}  // namespace tessera::drift
