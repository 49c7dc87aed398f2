// Sampling distributions of the Kolmogorov-Smirnov statistic. The algorithms and their
// switch-over points follow scipy 1.10 so that p-values agree with scipy.stats.ks_2samp.
#pragma once

#include <cstdint>

namespace tessera::drift {

// Pr(D+_n >= x): one-sided one-sample statistic (scipy.special.smirnov), Birnbaum-Tingey sum.
double SmirnovSf(int64_t n, double x);

// Pr(D_n >= x): two-sided one-sample statistic (scipy.stats.kstwo.sf); Simard & L'Ecuyer's
// choice among Ruben-Gambino, Durbin matrix, Pomeranz, Pelz-Good and 2*Smirnov.
double KolmogorovSf(int64_t n, double x);

// Exact Pr(D_{n1,n2} >= h / lcm(n1, n2)) for the two-sided two-sample statistic, counting
// lattice paths (Hodges; Viehmann's 1-p recursion). Returns NaN when the count is not
// representable, in which case callers fall back to KolmogorovSf.
double TwoSampleExactSf(int64_t n1, int64_t n2, int64_t h);

}  // namespace tessera::drift
