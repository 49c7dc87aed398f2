// Kolmogorov-Smirnov distributions, ported from the algorithms scipy 1.10 uses (see header).
#include "runtime/drift/kolmogorov.h"

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <limits>
#include <numeric>
#include <vector>

namespace tessera::drift {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
// Below this exp() underflows (log 2^-1075, cephes MINLOG).
constexpr double kMinLog = -7.451332191019412076235e2;
// Smirnov sums for larger n take too long; scipy switches to an approximation there.
constexpr int64_t kSmirnovMaxComputeN = 1000000;
// Intermediate rescaling by 2^128 keeps the Durbin and Pomeranz recursions in range.
constexpr int kScaleExponent = 128;
const double kScaleUp = std::ldexp(1.0, kScaleExponent);
const double kScaleDown = std::ldexp(1.0, -kScaleExponent);

double Clip01(double p) { return std::clamp(p, 0.0, 1.0); }

// log(n! / n^n) by Stirling's series with n*log(n) removed up front.
double LogFactorialOverPower(double n) {
  static constexpr double kStirling[] = {-2.955065359477124183e-2,  6.4102564102564102564e-3,
                                         -1.9175269175269175269e-3, 8.4175084175084175084e-4,
                                         -5.952380952380952381e-4,  7.9365079365079365079e-4,
                                         -2.7777777777777777778e-3, 8.3333333333333333333e-2};
  const double rn = 1.0 / n;
  const double z = rn / n;
  double poly = 0.0;
  for (double c : kStirling) poly = poly * z + c;
  return std::log(n) / 2 - n + std::log(2 * M_PI) / 2 + rn * poly;
}

// Pr(D_n <= d) by Marsaglia-Tsang-Wang's evaluation of Durbin's matrix: the k-th diagonal
// entry of H^n times n!/n^n, with H of size (2k-1) where k = ceil(n d).
double KolmogorovCdfDurbin(int64_t n, double d) {
  if (d >= 1.0) return 1.0;
  const double nd = static_cast<double>(n) * d;
  if (nd <= 0.5) return 0.0;
  const int k = static_cast<int>(std::ceil(nd));
  const double h = k - nd;
  const int m = 2 * k - 1;
  using Matrix = std::vector<double>;  // row-major m x m
  auto at = [m](Matrix& a, int r, int c) -> double& { return a[static_cast<size_t>(r) * m + c]; };
  auto matmul = [m](const Matrix& a, const Matrix& b) {
    Matrix c(static_cast<size_t>(m) * m, 0.0);
    for (int i = 0; i < m; ++i) {
      for (int l = 0; l < m; ++l) {
        const double ail = a[static_cast<size_t>(i) * m + l];
        if (ail == 0.0) continue;
        for (int j = 0; j < m; ++j)
          c[static_cast<size_t>(i) * m + j] += ail * b[static_cast<size_t>(l) * m + j];
      }
    }
    return c;
  };

  std::vector<double> v(m), w(m);
  double fac = 1.0;
  for (int j = 1; j <= m; ++j) {
    v[j - 1] = 1.0 - std::pow(h, j);
    w[j - 1] = fac;
    fac /= j;
    v[j - 1] *= fac;
  }
  const double tt = std::pow(std::max(2 * h - 1.0, 0.0), m) - 2 * std::pow(h, m);
  v[m - 1] = (1.0 + tt) * fac;

  Matrix hm(static_cast<size_t>(m) * m, 0.0);
  for (int i = 1; i < m; ++i) {
    for (int r = i - 1; r < m; ++r) at(hm, r, i) = w[r - (i - 1)];
  }
  for (int r = 0; r < m; ++r) at(hm, r, 0) = v[r];
  for (int c = 0; c < m; ++c) at(hm, m - 1, c) = v[m - 1 - c];

  Matrix power(static_cast<size_t>(m) * m, 0.0);
  for (int i = 0; i < m; ++i) at(power, i, i) = 1.0;
  int64_t remaining = n;
  int64_t exponent = 0;    // scaling carried by `power`
  int64_t h_exponent = 0;  // scaling carried by `hm`
  while (remaining > 0) {
    if (remaining % 2) {
      power = matmul(power, hm);
      exponent += h_exponent;
    }
    hm = matmul(hm, hm);
    h_exponent *= 2;
    if (std::abs(at(hm, k - 1, k - 1)) > kScaleUp) {
      for (double& x : hm) x /= kScaleUp;
      h_exponent += kScaleExponent;
    }
    remaining /= 2;
  }
  double p = at(power, k - 1, k - 1);
  for (int64_t i = 1; i <= n; ++i) {
    p = static_cast<double>(i) * p / static_cast<double>(n);
    if (std::abs(p) < kScaleDown) {
      p *= kScaleUp;
      exponent -= kScaleExponent;
    }
  }
  if (exponent != 0) p = std::ldexp(p, static_cast<int>(exponent));
  return Clip01(p);
}

// Row bounds of the Pomeranz recursion (scipy's _pomeranz_compute_j1j2).
void PomeranzBounds(int64_t i, int64_t n, int64_t ll, int ceilf, int roundf, int64_t* j1_out,
                    int64_t* j2_out) {
  int64_t j1, j2;
  if (i == 0) {
    j1 = -ll - ceilf - 1;
    j2 = ll + ceilf - 1;
  } else {
    const int64_t half = (i + 1) / 2;
    if ((i + 1) % 2 == 0) {
      if (half == n + 1) {
        j1 = n - ll - ceilf - 1;
        j2 = n + ll + ceilf - 1;
      } else {
        j1 = half - 1 - ll - roundf - 1;
        j2 = half + ll - 1 + ceilf - 1;
      }
    } else {
      j1 = half - 1 - ll - 1;
      j2 = half + ll + roundf - 1;
    }
  }
  *j1_out = std::max<int64_t>(j1 + 2, 0);
  *j2_out = std::min(j2, n);
}

// Pr(D_n <= x) by Pomeranz's recursion: 2n+1 convolutions of a short row with scaled
// Poisson weights, then times n!.
double KolmogorovCdfPomeranz(int64_t n, double x) {
  const double nd = static_cast<double>(n);
  const double t = nd * x;
  const int64_t ll = static_cast<int64_t>(std::floor(t));
  const double f = t - static_cast<double>(ll);
  const double g = std::min(f, 1.0 - f);
  const int ceilf = f > 0 ? 1 : 0;
  const int roundf = f > 0.5 ? 1 : 0;
  const int64_t npwrs = 2 * (ll + 1);
  std::vector<double> gpower(npwrs), twogpower(npwrs), onem2gpower(npwrs);
  gpower[0] = twogpower[0] = onem2gpower[0] = 1.0;
  const double g_n = g / nd, two_g_n = 2 * g / nd, one_m2g_n = (1 - 2 * g) / nd;
  for (int64_t m = 1; m < npwrs; ++m) {
    gpower[m] = gpower[m - 1] * g_n / static_cast<double>(m);
    twogpower[m] = twogpower[m - 1] * two_g_n / static_cast<double>(m);
    onem2gpower[m] = onem2gpower[m - 1] * one_m2g_n / static_cast<double>(m);
  }

  std::vector<double> v0(npwrs, 0.0), v1(npwrs, 0.0);
  v1[0] = 1.0;
  int64_t v0s = 0, v1s = 0;
  int64_t expnt = 0;
  int64_t j1, j2;
  PomeranzBounds(0, n, ll, ceilf, roundf, &j1, &j2);
  std::vector<double> conv;
  for (int64_t i = 1; i < 2 * n + 2; ++i) {
    const int64_t k1 = j1;
    std::swap(v0, v1);
    std::swap(v0s, v1s);
    std::fill(v1.begin(), v1.end(), 0.0);
    PomeranzBounds(i, n, ll, ceilf, roundf, &j1, &j2);
    const std::vector<double>& pwrs =
        (i == 1 || i == 2 * n + 1) ? gpower : (i % 2 ? twogpower : onem2gpower);
    const int64_t ln2 = j2 - k1 + 1;
    if (ln2 <= 0) continue;
    // Slices clip at the array end exactly as numpy's do.
    const int64_t a_begin = k1 - v0s;
    const int64_t a_len = std::max<int64_t>(0, std::min(a_begin + ln2, npwrs) - a_begin);
    const int64_t b_len = std::min(ln2, npwrs);
    conv.assign(static_cast<size_t>(std::max<int64_t>(a_len + b_len - 1, 0)), 0.0);
    for (int64_t a = 0; a < a_len; ++a) {
      const double va = v0[a_begin + a];
      if (va == 0.0) continue;
      for (int64_t b = 0; b < b_len; ++b) conv[a + b] += va * pwrs[b];
    }
    const int64_t conv_start = j1 - k1;
    const int64_t conv_len = j2 - j1 + 1;
    for (int64_t c = 0; c < conv_len && conv_start + c < static_cast<int64_t>(conv.size()); ++c) {
      v1[c] = conv[conv_start + c];
    }
    const double vmax = *std::max_element(v1.begin(), v1.end());
    if (vmax > 0 && vmax < kScaleDown) {
      for (double& x : v1) x *= kScaleUp;
      expnt -= kScaleExponent;
    }
    v1s = v0s + j1 - k1;
  }
  double ans = v1[n - v1s];
  for (int64_t m = 1; m <= n; ++m) {
    if (std::abs(ans) > kScaleUp) {
      ans *= kScaleDown;
      expnt += kScaleExponent;
    }
    ans *= static_cast<double>(m);
  }
  if (expnt != 0) ans = std::ldexp(ans, static_cast<int>(expnt));
  return Clip01(ans);
}

// Pelz-Good asymptotic series for Pr(D_n <= x), accurate for small x*sqrt(n).
double KolmogorovCdfPelzGood(int64_t n, double x) {
  if (x <= 0.0) return 0.0;
  if (x >= 1.0) return 1.0;
  const double nd = static_cast<double>(n);
  const double pi2 = M_PI * M_PI, pi4 = pi2 * pi2, pi6 = pi4 * pi2;
  const double z = std::sqrt(nd) * x;
  const double z2 = z * z, z3 = z2 * z, z4 = z2 * z2, z6 = z4 * z2;
  const double qlog = -pi2 / 8 / z2;
  if (qlog < -708) return 0.0;
  double q = std::exp(qlog);

  const double k1a = -z2, k1b = pi2 / 4;
  const double k2a = 6 * z6 + 2 * z4, k2b = (2 * z4 - 5 * z2) * pi2 / 4,
               k2c = pi4 * (1 - 2 * z2) / 16;
  const double k3d = pi6 * (5 - 30 * z2) / 64, k3c = pi4 * (-60 * z2 + 212 * z4) / 16,
               k3b = pi2 * (135 * z4 - 96 * z6) / 4, k3a = -30 * z6 - 90 * std::pow(z, 8);

  double k[4] = {0, 0, 0, 0};
  const int64_t maxk = static_cast<int64_t>(std::ceil(16 * z / M_PI));
  for (int64_t kk = maxk; kk > 0; --kk) {
    const double m = 2.0 * kk - 1, m2 = m * m, m4 = m2 * m2, m6 = m4 * m2;
    const double qpower = std::pow(q, 8.0 * kk);
    const double coeffs[4] = {1.0, k1a + k1b * m2, k2a + k2b * m2 + k2c * m4,
                              k3a + k3b * m2 + k3c * m4 + k3d * m6};
    for (int i = 0; i < 4; ++i) k[i] = k[i] * qpower + coeffs[i];
  }
  const double sqrt2pi = std::sqrt(2 * M_PI);
  const double denom[4] = {z, 6 * z4, 72 * std::pow(z, 7), 6480 * std::pow(z, 10)};
  for (int i = 0; i < 4; ++i) k[i] = k[i] * q * sqrt2pi / denom[i];

  q = std::exp(-pi2 / 2 / z2);
  const double sqrt3z = std::sqrt(3.0) * z;
  double k2extra = 0, k3extra = 0;
  for (int64_t kk = maxk; kk > 0; --kk) {
    const double ks2 = static_cast<double>(kk) * kk;
    const double qp = std::pow(q, ks2);
    const double kspi = M_PI * kk;
    k2extra += ks2 * qp;
    k3extra += (sqrt3z + kspi) * (sqrt3z - kspi) * ks2 * qp;
  }
  k[2] += k2extra * pi2 * sqrt2pi / (-36 * z3);
  k[3] += k3extra * pi2 * sqrt2pi / (216 * z6);
  double sum = 0;
  for (int i = 0; i < 4; ++i) sum += k[i] / std::pow(nd, i / 2.0);
  return sum;
}

}  // namespace

double SmirnovSf(int64_t n, double x) {
  if (!(n > 0 && x >= 0.0 && x <= 1.0)) return kNaN;
  if (n == 1) return 1 - x;
  if (x == 0.0) return 1.0;
  if (x == 1.0) return 0.0;
  const double nd = static_cast<double>(n);
  // floor(n x) and its remainder alpha exactly: fma recovers the rounding error of n*x.
  const double nx = nd * x;
  const double nx_err = std::fma(nd, x, -nx);
  double nxfl_d = std::floor(nx);
  double alpha = (nx - nxfl_d) + nx_err;
  if (alpha < 0) {
    nxfl_d -= 1;
    alpha += 1;
  }
  if (alpha >= 1) {
    nxfl_d += 1;
    alpha -= 1;
  }
  const int64_t nxfl = static_cast<int64_t>(nxfl_d);

  if (nxfl == 0 || (nxfl == 1 && alpha == 0)) {
    const double cdf = x * std::exp((nd - 1) * std::log1p(x));
    return Clip01(1 - cdf);
  }
  if (-2 * nd * x * x < kMinLog) return 0.0;
  if (nxfl >= n - 1) return Clip01(std::exp(nd * std::log1p(-x)));
  if (n > kSmirnovMaxComputeN) {
    const double logp = -std::pow(6.0 * nd * x + 1, 2) / 18.0 / nd;
    return Clip01(logp < -M_LN2 ? std::exp(logp) : 1 + std::expm1(logp));
  }
  // Birnbaum-Tingey: sf = x * sum_{v=0}^{floor(n(1-x))} C(n,v) (1-x-v/n)^(n-v) (x+v/n)^(v-1).
  // Every term is positive and x*term <= 1, so the terms are summed directly from logs;
  // 1-x-v/n and x+v/n are formed from the exact split n x = nxfl + alpha.
  // The last term, v = n(1-x), is zero when n x is an integer, so it is left out.
  const int64_t num_terms = n - nxfl;
  const long double logn = std::log(static_cast<long double>(nd));
  const long double lgn1 = std::lgamma(static_cast<long double>(nd) + 1);
  const long double logx = std::log(static_cast<long double>(x));
  long double sum = 0;
  for (int64_t v = 0; v < num_terms; ++v) {
    const long double lower = static_cast<long double>(n - v - nxfl) - alpha;  // n(1-x) - v
    const long double upper = static_cast<long double>(nxfl + v) + alpha;      // n x + v
    if (lower <= 0) break;
    const long double log_binom = lgn1 - std::lgamma(static_cast<long double>(v) + 1) -
                                  std::lgamma(static_cast<long double>(n - v) + 1);
    const long double log_term = log_binom +
                                 static_cast<long double>(n - v) * (std::log(lower) - logn) +
                                 static_cast<long double>(v - 1) * (std::log(upper) - logn);
    const long double term = std::exp(logx + log_term);  // x * A_v
    sum += term;
    // scipy stops once the remaining terms cannot change the sum at double precision.
    if (term != 0) {
      if (4.0L * static_cast<long double>(num_terms - v) * term < DBL_EPSILON * sum &&
          v != num_terms - 1) {
        break;
      }
    } else if (v > n / 2) {
      break;
    }
  }
  return Clip01(static_cast<double>(sum));
}

double KolmogorovSf(int64_t n, double x) {
  if (n <= 0 || std::isnan(x)) return kNaN;
  if (x >= 1.0) return 0.0;
  if (x <= 0.0) return 1.0;
  const double nd = static_cast<double>(n);
  const double t = nd * x;
  if (t <= 1.0) {  // Ruben-Gambino: 1/2n <= x <= 1/n
    if (t <= 0.5) return 1.0;
    double prob;
    if (n <= 140) {
      prob = 1.0;
      for (int64_t i = 1; i <= n; ++i) prob *= static_cast<double>(i) * (1.0 / nd) * (2 * t - 1);
    } else {
      prob = std::exp(LogFactorialOverPower(nd) + nd * std::log(2 * t - 1));
    }
    return Clip01(1.0 - prob);
  }
  if (t >= nd - 1) return Clip01(2 * std::pow(1.0 - x, nd));  // Ruben-Gambino
  if (x >= 0.5) return Clip01(2 * SmirnovSf(n, x));

  const double nxsquared = t * x;
  if (n <= 140) {
    if (nxsquared <= 0.754693) return Clip01(1.0 - KolmogorovCdfDurbin(n, x));
    if (nxsquared <= 4) return Clip01(1.0 - KolmogorovCdfPomeranz(n, x));
    return Clip01(2 * SmirnovSf(n, x));  // Miller's approximation
  }
  if (nxsquared >= 370.0) return 0.0;
  if (nxsquared >= 2.2) return Clip01(2 * SmirnovSf(n, x));
  double cdf;
  if (n <= 100000 && nd * std::pow(x, 1.5) <= 1.4) {
    cdf = KolmogorovCdfDurbin(n, x);
  } else {
    cdf = KolmogorovCdfPelzGood(n, x);
  }
  return Clip01(1.0 - Clip01(cdf));
}

namespace {

// Pr(D_{n,n} >= h/n) = 2 * (C(2n,n-h) - C(2n,n-2h) + ...) / C(2n,n), Horner-like to avoid
// cancellation (scipy's _compute_prob_outside_square).
double ProbOutsideSquare(int64_t n, int64_t h) {
  double p = 0.0;
  for (int64_t k = n / h; k >= 0; --k) {
    double p1 = 1.0;
    for (int64_t j = 0; j < h; ++j) {
      p1 = static_cast<double>(n - k * h - j) * p1 / static_cast<double>(n + k * h + j + 1);
    }
    p = p1 * (1.0 - p);
  }
  return 2 * p;
}

int64_t FloorDiv(int64_t a, int64_t b) {
  const int64_t q = a / b;
  return (a % b != 0 && ((a < 0) != (b < 0))) ? q - 1 : q;
}

int64_t CeilDiv(int64_t a, int64_t b) { return -FloorDiv(-a, b); }

// 1 - (paths from (0,0) to (m,n) staying strictly inside |x/m - y/n| < h/lcm) / C(m+n,n),
// one sliding column at a time (scipy's _compute_outer_prob_inside_method).
double OuterProbInside(int64_t m, int64_t n, int64_t g, int64_t h) {
  if (m < n) std::swap(m, n);
  const int64_t mg = m / g;
  const int64_t ng = n / g;
  int64_t minj = 0;
  int64_t maxj = std::min(CeilDiv(h, mg), n + 1);
  int64_t curlen = maxj - minj;
  const int64_t len_a = std::min(2 * maxj + 2, n + 1);
  std::vector<double> a(static_cast<size_t>(len_a), 1.0);
  std::fill(a.begin() + minj, a.begin() + maxj, 0.0);
  for (int64_t i = 1; i <= m; ++i) {
    const int64_t lastminj = minj;
    const int64_t lastlen = curlen;
    minj = std::max<int64_t>(FloorDiv(ng * i - h, mg) + 1, 0);
    minj = std::min(minj, n);
    maxj = std::min(CeilDiv(ng * i + h, mg), n + 1);
    if (maxj <= minj) return 1.0;
    double val = minj == 0 ? 0.0 : 1.0;
    for (int64_t jj = 0; jj < maxj - minj; ++jj) {
      const int64_t j = jj + minj;
      val = (a[jj + minj - lastminj] * static_cast<double>(i) + val * static_cast<double>(j)) /
            static_cast<double>(i + j);
      a[jj] = val;
    }
    curlen = maxj - minj;
    if (lastlen > curlen) {
      const int64_t end = std::min<int64_t>(maxj - minj + (lastlen - curlen), len_a);
      std::fill(a.begin() + (maxj - minj), a.begin() + end, 1.0);
    }
  }
  return a[maxj - minj - 1];
}

}  // namespace

double TwoSampleExactSf(int64_t n1, int64_t n2, int64_t h) {
  if (n1 <= 0 || n2 <= 0 || h < 0) return kNaN;
  if (h == 0) return 1.0;
  double p;
  if (n1 == n2) {
    p = ProbOutsideSquare(n1, h);
  } else {
    p = OuterProbInside(n1, n2, std::gcd(n1, n2), h);
  }
  if (!(p >= 0.0 && p <= 1.0)) return kNaN;
  return p;
}

}  // namespace tessera::drift
