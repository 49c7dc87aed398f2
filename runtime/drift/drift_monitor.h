// DriftMonitor: compares a reference window with live traffic per (model, adapter).
// Observe() is called from the engine's step loop and never blocks: it pushes into a bounded
// lock-free queue (counting a drop when full) that a background thread drains into the
// per-model windows. Baselines persist as JSON in drift_dir and are reloaded at start.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "runtime/drift/baseline_store.h"
#include "runtime/drift/bounded_queue.h"
#include "runtime/drift/features.h"
#include "runtime/drift/model_tracker.h"

namespace tessera::drift {

struct DriftMonitorOptions {
  int64_t reference_size = 1000;      // requests per reference window
  int64_t live_size = 1000;           // the live window holds at most this many requests...
  double live_seconds = 0;            // ...and, when > 0, only those of the last live_seconds
  int num_bins = 10;                  // reference-quantile bins per numeric feature
  size_t queue_capacity = 4096;       // rounded up to a power of two
  std::string drift_dir;              // empty: baselines live in memory only
  double psi_epsilon = 1e-4;          // floor for empty-bin proportions in PSI
  double kl_alpha = 0.5;              // additive smoothing for KL (0.5: Krichevsky-Trofimov)
  std::function<absl::Time()> clock;  // defaults to absl::Now; tests inject a fake one
  // false leaves the queue undrained until Start(), e.g. to fill it deterministically.
  bool start_worker = true;

  absl::Status Validate() const;
};

enum class CaptureMode {
  kNextRequests,  // the next reference_size requests become the reference (the current
                  // baseline stays in use until they have arrived)
  kPromoteLive,   // the current live window becomes the reference at once
};

struct DriftSnapshot {
  int64_t observed = 0;            // Observe() calls
  int64_t dropped = 0;             // refused because the queue was full
  int64_t rejected = 0;            // non-finite features, not counted in any window
  int64_t processed = 0;           // taken off the queue
  int64_t persist_errors = 0;      // baselines that could not be written
  std::vector<ModelDrift> models;  // ordered by (model, adapter)
};

class DriftMonitor {
 public:
  // Loads every baseline in options.drift_dir (a malformed file is an error naming it).
  static absl::StatusOr<std::unique_ptr<DriftMonitor>> Create(DriftMonitorOptions options);
  ~DriftMonitor();  // drains the queue, then stops the worker
  DriftMonitor(const DriftMonitor&) = delete;
  DriftMonitor& operator=(const DriftMonitor&) = delete;

  // Never blocks. Returns false (and counts a drop) when the queue is full.
  bool Observe(RequestFeatures features);

  // Starts the worker when options.start_worker was false; no-op otherwise.
  void Start();
  // Returns once every accepted observation has been applied to the windows.
  absl::Status WaitIdle();

  absl::Status CaptureBaseline(std::string_view model, std::string_view adapter, CaptureMode mode);
  // Adopts a baseline given as data, e.g. a file in BaselineToJson's format uploaded through
  // the admin API, and persists it; any capture in progress for its model ends.
  absl::Status InstallBaseline(BaselineData data);
  // Forgets the baseline (also on disk) and the live window; the next reference_size
  // requests become the new reference.
  absl::Status Reset(std::string_view model, std::string_view adapter);

  // Evicts live requests older than live_seconds, then computes every statistic. The state
  // is copied under the lock; sorting and KS run after it is released.
  DriftSnapshot Snapshot();
  // The snapshot for the admin API; undefined statistics are null.
  std::string ToJson();

 private:
  using Key = std::pair<std::string, std::string>;

  explicit DriftMonitor(DriftMonitorOptions options);
  absl::Status LoadBaselines();
  void Run();
  void Process(const RequestFeatures& f);
  void Persist(const Baseline& b) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Time Now() const;

  const DriftMonitorOptions options_;
  const TrackerOptions tracker_options_;
  const BaselineStore store_;
  BoundedQueue<RequestFeatures> queue_;

  std::atomic<int64_t> observed_{0};
  std::atomic<int64_t> dropped_{0};
  std::atomic<int64_t> accepted_{0};
  std::atomic<int64_t> rejected_{0};
  std::atomic<int64_t> processed_{0};
  std::atomic<uint32_t> wake_{0};  // bumped after each push; the worker waits on it
  std::atomic<bool> stopping_{false};
  std::thread worker_;

  absl::Mutex mu_;
  std::map<Key, std::unique_ptr<ModelTracker>> trackers_ ABSL_GUARDED_BY(mu_);
  int64_t persist_errors_ ABSL_GUARDED_BY(mu_) = 0;
  std::string last_persist_error_ ABSL_GUARDED_BY(mu_);
};

}  // namespace tessera::drift
