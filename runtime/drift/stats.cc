// Drift statistics: KS (scipy-compatible), PSI and smoothed KL.
#include "runtime/drift/stats.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "runtime/drift/kolmogorov.h"

namespace tessera::drift {
namespace {

bool HasNaN(std::span<const double> v) {
  return std::any_of(v.begin(), v.end(), [](double x) { return std::isnan(x); });
}

absl::Status CheckCounts(std::span<const int64_t> a, std::span<const int64_t> b) {
  if (a.size() != b.size() || a.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "histograms must have the same, non-zero number of bins: ", a.size(), " vs ", b.size()));
  }
  for (auto counts : {a, b}) {
    if (std::any_of(counts.begin(), counts.end(), [](int64_t c) { return c < 0; })) {
      return absl::InvalidArgumentError("histogram counts must be non-negative");
    }
  }
  return absl::OkStatus();
}

int64_t Total(std::span<const int64_t> c) {
  return std::accumulate(c.begin(), c.end(), int64_t{0});
}

}  // namespace

absl::StatusOr<KsResult> KsTwoSampleSorted(std::span<const double> x, std::span<const double> y) {
  const int64_t n1 = static_cast<int64_t>(x.size());
  const int64_t n2 = static_cast<int64_t>(y.size());
  if (n1 == 0 || n2 == 0) return absl::InvalidArgumentError("KS test needs two non-empty samples");
  if (HasNaN(x) || HasNaN(y)) return absl::InvalidArgumentError("KS test samples contain NaN");
  if (!std::is_sorted(x.begin(), x.end()) || !std::is_sorted(y.begin(), y.end())) {
    return absl::InvalidArgumentError("KsTwoSampleSorted needs ascending samples");
  }
  // Walk the distinct pooled values; at each, both CDFs count every sample <= value.
  const double dn1 = static_cast<double>(n1), dn2 = static_cast<double>(n2);
  double max_diff = -1.0, min_diff = 1.0;
  int64_t i = 0, j = 0;
  while (i < n1 || j < n2) {
    const double v = (j >= n2 || (i < n1 && x[i] <= y[j])) ? x[i] : y[j];
    while (i < n1 && x[i] <= v) ++i;
    while (j < n2 && y[j] <= v) ++j;
    const double diff = static_cast<double>(i) / dn1 - static_cast<double>(j) / dn2;
    max_diff = std::max(max_diff, diff);
    min_diff = std::min(min_diff, diff);
  }
  const double min_s = std::clamp(-min_diff, 0.0, 1.0);
  KsResult r;
  r.statistic = min_s > max_diff ? min_s : max_diff;

  double p = std::numeric_limits<double>::quiet_NaN();
  if (std::max(n1, n2) <= kKsMaxExactSize) {
    const int64_t g = std::gcd(n1, n2);
    const int64_t lcm = (n1 / g) * n2;
    const int64_t h = static_cast<int64_t>(std::nearbyint(r.statistic * static_cast<double>(lcm)));
    r.statistic = static_cast<double>(h) / static_cast<double>(lcm);
    p = TwoSampleExactSf(n1, n2, h);
    r.exact = !std::isnan(p);
  }
  if (!r.exact) {
    // Smirnov's asymptotic: the one-sample distribution at the effective size m n / (m + n),
    // rounded half-to-even like numpy.
    const double m = std::max(dn1, dn2), n = std::min(dn1, dn2);
    const double en = m * n / (m + n);
    p = KolmogorovSf(static_cast<int64_t>(std::nearbyint(en)), r.statistic);
  }
  r.pvalue = std::clamp(p, 0.0, 1.0);
  return r;
}

absl::StatusOr<KsResult> KsTwoSample(std::span<const double> x, std::span<const double> y) {
  std::vector<double> xs(x.begin(), x.end()), ys(y.begin(), y.end());
  if (HasNaN(xs) || HasNaN(ys)) return absl::InvalidArgumentError("KS test samples contain NaN");
  std::sort(xs.begin(), xs.end());
  std::sort(ys.begin(), ys.end());
  return KsTwoSampleSorted(xs, ys);
}

std::vector<double> QuantileEdges(std::span<const double> sorted_reference, int num_bins) {
  std::vector<double> edges;
  const size_t n = sorted_reference.size();
  if (n == 0 || num_bins < 2) return edges;
  for (int i = 1; i < num_bins; ++i) {
    const double pos = static_cast<double>(n - 1) * i / num_bins;
    const size_t lo = static_cast<size_t>(std::floor(pos));
    const size_t hi = std::min(lo + 1, n - 1);
    const double frac = pos - static_cast<double>(lo);
    const double edge = sorted_reference[lo] + frac * (sorted_reference[hi] - sorted_reference[lo]);
    if (edges.empty() || edge > edges.back()) edges.push_back(edge);
  }
  return edges;
}

int BinOf(std::span<const double> edges, double value) {
  return static_cast<int>(std::lower_bound(edges.begin(), edges.end(), value) - edges.begin());
}

std::vector<int64_t> BinCounts(std::span<const double> edges, std::span<const double> values) {
  std::vector<int64_t> counts(edges.size() + 1, 0);
  for (double v : values) ++counts[BinOf(edges, v)];
  return counts;
}

absl::StatusOr<double> Psi(std::span<const int64_t> reference_counts,
                           std::span<const int64_t> live_counts, double epsilon) {
  if (absl::Status s = CheckCounts(reference_counts, live_counts); !s.ok()) return s;
  if (!(epsilon > 0)) return absl::InvalidArgumentError("PSI epsilon must be positive");
  const int64_t ref_total = Total(reference_counts), live_total = Total(live_counts);
  if (ref_total == 0 || live_total == 0)
    return absl::InvalidArgumentError("PSI of an empty histogram");
  double psi = 0;
  for (size_t i = 0; i < reference_counts.size(); ++i) {
    const double e = std::max(static_cast<double>(reference_counts[i]) / ref_total, epsilon);
    const double a = std::max(static_cast<double>(live_counts[i]) / live_total, epsilon);
    psi += (a - e) * std::log(a / e);
  }
  return psi;
}

absl::StatusOr<double> KlDivergence(std::span<const int64_t> live_counts,
                                    std::span<const int64_t> reference_counts, double alpha) {
  if (absl::Status s = CheckCounts(live_counts, reference_counts); !s.ok()) return s;
  if (!(alpha > 0)) return absl::InvalidArgumentError("KL smoothing alpha must be positive");
  const double k = static_cast<double>(live_counts.size());
  const double live_norm = static_cast<double>(Total(live_counts)) + alpha * k;
  const double ref_norm = static_cast<double>(Total(reference_counts)) + alpha * k;
  double kl = 0;
  for (size_t i = 0; i < live_counts.size(); ++i) {
    const double p = (static_cast<double>(live_counts[i]) + alpha) / live_norm;
    const double q = (static_cast<double>(reference_counts[i]) + alpha) / ref_norm;
    kl += p * std::log(p / q);
  }
  return std::max(kl, 0.0);  // rounding can leave -1e-17 for equal distributions
}

AlignedCounts AlignCategories(const CategoryCounts& reference, const CategoryCounts& live) {
  AlignedCounts out;
  for (const auto& [name, count] : reference) out.categories.push_back(name);
  for (const auto& [name, count] : live) {
    if (!reference.contains(name)) out.categories.push_back(name);
  }
  std::sort(out.categories.begin(), out.categories.end());
  for (const std::string& name : out.categories) {
    auto r = reference.find(name);
    auto l = live.find(name);
    out.reference.push_back(r == reference.end() ? 0 : r->second);
    out.live.push_back(l == live.end() ? 0 : l->second);
  }
  return out;
}

}  // namespace tessera::drift
