// DriftMonitor: non-blocking intake, background aggregation, snapshots and persistence.
#include "runtime/drift/drift_monitor.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "runtime/common/status_macros.h"

namespace tessera::drift {

absl::Status DriftMonitorOptions::Validate() const {
  if (reference_size < 1) return absl::InvalidArgumentError("drift reference_size must be >= 1");
  if (live_size < 1) return absl::InvalidArgumentError("drift live_size must be >= 1");
  if (!(live_seconds >= 0) || std::isinf(live_seconds)) {
    return absl::InvalidArgumentError("drift live_seconds must be finite and >= 0");
  }
  if (num_bins < 2 || num_bins > 1000) {
    return absl::InvalidArgumentError("drift num_bins must be in [2, 1000]");
  }
  if (queue_capacity < 1 || queue_capacity > (size_t{1} << 24)) {
    return absl::InvalidArgumentError("drift queue_capacity must be in [1, 2^24]");
  }
  if (!(psi_epsilon > 0 && psi_epsilon < 0.1)) {
    return absl::InvalidArgumentError("drift psi_epsilon must be in (0, 0.1)");
  }
  if (!(kl_alpha > 0) || std::isinf(kl_alpha)) {
    return absl::InvalidArgumentError("drift kl_alpha must be finite and > 0");
  }
  return absl::OkStatus();
}

DriftMonitor::DriftMonitor(DriftMonitorOptions options)
    : options_(std::move(options)),
      tracker_options_{options_.reference_size, options_.live_size,
                       absl::Seconds(options_.live_seconds), options_.num_bins},
      store_(options_.drift_dir),
      queue_(options_.queue_capacity) {}

absl::StatusOr<std::unique_ptr<DriftMonitor>> DriftMonitor::Create(DriftMonitorOptions options) {
  RETURN_IF_ERROR(options.Validate());
  std::unique_ptr<DriftMonitor> m(new DriftMonitor(std::move(options)));
  RETURN_IF_ERROR(m->store_.Init());
  RETURN_IF_ERROR(m->LoadBaselines());
  if (m->options_.start_worker) m->Start();
  return m;
}

absl::Status DriftMonitor::LoadBaselines() {
  ASSIGN_OR_RETURN(std::vector<BaselineData> all, store_.LoadAll());
  absl::MutexLock lock(&mu_);
  for (BaselineData& data : all) {
    Key key{data.model, data.adapter};
    absl::StatusOr<std::shared_ptr<const Baseline>> b =
        Baseline::Create(std::move(data), options_.num_bins);
    if (!b.ok()) {
      return absl::DataLossError(
          absl::StrCat(store_.PathFor(key.first, key.second), ": ", b.status().message()));
    }
    auto tracker = std::make_unique<ModelTracker>(key.first, key.second, tracker_options_);
    tracker->Install(*std::move(b));
    trackers_[std::move(key)] = std::move(tracker);
  }
  return absl::OkStatus();
}

DriftMonitor::~DriftMonitor() {
  if (!worker_.joinable()) return;
  stopping_.store(true, std::memory_order_release);
  wake_.fetch_add(1, std::memory_order_release);
  wake_.notify_one();
  worker_.join();
}

void DriftMonitor::Start() {
  if (worker_.joinable()) return;
  worker_ = std::thread([this] { Run(); });
}

absl::Time DriftMonitor::Now() const { return options_.clock ? options_.clock() : absl::Now(); }

bool DriftMonitor::Observe(RequestFeatures features) {
  observed_.fetch_add(1, std::memory_order_relaxed);
  if (features.observed_at == absl::InfinitePast()) features.observed_at = Now();
  if (!queue_.TryPush(std::move(features))) {
    dropped_.fetch_add(1, std::memory_order_relaxed);
    return false;
  }
  accepted_.fetch_add(1, std::memory_order_release);
  wake_.fetch_add(1, std::memory_order_release);
  wake_.notify_one();
  return true;
}

void DriftMonitor::Run() {
  RequestFeatures f;
  for (;;) {
    // Read the wake counter before draining: a push that lands after the drain has bumped
    // it, so the wait below returns at once instead of missing that push.
    const uint32_t seen = wake_.load(std::memory_order_acquire);
    while (queue_.TryPop(f)) {
      Process(f);
      processed_.fetch_add(1, std::memory_order_release);
      processed_.notify_all();
    }
    if (stopping_.load(std::memory_order_acquire)) return;
    wake_.wait(seen, std::memory_order_acquire);
  }
}

absl::Status DriftMonitor::WaitIdle() {
  if (!worker_.joinable()) {
    return absl::FailedPreconditionError("the drift worker has not been started");
  }
  const int64_t target = accepted_.load(std::memory_order_acquire);
  for (int64_t p = processed_.load(std::memory_order_acquire); p < target;
       p = processed_.load(std::memory_order_acquire)) {
    processed_.wait(p, std::memory_order_acquire);
  }
  return absl::OkStatus();
}

void DriftMonitor::Process(const RequestFeatures& f) {
  for (double v : f.NumericValues()) {
    if (!std::isfinite(v)) {
      rejected_.fetch_add(1, std::memory_order_relaxed);
      return;
    }
  }
  absl::MutexLock lock(&mu_);
  std::unique_ptr<ModelTracker>& tracker = trackers_[Key{f.model, f.adapter}];
  if (!tracker) tracker = std::make_unique<ModelTracker>(f.model, f.adapter, tracker_options_);
  if (std::shared_ptr<const Baseline> completed = tracker->Add(f)) Persist(*completed);
}

void DriftMonitor::Persist(const Baseline& b) {
  // Written under the lock so that a concurrent Reset cannot be overtaken by a stale file;
  // the file is small and only the worker and admin calls take this lock.
  if (absl::Status s = store_.Save(b.data()); !s.ok()) {
    ++persist_errors_;
    last_persist_error_ = std::string(s.message());
  }
}

absl::Status DriftMonitor::CaptureBaseline(std::string_view model, std::string_view adapter,
                                           CaptureMode mode) {
  absl::MutexLock lock(&mu_);
  Key key{std::string(model), std::string(adapter)};
  auto it = trackers_.find(key);
  if (mode == CaptureMode::kNextRequests) {
    if (it == trackers_.end()) {
      // A new tracker captures from its first request already.
      trackers_[key] = std::make_unique<ModelTracker>(key.first, key.second, tracker_options_);
    } else {
      it->second->StartCapture();
    }
    return absl::OkStatus();
  }
  if (it == trackers_.end()) {
    return absl::FailedPreconditionError(absl::StrCat("no live requests for model '",
                                                      std::string(model), "' adapter '",
                                                      std::string(adapter), "'"));
  }
  ASSIGN_OR_RETURN(std::shared_ptr<const Baseline> b, it->second->PromoteLive(Now()));
  return store_.Save(b->data());
}

absl::Status DriftMonitor::InstallBaseline(BaselineData data) {
  ASSIGN_OR_RETURN(std::shared_ptr<const Baseline> b,
                   Baseline::Create(std::move(data), options_.num_bins));
  absl::MutexLock lock(&mu_);
  const BaselineData& d = b->data();
  std::unique_ptr<ModelTracker>& tracker = trackers_[Key{d.model, d.adapter}];
  if (!tracker) tracker = std::make_unique<ModelTracker>(d.model, d.adapter, tracker_options_);
  tracker->Install(b);
  return store_.Save(d);
}

absl::Status DriftMonitor::Reset(std::string_view model, std::string_view adapter) {
  absl::MutexLock lock(&mu_);
  auto it = trackers_.find(Key{std::string(model), std::string(adapter)});
  if (it != trackers_.end()) it->second->Reset();
  return store_.Remove(model, adapter);
}

DriftSnapshot DriftMonitor::Snapshot() {
  DriftSnapshot snap;
  std::vector<TrackerView> views;
  const absl::Time now = Now();
  {
    absl::MutexLock lock(&mu_);
    for (auto& [key, tracker] : trackers_) {
      if (tracker_options_.live_age > absl::ZeroDuration()) {
        tracker->EvictOlderThan(now - tracker_options_.live_age);
      }
      views.push_back(tracker->View());
    }
    snap.persist_errors = persist_errors_;
  }
  snap.observed = observed_.load(std::memory_order_relaxed);
  snap.dropped = dropped_.load(std::memory_order_relaxed);
  snap.rejected = rejected_.load(std::memory_order_relaxed);
  snap.processed = processed_.load(std::memory_order_relaxed);
  for (const TrackerView& v : views) {
    snap.models.push_back(ComputeDrift(v, options_.psi_epsilon, options_.kl_alpha));
  }
  return snap;
}

std::string DriftMonitor::ToJson() {
  const DriftSnapshot snap = Snapshot();
  auto number = [](double v) { return std::isfinite(v) ? nlohmann::json(v) : nlohmann::json(); };
  nlohmann::json models = nlohmann::json::array();
  for (const ModelDrift& m : snap.models) {
    nlohmann::json features = nlohmann::json::object();
    for (const FeatureDrift& f : m.features) {
      features[f.feature] = {{"ks", number(f.ks)},
                             {"ks_pvalue", number(f.ks_pvalue)},
                             {"psi", number(f.psi)},
                             {"kl", number(f.kl)},
                             {"reference_count", f.reference_count},
                             {"live_count", f.live_count}};
    }
    models.push_back({{"model", m.model},
                      {"adapter", m.adapter},
                      {"has_baseline", m.has_baseline},
                      {"capturing", m.capturing},
                      {"capture_progress", m.capture_progress},
                      {"reference_count", m.reference_count},
                      {"live_count", m.live_count},
                      {"features", std::move(features)}});
  }
  std::string last_error;
  {
    absl::MutexLock lock(&mu_);
    last_error = last_persist_error_;
  }
  nlohmann::json doc = {{"observed", snap.observed},
                        {"dropped", snap.dropped},
                        {"rejected", snap.rejected},
                        {"processed", snap.processed},
                        {"persist_errors", snap.persist_errors},
                        {"last_persist_error", last_error},
                        {"models", std::move(models)}};
  return doc.dump();
}

}  // namespace tessera::drift
