// Kolmogorov / Smirnov distributions and the exact two-sample count, against values derived
// by hand (closed forms and lattice-path counts) or published ones.
#include "runtime/drift/kolmogorov.h"

#include <cmath>

#include "gtest/gtest.h"

namespace tessera::drift {
namespace {

TEST(SmirnovSf, MatchesBirnbaumTingeySumByHand) {
  // n=3, x=0.5: x * sum_{v=0}^{1} C(3,v) (1-x-v/3)^(3-v) (x+v/3)^(v-1)
  //   v=0: 1 * 0.5^3 * 0.5^-1 = 0.25;  v=1: 3 * (1/6)^2 * 1 = 1/12;  0.5 * (1/3) = 1/6.
  EXPECT_NEAR(SmirnovSf(3, 0.5), 1.0 / 6, 1e-15);
  // n=1: D+ is uniform, Pr(D+ >= x) = 1 - x.
  EXPECT_DOUBLE_EQ(SmirnovSf(1, 0.3), 0.7);
  // x >= 1 - 1/n: only the v=0 term survives, (1-x)^n.
  EXPECT_NEAR(SmirnovSf(4, 0.8) / std::pow(0.2, 4), 1.0, 1e-14);
  EXPECT_EQ(SmirnovSf(5, 0.0), 1.0);
  EXPECT_EQ(SmirnovSf(5, 1.0), 0.0);
}

TEST(KolmogorovSf, RubenGambinoBranchesByHand) {
  // n x <= 1: Pr(D_n <= x) = n!/n^n (2nx - 1)^n. n=3, x=0.3: (1/3)(2/3)(1) * 0.8^3.
  EXPECT_NEAR(KolmogorovSf(3, 0.3), 1 - 0.8 * 0.8 * 0.8 * 2 / 9, 1e-15);
  // n x >= n - 1: Pr(D_n >= x) = 2 (1-x)^n.
  EXPECT_NEAR(KolmogorovSf(10, 0.95) / (2 * std::pow(0.05, 10)), 1.0, 1e-12);
  // x <= 1/(2n): D_n >= 1/(2n) always.
  EXPECT_EQ(KolmogorovSf(10, 0.04), 1.0);
}

TEST(KolmogorovSf, TwiceSmirnovAboveOneHalf) {
  // For x >= 1/2 the two one-sided events cannot both occur: 2 * (1/6) from above.
  EXPECT_NEAR(KolmogorovSf(3, 0.5), 1.0 / 3, 1e-15);
}

TEST(KolmogorovSf, DurbinMatrixMatchesPublishedValue) {
  // Marsaglia, Tsang & Wang (2003) print K(10, 0.274) = 0.6284796154565043.
  EXPECT_NEAR(KolmogorovSf(10, 0.274), 1 - 0.6284796154565043, 1e-14);
}

TEST(KolmogorovSf, AgreesAcrossTheBranchBoundaries) {
  // n=10: Durbin below n x^2 = 0.754693, Pomeranz above; both are exact, so they must meet.
  const double x = std::sqrt(0.754693 / 10);
  EXPECT_NEAR(KolmogorovSf(10, x - 1e-12), KolmogorovSf(10, x + 1e-12), 1e-9);
  // n=141: Durbin/Pelz-Good below n x^2 = 2.2, 2*Smirnov (a close approximation) above.
  const double y = std::sqrt(2.2 / 141);
  EXPECT_NEAR(KolmogorovSf(141, y - 1e-12), KolmogorovSf(141, y + 1e-12), 1e-4);
}

TEST(KolmogorovSf, IsASurvivalFunction) {
  for (int64_t n : {5, 60, 140, 141, 5000, 200000}) {
    double prev = 1.0;
    for (double x = 0.0; x <= 1.0; x += 1.0 / 64) {
      const double p = KolmogorovSf(n, x);
      EXPECT_LE(p, prev + 1e-12) << "n=" << n << " x=" << x;
      EXPECT_GE(p, 0.0);
      prev = p;
    }
  }
}

TEST(TwoSampleExactSf, EqualSizesCountPathsByHand) {
  // n=m=3, D=1 (h=3): only the two orderings with one sample entirely first: 2 / C(6,3).
  EXPECT_NEAR(TwoSampleExactSf(3, 3, 3), 2.0 / 20, 1e-15);
  // n=m=4, D >= 1/2 (h=2): 2 (C(8,2) - C(8,0)) / C(8,4) = 54/70 = 27/35.
  EXPECT_NEAR(TwoSampleExactSf(4, 4, 2), 27.0 / 35, 1e-15);
  EXPECT_EQ(TwoSampleExactSf(4, 4, 0), 1.0);
}

TEST(TwoSampleExactSf, UnequalSizesCountPathsByHand) {
  // n1=2, n2=3, lcm 6. D=1 (h=6): 2 of the C(5,2)=10 orderings.
  EXPECT_NEAR(TwoSampleExactSf(2, 3, 6), 0.2, 1e-15);
  // D >= 2/3 (h=4): enumerating the 10 orderings (positions of the two x's), D is
  //   {0,1}:1 {0,2}:2/3 {0,3}:1/2 {0,4}:1/2 {1,2}:2/3 {1,3}:1/3 {1,4}:1/2 {2,3}:2/3
  //   {2,4}:2/3 {3,4}:1   -> 6 of 10.
  EXPECT_NEAR(TwoSampleExactSf(2, 3, 4), 0.6, 1e-15);
  EXPECT_NEAR(TwoSampleExactSf(3, 2, 4), 0.6, 1e-15);  // symmetric in the sizes
}

}  // namespace
}  // namespace tessera::drift
