// LiveWindow: eviction by count and by age, and incremental histograms that always equal a
// recount from scratch.
#include "runtime/drift/live_window.h"

#include <random>

#include "gtest/gtest.h"

namespace tessera::drift {
namespace {

const absl::Time kT0 = absl::FromUnixSeconds(1700000000);

Sample MakeSample(absl::Time at, double value, int32_t finish = 0) {
  Sample s;
  s.at = at;
  s.numeric.fill(value);
  s.finish_reason = finish;
  s.token_buckets[static_cast<int>(value) % kNumTokenBuckets] = 2;
  return s;
}

TEST(LiveWindow, EvictsOldestByCount) {
  LiveWindow w(3, absl::ZeroDuration());
  for (int i = 1; i <= 5; ++i) w.Push(MakeSample(kT0, i, i % 2));
  EXPECT_EQ(w.size(), 3u);
  EXPECT_EQ(w.Values(kPromptLength), (std::vector<double>{3, 4, 5}));
  // Finish reasons of 3, 4, 5: ids 1, 0, 1.
  EXPECT_EQ(w.finish_reason_counts(), (std::vector<int64_t>{1, 2}));
  EXPECT_EQ(w.token_bucket_counts()[1], 0);  // value 1 left the window
  EXPECT_EQ(w.token_bucket_counts()[5], 2);
}

TEST(LiveWindow, EvictsByAgeOnPushAndOnRequest) {
  LiveWindow w(100, absl::Seconds(60));
  w.Push(MakeSample(kT0, 1));
  w.Push(MakeSample(kT0 + absl::Seconds(30), 2));
  w.Push(MakeSample(kT0 + absl::Seconds(61), 3));  // pushes the t=0 request out
  EXPECT_EQ(w.Values(kOutputLength), (std::vector<double>{2, 3}));
  w.EvictOlderThan(kT0 + absl::Seconds(100) - absl::Seconds(60));
  EXPECT_EQ(w.Values(kOutputLength), (std::vector<double>{3}));
}

TEST(LiveWindow, SetEdgesRebinsTheCurrentWindow) {
  LiveWindow w(10, absl::ZeroDuration());
  for (double v : {0.5, 1.5, 1.5, 3.0}) w.Push(MakeSample(kT0, v));
  std::array<std::vector<double>, kNumNumericFeatures> edges;
  edges.fill({1.0, 2.0});
  w.SetEdges(edges);
  EXPECT_EQ(w.bin_counts(kMeanEntropy), (std::vector<int64_t>{1, 2, 1}));
  w.Push(MakeSample(kT0, 2.0));
  EXPECT_EQ(w.bin_counts(kMeanEntropy), (std::vector<int64_t>{1, 3, 1}));
}

TEST(LiveWindow, IncrementalHistogramsEqualRecountFromScratch) {
  std::mt19937 rng(7);
  std::normal_distribution<double> value(0.0, 3.0);
  std::uniform_int_distribution<int> finish(0, 4);
  std::uniform_int_distribution<int> step_seconds(0, 5);
  LiveWindow w(50, absl::Seconds(40));
  std::array<std::vector<double>, kNumNumericFeatures> edges;
  for (int f = 0; f < kNumNumericFeatures; ++f) edges[f] = {-2.0 - f, -0.5, 0.0, 1.0 + f, 4.0};
  absl::Time now = kT0;
  for (int i = 0; i < 2000; ++i) {
    if (i == 300) w.SetEdges(edges);  // bins arrive mid-stream, as when a capture completes
    now += absl::Seconds(step_seconds(rng));
    Sample s = MakeSample(now, 0, finish(rng));
    for (double& v : s.numeric) v = value(rng);
    for (auto& b : s.token_buckets) b = static_cast<uint32_t>(finish(rng));
    w.Push(s);
    if (i % 97 == 0) w.EvictOlderThan(now - absl::Seconds(10));
    if (!w.has_edges()) continue;
    for (int f = 0; f < kNumNumericFeatures; ++f) {
      ASSERT_EQ(w.bin_counts(f), w.RecountBins(f)) << "step " << i << " feature " << f;
    }
    std::array<int64_t, kNumTokenBuckets> buckets{};
    std::vector<int64_t> finishes(w.finish_reason_counts().size(), 0);
    for (const Sample& x : w.Samples()) {
      for (int b = 0; b < kNumTokenBuckets; ++b) buckets[b] += x.token_buckets[b];
      ++finishes[x.finish_reason];
    }
    ASSERT_EQ(w.token_bucket_counts(), buckets) << "step " << i;
    ASSERT_EQ(w.finish_reason_counts(), finishes) << "step " << i;
  }
  EXPECT_GT(w.size(), 0u);
}

}  // namespace
}  // namespace tessera::drift
