#include "quant/gptq/quantizer.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "runtime/common/dtype.h"
#include "runtime/common/status_macros.h"

namespace tessera::quant {
namespace {

// In-place lower Cholesky factor of the symmetric n×n matrix a (row-major); false when a
// is not positive definite.
bool CholeskyLower(std::vector<double>& a, int64_t n) {
  for (int64_t j = 0; j < n; ++j) {
    double d = a[j * n + j];
    for (int64_t k = 0; k < j; ++k) d -= a[j * n + k] * a[j * n + k];
    if (!(d > 0.0)) return false;
    const double ljj = std::sqrt(d);
    a[j * n + j] = ljj;
    for (int64_t i = j + 1; i < n; ++i) {
      double s = a[i * n + j];
      const double* ri = &a[i * n];
      const double* rj = &a[j * n];
      for (int64_t k = 0; k < j; ++k) s -= ri[k] * rj[k];
      a[i * n + j] = s / ljj;
    }
    for (int64_t k = j + 1; k < n; ++k) a[j * n + k] = 0.0;
  }
  return true;
}

// U upper triangular with Uᵀ U = H⁻¹: the factor GPTQ propagates errors through.
absl::StatusOr<std::vector<double>> UpperCholeskyOfInverse(std::vector<double> h, int64_t n) {
  if (!CholeskyLower(h, n))
    return absl::FailedPreconditionError("the layer's Hessian is not positive definite; raise --damp");
  // Linv = L⁻¹ (lower), by forward substitution column by column.
  std::vector<double> linv(static_cast<size_t>(n * n), 0.0);
  for (int64_t c = 0; c < n; ++c) {
    linv[c * n + c] = 1.0 / h[c * n + c];
    for (int64_t i = c + 1; i < n; ++i) {
      double s = 0.0;
      for (int64_t k = c; k < i; ++k) s += h[i * n + k] * linv[k * n + c];
      linv[i * n + c] = -s / h[i * n + i];
    }
  }
  // H⁻¹ = Linvᵀ Linv.
  std::vector<double> inv(static_cast<size_t>(n * n), 0.0);
  for (int64_t k = 0; k < n; ++k) {
    const double* rk = &linv[k * n];
    for (int64_t i = 0; i <= k; ++i) {
      const double v = rk[i];
      if (v == 0.0) continue;
      double* ri = &inv[i * n];
      for (int64_t j = 0; j <= i; ++j) ri[j] += v * rk[j];
    }
  }
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < i; ++j) inv[j * n + i] = inv[i * n + j];
  if (!CholeskyLower(inv, n))
    return absl::FailedPreconditionError("the inverse Hessian is not positive definite; raise --damp");
  std::vector<double> u(static_cast<size_t>(n * n), 0.0);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = i; j < n; ++j) u[i * n + j] = inv[j * n + i];
  return u;
}

QuantizedLinear Empty(int64_t out, int64_t in, const QuantizeOptions& o) {
  QuantizedLinear q;
  q.bits = o.bits;
  q.group_size = o.EffectiveGroupSize(in);
  q.in_features = in;
  q.out_features = out;
  q.q.assign(static_cast<size_t>(in * out), 0);
  q.scales.assign(static_cast<size_t>(q.num_groups() * out), 0);
  q.zeros.assign(static_cast<size_t>(q.num_groups() * out), 0);
  q.g_idx.assign(static_cast<size_t>(in), 0);
  return q;
}

}  // namespace

absl::Status QuantizeOptions::Validate() const {
  if (bits != 2 && bits != 3 && bits != 4 && bits != 8)
    return absl::InvalidArgumentError(absl::StrCat("--bits ", bits, " is not supported (2, 3, 4 or 8)"));
  if (group_size != -1 && group_size <= 0)
    return absl::InvalidArgumentError(absl::StrCat("--group-size ", group_size, " must be positive or -1"));
  if (!(damp >= 0.0)) return absl::InvalidArgumentError("--damp must not be negative");
  if (block_size <= 0) return absl::InvalidArgumentError("block size must be positive");
  return absl::OkStatus();
}

absl::Status QuantizeOptions::ValidateFor(int64_t in_features) const {
  RETURN_IF_ERROR(Validate());
  if (in_features % EffectiveGroupSize(in_features) != 0)
    return absl::InvalidArgumentError(absl::StrCat("--group-size ", group_size, " does not divide in_features ",
                                                   in_features, " (use a divisor or -1 for per-channel)"));
  return absl::OkStatus();
}

GroupGrid FindGrid(float xmin, float xmax, int bits, bool sym) {
  const double maxq = static_cast<double>((1u << bits) - 1u);
  double lo = std::min<double>(xmin, 0.0), hi = std::max<double>(xmax, 0.0);
  if (sym) {
    // Unlike AutoGPTQ, an all-positive group is centred too, so its maximum is not clipped.
    hi = std::max(-lo, hi);
    lo = -hi;
  }
  if (lo == 0.0 && hi == 0.0) {
    lo = -1.0;
    hi = 1.0;
  }
  double scale = (hi - lo) / maxq;
  double zero;
  if (sym) {
    zero = (maxq + 1.0) / 2.0;
  } else {
    zero = std::nearbyint(-lo / scale);
    if (zero < 1.0) {
      // Zero 0 cannot be stored in AutoGPTQ v1 (zero - 1 wraps); use zero 1 with a scale
      // that still reaches the maximum.
      zero = 1.0;
      scale = std::max(hi / (maxq - 1.0), -lo);
    }
  }
  GroupGrid g;
  g.scale_f16 = F32ToF16(static_cast<float>(scale));
  if (F16ToF32(g.scale_f16) == 0.0f) g.scale_f16 = 1;  // smallest fp16 subnormal
  g.scale = F16ToF32(g.scale_f16);
  g.zero = static_cast<uint32_t>(zero);
  return g;
}

uint32_t QuantizeValue(double x, const GroupGrid& grid, int bits) {
  const double maxq = static_cast<double>((1u << bits) - 1u);
  const double q = std::nearbyint(x / grid.scale) + grid.zero;
  return static_cast<uint32_t>(std::clamp(q, 0.0, maxq));
}

std::vector<float> QuantizedLinear::Dequantize() const {
  std::vector<float> w(static_cast<size_t>(out_features * in_features));
  for (int64_t i = 0; i < in_features; ++i) {
    const int64_t g = g_idx[i];
    for (int64_t o = 0; o < out_features; ++o) {
      const float s = F16ToF32(scales[g * out_features + o]);
      w[o * in_features + i] =
          s * static_cast<float>(static_cast<int32_t>(q[i * out_features + o]) - static_cast<int32_t>(zeros[g * out_features + o]));
    }
  }
  return w;
}

absl::StatusOr<QuantizedLinear> QuantizeRtn(const float* w, int64_t out, int64_t in, const QuantizeOptions& options) {
  RETURN_IF_ERROR(options.ValidateFor(in));
  QuantizedLinear r = Empty(out, in, options);
  const int64_t gs = r.group_size;
  for (int64_t i = 0; i < in; ++i) r.g_idx[i] = static_cast<int32_t>(i / gs);
  for (int64_t g = 0; g < r.num_groups(); ++g) {
    for (int64_t o = 0; o < out; ++o) {
      const float* row = w + o * in + g * gs;
      const auto [mn, mx] = std::minmax_element(row, row + gs);
      const GroupGrid grid = FindGrid(*mn, *mx, options.bits, options.sym);
      r.scales[g * out + o] = grid.scale_f16;
      r.zeros[g * out + o] = grid.zero;
      for (int64_t i = 0; i < gs; ++i) r.q[(g * gs + i) * out + o] = QuantizeValue(row[i], grid, options.bits);
    }
  }
  return r;
}

absl::StatusOr<QuantizedLinear> QuantizeGptq(const float* w, int64_t out, int64_t in, const std::vector<double>& hessian,
                                             const QuantizeOptions& options) {
  RETURN_IF_ERROR(options.ValidateFor(in));
  if (static_cast<int64_t>(hessian.size()) != in * in)
    return absl::InvalidArgumentError(absl::StrCat("Hessian has ", hessian.size(), " entries, expected ", in * in));
  QuantizedLinear r = Empty(out, in, options);
  const int64_t gs = r.group_size;
  const int bits = options.bits;

  std::vector<int32_t> perm(static_cast<size_t>(in));
  std::iota(perm.begin(), perm.end(), 0);
  std::vector<double> diag(static_cast<size_t>(in));
  for (int64_t i = 0; i < in; ++i) diag[i] = hessian[i * in + i];
  if (options.act_order)
    std::stable_sort(perm.begin(), perm.end(), [&](int32_t a, int32_t b) { return diag[a] > diag[b]; });

  // Work in the quantization order: W[:, j] is input perm[j].
  std::vector<double> W(static_cast<size_t>(out * in)), H(static_cast<size_t>(in * in));
  for (int64_t j = 0; j < in; ++j) {
    const bool dead = diag[perm[j]] == 0.0;  // an input that is always zero: its weight is irrelevant
    for (int64_t o = 0; o < out; ++o) W[o * in + j] = dead ? 0.0 : w[o * in + perm[j]];
    for (int64_t k = 0; k < in; ++k) H[j * in + k] = hessian[perm[j] * in + perm[k]];
    if (dead) H[j * in + j] = 1.0;
  }
  double mean_diag = 0.0;
  for (int64_t j = 0; j < in; ++j) mean_diag += H[j * in + j];
  mean_diag /= static_cast<double>(in);
  for (int64_t j = 0; j < in; ++j) H[j * in + j] += options.damp * mean_diag;
  ASSIGN_OR_RETURN(std::vector<double> U, UpperCholeskyOfInverse(std::move(H), in));

  // Lazy blocks hold whole groups, so a group's grid is always taken from weights that
  // already carry every earlier column's error.
  const int64_t block = std::max<int64_t>(gs, options.block_size / gs * gs);
  std::vector<GroupGrid> grids(static_cast<size_t>(out));
  std::vector<double> err(static_cast<size_t>(out * block));
  for (int64_t i1 = 0; i1 < in; i1 += block) {
    const int64_t i2 = std::min(in, i1 + block), count = i2 - i1;
    for (int64_t i = i1; i < i2; ++i) {
      if (i % gs == 0) {
        const int64_t g = i / gs;
        for (int64_t o = 0; o < out; ++o) {
          const double* row = &W[o * in + i];
          const auto [mn, mx] = std::minmax_element(row, row + gs);
          grids[o] = FindGrid(static_cast<float>(*mn), static_cast<float>(*mx), bits, options.sym);
          r.scales[g * out + o] = grids[o].scale_f16;
          r.zeros[g * out + o] = grids[o].zero;
        }
      }
      const double d = U[i * in + i];
      const double* urow = &U[i * in];
      for (int64_t o = 0; o < out; ++o) {
        double* wrow = &W[o * in];
        const uint32_t qv = QuantizeValue(wrow[i], grids[o], bits);
        r.q[static_cast<int64_t>(perm[i]) * out + o] = qv;
        const double deq = static_cast<double>(grids[o].scale) * (static_cast<double>(qv) - grids[o].zero);
        const double e = (wrow[i] - deq) / d;
        err[o * block + (i - i1)] = e;
        for (int64_t j = i + 1; j < i2; ++j) wrow[j] -= e * urow[j];
      }
    }
    // The block's errors reach the later columns in one pass.
    for (int64_t o = 0; o < out; ++o) {
      double* wrow = &W[o * in];
      const double* erow = &err[o * block];
      for (int64_t k = 0; k < count; ++k) {
        const double e = erow[k];
        const double* urow = &U[(i1 + k) * in];
        for (int64_t j = i2; j < in; ++j) wrow[j] -= e * urow[j];
      }
    }
  }
  for (int64_t j = 0; j < in; ++j) r.g_idx[perm[j]] = static_cast<int32_t>(j / gs);
  return r;
}

HessianAccumulator::HessianAccumulator(int64_t in_features)
    : in_(in_features), sum_(static_cast<size_t>(in_features * in_features), 0.0) {}

void HessianAccumulator::Add(const float* x, int64_t rows) {
  const int64_t n = in_;
  std::vector<double> xd(static_cast<size_t>(n));
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t i = 0; i < n; ++i) xd[i] = x[r * n + i];
    for (int64_t i = 0; i < n; ++i) {
      const double xi = xd[i];
      if (xi == 0.0) continue;
      double* row = &sum_[i * n];
      for (int64_t j = i; j < n; ++j) row[j] += xi * xd[j];
    }
  }
  rows_ += rows;
}

std::vector<double> HessianAccumulator::Hessian() const {
  std::vector<double> h(sum_.size(), 0.0);
  if (rows_ == 0) return h;
  const double f = 2.0 / static_cast<double>(rows_);
  for (int64_t i = 0; i < in_; ++i) {
    for (int64_t j = i; j < in_; ++j) {
      h[i * in_ + j] = sum_[i * in_ + j] * f;
      h[j * in_ + i] = h[i * in_ + j];
    }
  }
  return h;
}

}  // namespace tessera::quant
