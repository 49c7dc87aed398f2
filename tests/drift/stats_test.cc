// Two-sample KS, quantile bins, PSI and KL against hand-computed values.
#include "runtime/drift/stats.h"

#include <cmath>
#include <vector>

#include "gtest/gtest.h"
#include "runtime/drift/kolmogorov.h"

namespace tessera::drift {
namespace {

TEST(KsTwoSample, DisjointEqualSamplesGiveDOneAndExactP) {
  // D = 1; exact p = 2 / C(6,3) = 0.1.
  auto r = KsTwoSample(std::vector<double>{3, 1, 2}, std::vector<double>{6, 4, 5});
  ASSERT_TRUE(r.ok());
  EXPECT_DOUBLE_EQ(r->statistic, 1.0);
  EXPECT_NEAR(r->pvalue, 0.1, 1e-15);
  EXPECT_TRUE(r->exact);
}

TEST(KsTwoSample, TiesAreEvaluatedOverPooledValues) {
  // x = {1,2,2,3}, y = {2,2,4,5}; right-continuous CDFs at the pooled values 1..5:
  //   F1 = .25 .75 1 1 1, F2 = 0 .5 .5 .75 1, F1-F2 = .25 .25 .5 .25 0  ->  D = 1/2.
  // Exact p for n=m=4, h=2: 2 (C(8,2) - C(8,0)) / C(8,4) = 27/35.
  auto r = KsTwoSample(std::vector<double>{1, 2, 2, 3}, std::vector<double>{2, 2, 4, 5});
  ASSERT_TRUE(r.ok());
  EXPECT_DOUBLE_EQ(r->statistic, 0.5);
  EXPECT_NEAR(r->pvalue, 27.0 / 35, 1e-15);
}

TEST(KsTwoSample, TiesAcrossSamplesDoNotCountAsDifferences) {
  // Every value shared: the CDFs agree at each pooled value although a naive merge that
  // steps one sample at a time would see a gap of 1/2 inside the tie.
  auto r = KsTwoSample(std::vector<double>{1, 1, 2, 2}, std::vector<double>{1, 2});
  ASSERT_TRUE(r.ok());
  EXPECT_DOUBLE_EQ(r->statistic, 0.0);
  EXPECT_DOUBLE_EQ(r->pvalue, 1.0);
}

TEST(KsTwoSample, UnequalSizesByHand) {
  // x = {1,3}, y = {2,4,5}: F1-F2 at 1..5 = 1/2, 1/6, 2/3, 1/3, 0 -> D = 2/3; 6 of the 10
  // orderings reach D >= 2/3 (listed in kolmogorov_test.cc) -> p = 0.6.
  auto r = KsTwoSample(std::vector<double>{1, 3}, std::vector<double>{2, 4, 5});
  ASSERT_TRUE(r.ok());
  EXPECT_NEAR(r->statistic, 2.0 / 3, 1e-15);
  EXPECT_NEAR(r->pvalue, 0.6, 1e-15);
  // The larger negative difference wins when it exceeds the positive one.
  auto s = KsTwoSample(std::vector<double>{2, 4, 5}, std::vector<double>{1, 3});
  ASSERT_TRUE(s.ok());
  EXPECT_NEAR(s->statistic, 2.0 / 3, 1e-15);
}

TEST(KsTwoSample, IdenticalSamplesGiveZeroAndOne) {
  const std::vector<double> v = {0.5, 2, 2, 7, 9, 9, 9};
  auto r = KsTwoSample(v, v);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->statistic, 0.0);
  EXPECT_EQ(r->pvalue, 1.0);
}

TEST(KsTwoSample, SwitchesToAsymptoticAboveTenThousand) {
  // x: 10001 zeros; y: 9801 zeros then 200 ones. D = 200/10001. The effective size
  // 10001*10001/20002 = 5000.5 rounds half-to-even to 5000, as numpy does.
  std::vector<double> x(10001, 0.0), y(10001, 0.0);
  for (int i = 9801; i < 10001; ++i) y[i] = 1.0;
  auto r = KsTwoSample(x, y);
  ASSERT_TRUE(r.ok());
  EXPECT_FALSE(r->exact);
  EXPECT_NEAR(r->statistic, 200.0 / 10001, 1e-15);
  EXPECT_EQ(r->pvalue, KolmogorovSf(5000, r->statistic));
  EXPECT_NE(r->pvalue, KolmogorovSf(5001, r->statistic));

  auto exact = KsTwoSample(std::vector<double>(10000, 0.0), std::vector<double>(10000, 1.0));
  ASSERT_TRUE(exact.ok());
  EXPECT_TRUE(exact->exact);
}

TEST(KsTwoSample, RejectsEmptyAndNaN) {
  EXPECT_FALSE(KsTwoSample(std::vector<double>{}, std::vector<double>{1}).ok());
  EXPECT_FALSE(KsTwoSample(std::vector<double>{NAN}, std::vector<double>{1}).ok());
  EXPECT_FALSE(KsTwoSampleSorted(std::vector<double>{2, 1}, std::vector<double>{1}).ok());
}

TEST(QuantileEdges, InterpolateLinearlyLikeNumpy) {
  // n=8, positions 7*q: 1.75 -> 2.75, 3.5 -> 4.5, 5.25 -> 6.25.
  const std::vector<double> ref = {1, 2, 3, 4, 5, 6, 7, 8};
  EXPECT_EQ(QuantileEdges(ref, 4), (std::vector<double>{2.75, 4.5, 6.25}));
}

TEST(QuantileEdges, MergesEqualEdges) {
  // Positions 1.75 -> 1, 3.5 -> 1, 5.25 -> 1 + .25 * (2 - 1) = 1.25.
  const std::vector<double> ref = {1, 1, 1, 1, 1, 1, 2, 3};
  EXPECT_EQ(QuantileEdges(ref, 4), (std::vector<double>{1, 1.25}));
}

TEST(BinOf, ValueOnAnEdgeFallsIntoTheBinItCloses) {
  const std::vector<double> edges = {1, 2};
  EXPECT_EQ(BinOf(edges, 0.5), 0);
  EXPECT_EQ(BinOf(edges, 1.0), 0);
  EXPECT_EQ(BinOf(edges, 1.5), 1);
  EXPECT_EQ(BinOf(edges, 2.0), 1);
  EXPECT_EQ(BinOf(edges, 9.0), 2);
}

TEST(Psi, ByHandOverReferenceQuartiles) {
  // Reference 1..8 over edges {2.75, 4.5, 6.25}: 2,2,2,2 -> e = .25 each.
  // Live {1,1,1,1,3,5,7,9}: 4,1,1,2 -> a = .5, .125, .125, .25.
  // PSI = .25 ln 2 + 2 (-.125) ln .5 + 0 = .5 ln 2.
  const std::vector<double> edges = {2.75, 4.5, 6.25};
  const auto ref = BinCounts(edges, std::vector<double>{1, 2, 3, 4, 5, 6, 7, 8});
  const auto live = BinCounts(edges, std::vector<double>{1, 1, 1, 1, 3, 5, 7, 9});
  EXPECT_EQ(live, (std::vector<int64_t>{4, 1, 1, 2}));
  auto psi = Psi(ref, live, 1e-4);
  ASSERT_TRUE(psi.ok());
  EXPECT_NEAR(*psi, 0.5 * std::log(2.0), 1e-15);
}

TEST(Psi, EmptyBinsAreFlooredAtEpsilon) {
  // a = .75, .25, 0, 0 -> the zeros become 1e-4; e = .25 each.
  // PSI = .5 ln 3 + 0 + 2 (1e-4 - .25) ln(1e-4 / .25)
  //     = 0.5493061443 + 2 * 0.2499 * 7.8240460109 = 4.4597643397.
  const std::vector<int64_t> ref = {2, 2, 2, 2};
  const std::vector<int64_t> live = {6, 2, 0, 0};
  auto psi = Psi(ref, live, 1e-4);
  ASSERT_TRUE(psi.ok());
  EXPECT_NEAR(*psi, 0.5 * std::log(3.0) + 2 * 0.2499 * std::log(0.25 / 1e-4), 1e-12);
  EXPECT_NEAR(*psi, 4.4597643397, 1e-9);
}

TEST(Psi, IdenticalDistributionsGiveZero) {
  const std::vector<int64_t> c = {3, 0, 5, 1};
  const std::vector<int64_t> doubled = {6, 0, 10, 2};
  EXPECT_EQ(*Psi(c, doubled, 1e-4), 0.0);
}

TEST(Psi, RejectsMismatchedOrEmptyHistograms) {
  EXPECT_FALSE(Psi(std::vector<int64_t>{1, 2}, std::vector<int64_t>{1}, 1e-4).ok());
  EXPECT_FALSE(Psi(std::vector<int64_t>{0, 0}, std::vector<int64_t>{1, 1}, 1e-4).ok());
}

TEST(KlDivergence, LaplaceSmoothedByHand) {
  // alpha = 1, live {3,1}, reference {1,1}: p = (4/6, 2/6), q = (2/4, 2/4).
  // KL = 2/3 ln(4/3) + 1/3 ln(2/3) = 0.0566330...
  auto kl = KlDivergence(std::vector<int64_t>{3, 1}, std::vector<int64_t>{1, 1}, 1.0);
  ASSERT_TRUE(kl.ok());
  EXPECT_NEAR(*kl, 2.0 / 3 * std::log(4.0 / 3) + 1.0 / 3 * std::log(2.0 / 3), 1e-15);
}

TEST(KlDivergence, CategoricalOverTheUnionOfCategories) {
  // Reference {stop:2}, live {stop:3, length:1}; union [length, stop], alpha = 1:
  //   q = (1/4, 3/4), p = (2/6, 4/6); KL = 1/3 ln(4/3) + 2/3 ln(8/9).
  CategoryCounts ref = {{"stop", 2}};
  CategoryCounts live = {{"stop", 3}, {"length", 1}};
  AlignedCounts a = AlignCategories(ref, live);
  EXPECT_EQ(a.categories, (std::vector<std::string>{"length", "stop"}));
  EXPECT_EQ(a.reference, (std::vector<int64_t>{0, 2}));
  EXPECT_EQ(a.live, (std::vector<int64_t>{1, 3}));
  auto kl = KlDivergence(a.live, a.reference, 1.0);
  ASSERT_TRUE(kl.ok());
  EXPECT_NEAR(*kl, 1.0 / 3 * std::log(4.0 / 3) + 2.0 / 3 * std::log(8.0 / 9), 1e-15);
}

TEST(KlDivergence, IdenticalDistributionsGiveZero) {
  const std::vector<int64_t> c = {4, 0, 7};
  EXPECT_EQ(*KlDivergence(c, c, 0.5), 0.0);
}

}  // namespace
}  // namespace tessera::drift
