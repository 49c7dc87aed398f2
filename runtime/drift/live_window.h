// The live sliding window of one (model, adapter): the last N requests, optionally also only
// those of the last T seconds. Histograms over the reference bins are kept up to date as
// requests enter and leave, so each update costs O(bins), never O(window).
//
// KS needs the sorted live values; they are not kept sorted. Values() copies them in arrival
// order and the reader sorts, O(n log n), only when statistics are read.
#pragma once

#include <array>
#include <cstdint>
#include <vector>

#include "absl/time/time.h"
#include "runtime/drift/features.h"

namespace tessera::drift {

// One request as the windows store it; the finish reason is an id from the owner's table.
struct Sample {
  absl::Time at;
  std::array<double, kNumNumericFeatures> numeric{};
  int32_t finish_reason = 0;
  std::array<uint32_t, kNumTokenBuckets> token_buckets{};
};

class LiveWindow {
 public:
  // max_age <= 0 bounds the window by count only.
  LiveWindow(size_t capacity, absl::Duration max_age);

  // Adopts new reference bin edges and recounts the numeric histograms from the window:
  // O(window), paid only when the baseline changes.
  void SetEdges(const std::array<std::vector<double>, kNumNumericFeatures>& edges);

  // Adds a request, evicting the oldest when full and any older than s.at - max_age.
  void Push(const Sample& s);
  // Evicts requests observed at or before `cutoff`.
  void EvictOlderThan(absl::Time cutoff);
  absl::Duration max_age() const { return max_age_; }
  void Clear();

  size_t size() const { return size_; }
  bool has_edges() const { return has_edges_; }
  const std::vector<int64_t>& bin_counts(int feature) const { return bins_[feature]; }
  // Indexed by finish-reason id; ids never seen are absent or zero.
  const std::vector<int64_t>& finish_reason_counts() const { return finish_; }
  const std::array<int64_t, kNumTokenBuckets>& token_bucket_counts() const { return buckets_; }

  std::vector<double> Values(int feature) const;  // arrival order
  std::vector<Sample> Samples() const;            // arrival order
  // The histogram of `feature` counted from scratch; equals bin_counts() by construction.
  std::vector<int64_t> RecountBins(int feature) const;

 private:
  const Sample& at(size_t i) const { return ring_[(head_ + i) % ring_.size()]; }
  void Account(const Sample& s, int sign);
  void PopFront();

  std::vector<Sample> ring_;
  size_t head_ = 0;
  size_t size_ = 0;
  absl::Duration max_age_;
  bool has_edges_ = false;
  std::array<std::vector<double>, kNumNumericFeatures> edges_;
  std::array<std::vector<int64_t>, kNumNumericFeatures> bins_;
  std::vector<int64_t> finish_;
  std::array<int64_t, kNumTokenBuckets> buckets_{};
};

}  // namespace tessera::drift
