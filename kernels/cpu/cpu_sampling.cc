// CPU reference of Backend::SampleTokens: the cuts computed by sorting, then a
// Gumbel-max draw with the same Philox noise as the CUDA kernel.
#include <algorithm>
#include <cmath>
#include <numeric>

#include "kernels/cpu/cpu_backend.h"
#include "kernels/sample_tokens_args.h"
#include "kernels/sampling_math.h"

namespace tessera {
namespace {

// Returns (token, logprob) for one row.
std::pair<int32_t, float> SampleRow(const float* l, int32_t vocab, const SamplingRow& p) {
  using sampling::OrderedKey;
  int32_t best = 0;
  for (int32_t i = 1; i < vocab; ++i) {
    if (l[i] > l[best]) best = i;
  }
  const float mx = l[best];
  double z = 0.0;
  for (int32_t i = 0; i < vocab; ++i) z += std::exp(static_cast<double>(l[i]) - mx);
  const float log_z = mx + static_cast<float>(std::log(z));
  if (p.temperature < 1e-5f) return {best, l[best] - log_z};

  const float inv_t = 1.0f / p.temperature;
  std::vector<int32_t> order(vocab);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return l[a] > l[b]; });
  // Every cut is a key threshold: the kept tokens are those with key >= it, so ties at
  // a boundary stay together.
  uint32_t threshold = 0;
  int32_t kept = vocab;
  if (p.top_k > 0 && p.top_k < vocab) {
    threshold = OrderedKey(l[order[p.top_k - 1]]);
    while (kept > 0 && OrderedKey(l[order[kept - 1]]) < threshold) --kept;
  }
  if (p.top_p < 1.0f) {
    double mass = 0.0;
    for (int32_t j = 0; j < kept; ++j) mass += std::exp(static_cast<double>((l[order[j]] - mx) * inv_t));
    const double target = static_cast<double>(p.top_p) * mass;
    double cum = 0.0;
    for (int32_t j = 0; j < kept; ++j) {
      cum += std::exp(static_cast<double>((l[order[j]] - mx) * inv_t));
      if (cum >= target) {
        threshold = std::max(threshold, OrderedKey(l[order[j]]));
        break;
      }
    }
  }
  int32_t token = best;
  float top_score = -INFINITY;
  for (int32_t i = 0; i < vocab; ++i) {
    if (OrderedKey(l[i]) < threshold) continue;
    if (p.min_p > 0.0f && std::exp((l[i] - mx) * inv_t) < p.min_p) continue;
    const float score = l[i] * inv_t + sampling::Gumbel(p.seed, p.step, static_cast<uint32_t>(i));
    if (score > top_score) {
      top_score = score;
      token = i;
    }
  }
  return {token, l[token] - log_z};
}

// H = log Z - Σ p (l - m) with p = e^(l - m) / Z, m the row's maximum; top-1 = 1 / Z.
RowStats RowStatistics(const float* l, int32_t vocab) {
  float mx = l[0];
  for (int32_t i = 1; i < vocab; ++i) mx = std::max(mx, l[i]);
  double z = 0.0, weighted = 0.0;
  for (int32_t i = 0; i < vocab; ++i) {
    const double e = std::exp(static_cast<double>(l[i] - mx));
    z += e;
    weighted += e * static_cast<double>(l[i] - mx);
  }
  return {static_cast<float>(std::log(z) - weighted / z), static_cast<float>(1.0 / z)};
}

}  // namespace

absl::Status CpuBackend::SampleTokens(const TensorView& logits, const std::vector<SamplingRow>& rows,
                                      std::vector<int32_t>* ids, std::vector<float>* logprobs,
                                      std::vector<RowStats>* stats) {
  if (absl::Status st = ValidateSampleTokensArgs(logits, rows); !st.ok()) return st;
  ids->resize(rows.size());
  logprobs->resize(rows.size());
  const float* base = static_cast<const float*>(logits.data);
  const int32_t vocab = static_cast<int32_t>(logits.cols);
  for (size_t r = 0; r < rows.size(); ++r) {
    auto [token, lp] = SampleRow(base + r * logits.cols, vocab, rows[r]);
    (*ids)[r] = token;
    (*logprobs)[r] = lp;
  }
  if (stats != nullptr) {
    stats->resize(rows.size());
    for (size_t r = 0; r < rows.size(); ++r) (*stats)[r] = RowStatistics(base + r * logits.cols, vocab);
  }
  return absl::OkStatus();
}

}  // namespace tessera
