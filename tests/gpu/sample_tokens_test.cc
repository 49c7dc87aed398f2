// Backend::SampleTokens: the CPU reference against distributions computed here from
// first principles, and the CUDA kernel against the CPU reference row by row (the CUDA
// tests skip when no device is visible).
#include <algorithm>
#include <cmath>
#include <map>
#include <numeric>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/backend.h"
#include "kernels/cpu/cpu_backend.h"

namespace tessera {
namespace {

TensorView HostView(std::vector<float>& v, int64_t rows, int64_t cols) { return {v.data(), DType::kF32, rows, cols}; }

std::vector<float> RandomLogits(int64_t n, std::mt19937& rng, float scale) {
  std::normal_distribution<float> d(0.0f, scale);
  std::vector<float> v(n);
  for (float& x : v) x = d(rng);
  return v;
}

// The distribution the cuts should leave, by sorting: top-k, then top-p of the
// renormalised probabilities at temperature t, then min-p.
std::vector<double> ExpectedProbs(const std::vector<float>& l, float t, int k, float top_p, float min_p) {
  const int n = static_cast<int>(l.size());
  std::vector<int> idx(n);
  std::iota(idx.begin(), idx.end(), 0);
  std::sort(idx.begin(), idx.end(), [&](int a, int b) { return l[a] > l[b]; });
  int keep = (k > 0 && k < n) ? k : n;
  std::vector<double> p(n, 0.0);
  double z = 0;
  for (int i = 0; i < keep; ++i) z += std::exp((l[idx[i]] - l[idx[0]]) / t);
  double cum = 0;
  int cut = keep;
  for (int i = 0; i < keep; ++i) {
    cum += std::exp((l[idx[i]] - l[idx[0]]) / t) / z;
    if (cum >= top_p) {
      cut = i + 1;
      break;
    }
  }
  double kept_mass = 0;
  for (int i = 0; i < cut; ++i) {
    const double pi = std::exp((l[idx[i]] - l[idx[0]]) / t);
    if (pi < min_p) break;
    p[idx[i]] = pi;
    kept_mass += pi;
  }
  for (double& x : p) x /= kept_mass;
  return p;
}

struct Case {
  float t;
  int k;
  float top_p, min_p;
};

TEST(SampleTokensCpuTest, GreedyIsTheFirstArgMaxWithItsLogSoftmax) {
  CpuBackend cpu;
  std::vector<float> l = {0.5f, 2.0f, -1.0f, 2.0f, 1.0f};
  std::vector<int32_t> ids;
  std::vector<float> lp;
  ASSERT_TRUE(cpu.SampleTokens(HostView(l, 1, 5), {SamplingRow{}}, &ids, &lp).ok());
  EXPECT_EQ(ids[0], 1);
  double z = 0;
  for (float x : l) z += std::exp(x);
  EXPECT_NEAR(lp[0], 2.0 - std::log(z), 1e-5);
}

TEST(SampleTokensCpuTest, RowStatsAreEntropyAndTopProbabilityOfTheRawSoftmax) {
  CpuBackend cpu;
  std::vector<float> l = {2.0f, 0.5f, -1.0f, 2.0f, 0.0f, /* row 2: uniform */ 3.0f, 3.0f, 3.0f, 3.0f, 3.0f};
  std::vector<int32_t> ids;
  std::vector<float> lp;
  std::vector<RowStats> stats;
  SamplingRow hot;
  hot.temperature = 0.5f;  // temperature and cuts do not change the statistics
  hot.top_k = 2;
  ASSERT_TRUE(cpu.SampleTokens(HostView(l, 2, 5), {hot, SamplingRow{}}, &ids, &lp, &stats).ok());
  ASSERT_EQ(stats.size(), 2u);
  double z = 0, h = 0;
  for (int i = 0; i < 5; ++i) z += std::exp(static_cast<double>(l[i]));
  for (int i = 0; i < 5; ++i) {
    const double p = std::exp(static_cast<double>(l[i])) / z;
    h -= p * std::log(p);
  }
  EXPECT_NEAR(stats[0].entropy, h, 1e-5);
  EXPECT_NEAR(stats[0].top1_prob, std::exp(2.0) / z, 1e-6);
  EXPECT_NEAR(stats[1].entropy, std::log(5.0), 1e-5);
  EXPECT_NEAR(stats[1].top1_prob, 0.2, 1e-6);
}

TEST(SampleTokensCpuTest, DrawFrequenciesFollowTheTruncatedDistribution) {
  CpuBackend cpu;
  std::mt19937 rng(7);
  std::vector<float> l = RandomLogits(12, rng, 1.5f);
  for (const Case& c : {Case{1.0f, 0, 1.0f, 0.0f}, Case{0.7f, 5, 1.0f, 0.0f}, Case{1.3f, 0, 0.8f, 0.0f},
                        Case{1.0f, 0, 1.0f, 0.1f}, Case{0.9f, 8, 0.9f, 0.05f}}) {
    const int draws = 40000;
    std::vector<SamplingRow> rows(draws);
    std::vector<float> many;
    for (int i = 0; i < draws; ++i) {
      rows[i] = {c.t, c.k, c.top_p, c.min_p, 1234, static_cast<uint64_t>(i)};
      many.insert(many.end(), l.begin(), l.end());
    }
    std::vector<int32_t> ids;
    std::vector<float> lp;
    ASSERT_TRUE(cpu.SampleTokens(HostView(many, draws, 12), rows, &ids, &lp).ok());
    std::vector<double> freq(12, 0.0);
    for (int32_t id : ids) freq[id] += 1.0 / draws;
    const std::vector<double> want = ExpectedProbs(l, c.t, c.k, c.top_p, c.min_p);
    double tv = 0;
    for (int i = 0; i < 12; ++i) {
      tv += 0.5 * std::fabs(freq[i] - want[i]);
      if (want[i] == 0.0) EXPECT_EQ(freq[i], 0.0) << "token " << i << " was cut but drawn";
    }
    // 40k draws over 12 outcomes: the sampling noise in total variation is ~0.01.
    EXPECT_LT(tv, 0.02) << "t=" << c.t << " k=" << c.k << " p=" << c.top_p << " min_p=" << c.min_p;
  }
}

TEST(SampleTokensCpuTest, SameSeedAndStepGiveTheSameTokenAndStepsDiffer) {
  CpuBackend cpu;
  std::mt19937 rng(3);
  std::vector<float> l = RandomLogits(1000, rng, 0.5f);
  std::vector<float> two = l;
  two.insert(two.end(), l.begin(), l.end());
  std::vector<int32_t> a, b;
  std::vector<float> lp;
  std::map<int32_t, int> distinct;
  for (uint64_t step = 0; step < 20; ++step) {
    SamplingRow r{1.0f, 0, 1.0f, 0.0f, 99, step};
    ASSERT_TRUE(cpu.SampleTokens(HostView(two, 2, 1000), {r, r}, &a, &lp).ok());
    ASSERT_TRUE(cpu.SampleTokens(HostView(l, 1, 1000), {r}, &b, &lp).ok());
    EXPECT_EQ(a[0], a[1]);
    EXPECT_EQ(a[0], b[0]);
    ++distinct[a[0]];
  }
  EXPECT_GT(distinct.size(), 10u) << "flat logits: 20 steps should rarely repeat a token";
}

TEST(SampleTokensCpuTest, RejectsNonF32LogitsAndBadParameters) {
  CpuBackend cpu;
  std::vector<float> l(8, 0.0f);
  std::vector<int32_t> ids;
  std::vector<float> lp;
  TensorView bf = HostView(l, 1, 8);
  bf.dtype = DType::kBF16;
  EXPECT_FALSE(cpu.SampleTokens(bf, {SamplingRow{}}, &ids, &lp).ok());
  SamplingRow bad;
  bad.top_p = 0.0f;
  EXPECT_FALSE(cpu.SampleTokens(HostView(l, 1, 8), {bad}, &ids, &lp).ok());
  EXPECT_FALSE(cpu.SampleTokens(HostView(l, 1, 8), {SamplingRow{}, SamplingRow{}}, &ids, &lp).ok());
}

TEST(SampleTokensCudaTest, MatchesTheCpuReferenceRowByRow) {
  if (!CudaBackendAvailable()) GTEST_SKIP() << "no CUDA device visible";
  auto gpu = std::move(CreateBackend("cuda")).value();
  CpuBackend cpu;
  std::mt19937 rng(11);
  for (int64_t vocab : {7, 512, 32000, 128256}) {
    const int rows = 48;
    std::vector<float> l = RandomLogits(rows * vocab, rng, 3.0f);
    std::vector<SamplingRow> params(rows);
    const Case cases[] = {{0.0f, 0, 1.0f, 0.0f}, {1.0f, 0, 1.0f, 0.0f}, {0.8f, 50, 1.0f, 0.0f},
                          {1.0f, 0, 0.9f, 0.0f}, {0.6f, 0, 1.0f, 0.05f}, {1.2f, 40, 0.95f, 0.02f}};
    for (int r = 0; r < rows; ++r) {
      const Case& c = cases[r % 6];
      params[r] = {c.t, c.k, c.top_p, c.min_p, static_cast<uint64_t>(r * 7919), static_cast<uint64_t>(r)};
    }
    auto buf = std::move(gpu->Allocate(l.size() * 4)).value();
    ASSERT_TRUE(gpu->CopyToDevice(buf.data(), l.data(), l.size() * 4).ok());
    std::vector<int32_t> want, got;
    std::vector<float> want_lp, got_lp;
    std::vector<RowStats> want_stats, got_stats;
    ASSERT_TRUE(cpu.SampleTokens(HostView(l, rows, vocab), params, &want, &want_lp, &want_stats).ok());
    ASSERT_TRUE(gpu->SampleTokens(buf.View(DType::kF32, rows, vocab), params, &got, &got_lp, &got_stats).ok());
    for (int r = 0; r < rows; ++r) {
      EXPECT_EQ(got[r], want[r]) << "vocab " << vocab << " row " << r;
      EXPECT_NEAR(got_lp[r], want_lp[r], 1e-3) << "vocab " << vocab << " row " << r;
      EXPECT_NEAR(got_stats[r].entropy, want_stats[r].entropy, 1e-3 * (1 + want_stats[r].entropy)) << "row " << r;
      EXPECT_NEAR(got_stats[r].top1_prob, want_stats[r].top1_prob, 1e-4) << "row " << r;
    }
  }
}

}  // namespace
}  // namespace tessera
