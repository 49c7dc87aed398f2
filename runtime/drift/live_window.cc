// Live sliding window with incrementally maintained histograms.
#include "runtime/drift/live_window.h"

#include <algorithm>

#include "runtime/drift/stats.h"

namespace tessera::drift {

LiveWindow::LiveWindow(size_t capacity, absl::Duration max_age)
    : ring_(std::max<size_t>(capacity, 1)), max_age_(max_age) {}

void LiveWindow::SetEdges(const std::array<std::vector<double>, kNumNumericFeatures>& edges) {
  edges_ = edges;
  has_edges_ = true;
  for (int f = 0; f < kNumNumericFeatures; ++f) bins_[f] = RecountBins(f);
}

void LiveWindow::Account(const Sample& s, int sign) {
  if (has_edges_) {
    for (int f = 0; f < kNumNumericFeatures; ++f) bins_[f][BinOf(edges_[f], s.numeric[f])] += sign;
  }
  if (s.finish_reason >= static_cast<int32_t>(finish_.size()))
    finish_.resize(s.finish_reason + 1, 0);
  finish_[s.finish_reason] += sign;
  for (int b = 0; b < kNumTokenBuckets; ++b)
    buckets_[b] += sign * static_cast<int64_t>(s.token_buckets[b]);
}

void LiveWindow::PopFront() {
  Account(ring_[head_], -1);
  head_ = (head_ + 1) % ring_.size();
  --size_;
}

void LiveWindow::Push(const Sample& s) {
  if (max_age_ > absl::ZeroDuration()) EvictOlderThan(s.at - max_age_);
  if (size_ == ring_.size()) PopFront();
  ring_[(head_ + size_) % ring_.size()] = s;
  ++size_;
  Account(s, +1);
}

void LiveWindow::EvictOlderThan(absl::Time cutoff) {
  while (size_ > 0 && ring_[head_].at <= cutoff) PopFront();
}

void LiveWindow::Clear() {
  head_ = size_ = 0;
  for (auto& b : bins_) std::fill(b.begin(), b.end(), 0);
  finish_.clear();
  buckets_.fill(0);
}

std::vector<double> LiveWindow::Values(int feature) const {
  std::vector<double> v(size_);
  for (size_t i = 0; i < size_; ++i) v[i] = at(i).numeric[feature];
  return v;
}

std::vector<Sample> LiveWindow::Samples() const {
  std::vector<Sample> v(size_);
  for (size_t i = 0; i < size_; ++i) v[i] = at(i);
  return v;
}

std::vector<int64_t> LiveWindow::RecountBins(int feature) const {
  if (!has_edges_) return {};
  return BinCounts(edges_[feature], Values(feature));
}

}  // namespace tessera::drift
