// Pure drift statistics: two-sample Kolmogorov-Smirnov (as scipy.stats.ks_2samp, two-sided,
// method 'auto'), Population Stability Index and smoothed KL divergence over histograms.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"

namespace tessera::drift {

struct KsResult {
  double statistic = 0;  // D = sup |F1 - F2| over the pooled values
  double pvalue = 1;
  bool exact = false;  // exact lattice-path count vs the Kolmogorov distribution
};

// scipy switches from the exact p-value to the asymptotic one above this sample size.
inline constexpr int64_t kKsMaxExactSize = 10000;

// Two-sided two-sample KS test on ascending-sorted samples (no copies). Ties are handled by
// evaluating both empirical CDFs at every pooled value (right-continuous), as scipy does.
// In exact mode D is snapped to h/lcm(n1, n2), again as scipy does.
absl::StatusOr<KsResult> KsTwoSampleSorted(std::span<const double> x, std::span<const double> y);

// Same, for unsorted samples (sorts copies).
absl::StatusOr<KsResult> KsTwoSample(std::span<const double> x, std::span<const double> y);

// Interior bin edges at the reference quantiles i/num_bins, i = 1..num_bins-1, with numpy's
// default linear interpolation; equal edges are merged, so there may be fewer bins.
// `sorted_reference` must be ascending and non-empty.
std::vector<double> QuantileEdges(std::span<const double> sorted_reference, int num_bins);

// Bin of `value` for interior `edges` (edges.size() + 1 bins): the number of edges strictly
// below the value, so a value equal to an edge falls into the bin that edge closes.
int BinOf(std::span<const double> edges, double value);

// Counts of `values` over the bins of `edges`.
std::vector<int64_t> BinCounts(std::span<const double> edges, std::span<const double> values);

// PSI = sum_i (a_i - e_i) * ln(a_i / e_i), a = live proportions, e = reference proportions,
// each proportion floored at `epsilon` (not renormalised) so empty bins stay finite.
absl::StatusOr<double> Psi(std::span<const int64_t> reference_counts,
                           std::span<const int64_t> live_counts, double epsilon);

// KL(live || reference) = sum_i p_i ln(p_i / q_i) with additive (Laplace) smoothing:
// p_i = (live_i + alpha) / (N_live + alpha K), q_i likewise over the reference, K bins.
absl::StatusOr<double> KlDivergence(std::span<const int64_t> live_counts,
                                    std::span<const int64_t> reference_counts, double alpha);

// Counts per category name; AlignCategories lays two of them over the sorted union of names.
using CategoryCounts = absl::flat_hash_map<std::string, int64_t>;
struct AlignedCounts {
  std::vector<std::string> categories;
  std::vector<int64_t> reference;
  std::vector<int64_t> live;
};
AlignedCounts AlignCategories(const CategoryCounts& reference, const CategoryCounts& live);

}  // namespace tessera::drift
