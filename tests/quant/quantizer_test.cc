// RTN and GPTQ on single layers: grid accuracy, and GPTQ's lower output error on
// correlated inputs (the case its Hessian-aware error propagation exists for).
#include <cmath>
#include <random>

#include "gtest/gtest.h"
#include "quant/gptq/quantizer.h"
#include "runtime/common/dtype.h"

namespace tessera::quant {
namespace {

std::vector<float> Normal(int64_t n, uint32_t seed, float stddev = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, stddev);
  std::vector<float> v(static_cast<size_t>(n));
  for (float& x : v) x = d(rng);
  return v;
}

// X = Z · M: rows of inputs whose features are strongly correlated.
std::vector<float> CorrelatedInputs(int64_t rows, int64_t in, uint32_t seed) {
  const auto z = Normal(rows * in, seed);
  const auto m = Normal(in * in, seed + 1, 1.0f / std::sqrt(static_cast<float>(in)));
  std::vector<float> x(static_cast<size_t>(rows * in), 0.0f);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t k = 0; k < in; ++k)
      for (int64_t j = 0; j < in; ++j) x[r * in + j] += z[r * in + k] * m[k * in + j];
  return x;
}

// ‖W Xᵀ − Ŵ Xᵀ‖²
double OutputError(const std::vector<float>& w, const std::vector<float>& wq, const std::vector<float>& x, int64_t out,
                   int64_t in) {
  const int64_t rows = static_cast<int64_t>(x.size()) / in;
  double e = 0.0;
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t o = 0; o < out; ++o) {
      double d = 0.0;
      for (int64_t i = 0; i < in; ++i) d += (static_cast<double>(w[o * in + i]) - wq[o * in + i]) * x[r * in + i];
      e += d * d;
    }
  return e;
}

TEST(RtnTest, DequantizedWeightIsWithinHalfAStepOfTheOriginal) {
  const int64_t out = 24, in = 64;
  const auto w = Normal(out * in, 3);
  for (int bits : {2, 3, 4, 8}) {
    for (bool sym : {true, false}) {
      QuantizeOptions o;
      o.bits = bits;
      o.group_size = 16;
      o.sym = sym;
      auto q = QuantizeRtn(w.data(), out, in, o);
      ASSERT_TRUE(q.ok()) << q.status();
      const auto deq = q->Dequantize();
      for (int64_t r = 0; r < out; ++r) {
        for (int64_t i = 0; i < in; ++i) {
          const int64_t g = q->g_idx[i];
          const float step = F16ToF32(q->scales[g * out + r]);
          const float orig = w[r * in + i];
          // Values past the grid's ends (symmetric grids reach only 2^(b-1) - 1 steps above
          // zero; the fp16-rounded scale may fall short by a hair) clip to the end.
          const int zero = static_cast<int>(q->zeros[g * out + r]);
          const float top = step * static_cast<float>((1 << bits) - 1 - zero);
          const float bottom = -step * static_cast<float>(zero);
          if (orig > top || orig < bottom) {
            EXPECT_FLOAT_EQ(deq[r * in + i], orig > top ? top : bottom);
            continue;
          }
          EXPECT_LE(std::abs(deq[r * in + i] - orig), 0.5f * step * (1.0f + 1e-5f))
              << "bits " << bits << " sym " << sym << " at " << r << "," << i;
        }
      }
    }
  }
}

TEST(RtnTest, AsymmetricZeroPointIsNeverZero) {
  // A group of non-negative weights would get zero point 0, which AutoGPTQ v1 cannot store.
  std::vector<float> w = {0.1f, 0.5f, 0.9f, 0.3f, -0.2f, 0.4f, 0.0f, 0.7f};
  QuantizeOptions o;
  o.bits = 4;
  o.group_size = 4;
  o.sym = false;
  auto q = QuantizeRtn(w.data(), 1, 8, o);
  ASSERT_TRUE(q.ok());
  for (uint32_t z : q->zeros) EXPECT_GE(z, 1u);
  const auto deq = q->Dequantize();
  for (int i = 0; i < 8; ++i) EXPECT_NEAR(deq[i], w[i], 0.5f * F16ToF32(q->scales[i / 4]) * 1.0001f);
}

TEST(RtnTest, GroupSizeThatDoesNotDivideInputsIsRejected) {
  std::vector<float> w(2 * 172, 0.5f);
  QuantizeOptions o;
  o.group_size = 128;
  auto q = QuantizeRtn(w.data(), 2, 172, o);
  ASSERT_FALSE(q.ok());
  EXPECT_NE(q.status().message().find("does not divide in_features 172"), std::string::npos) << q.status();
}

struct GptqCase {
  int bits;
  bool act_order;
  int group_size;
};

class GptqVsRtnTest : public ::testing::TestWithParam<GptqCase> {};

TEST_P(GptqVsRtnTest, LowerLayerOutputErrorThanRtnOnCorrelatedInputs) {
  const GptqCase c = GetParam();
  const int64_t out = 32, in = 64, rows = 512;
  const auto w = Normal(out * in, 11);
  const auto x = CorrelatedInputs(rows, in, 12);
  HessianAccumulator acc(in);
  acc.Add(x.data(), rows);
  QuantizeOptions o;
  o.bits = c.bits;
  o.group_size = c.group_size;
  o.act_order = c.act_order;
  auto rtn = QuantizeRtn(w.data(), out, in, o);
  auto gptq = QuantizeGptq(w.data(), out, in, acc.Hessian(), o);
  ASSERT_TRUE(rtn.ok() && gptq.ok()) << rtn.status() << gptq.status();
  const double e_rtn = OutputError(w, rtn->Dequantize(), x, out, in);
  const double e_gptq = OutputError(w, gptq->Dequantize(), x, out, in);
  EXPECT_LT(e_gptq, 0.8 * e_rtn) << "gptq " << e_gptq << " rtn " << e_rtn;
}

INSTANTIATE_TEST_SUITE_P(Configs, GptqVsRtnTest,
                         ::testing::Values(GptqCase{4, false, 16}, GptqCase{4, true, 16}, GptqCase{3, false, 16},
                                           GptqCase{3, true, 16}, GptqCase{4, true, -1}, GptqCase{3, false, -1}),
                         [](const auto& info) {
                           return "bits" + std::to_string(info.param.bits) + (info.param.act_order ? "_actorder" : "") +
                                  (info.param.group_size < 0 ? "_perchannel" : "_g16");
                         });

TEST(GptqTest, ActOrderGroupsFollowDescendingHessianDiagonal) {
  const int64_t out = 4, in = 8;
  const auto w = Normal(out * in, 5);
  std::vector<double> h(in * in, 0.0);
  const double diag[] = {1, 8, 2, 7, 3, 6, 4, 5};
  for (int i = 0; i < in; ++i) h[i * in + i] = diag[i];
  QuantizeOptions o;
  o.group_size = 2;
  o.act_order = true;
  auto q = QuantizeGptq(w.data(), out, in, h, o);
  ASSERT_TRUE(q.ok()) << q.status();
  // Order by descending diagonal: inputs 1, 3 | 5, 7 | 6, 4 | 2, 0 form groups 0..3.
  const std::vector<int32_t> expected = {3, 0, 3, 0, 2, 1, 2, 1};
  EXPECT_EQ(q->g_idx, expected);
}

TEST(GptqTest, DeadInputsAreQuantizedToZeroWithoutNaN) {
  const int64_t out = 8, in = 32, rows = 128;
  const auto w = Normal(out * in, 21);
  auto x = CorrelatedInputs(rows, in, 22);
  for (int64_t r = 0; r < rows; ++r) x[r * in + 5] = x[r * in + 17] = 0.0f;
  HessianAccumulator acc(in);
  acc.Add(x.data(), rows);
  QuantizeOptions o;
  o.group_size = 8;
  o.act_order = true;
  auto q = QuantizeGptq(w.data(), out, in, acc.Hessian(), o);
  ASSERT_TRUE(q.ok()) << q.status();
  const auto deq = q->Dequantize();
  for (int64_t r = 0; r < out; ++r) {
    EXPECT_EQ(deq[r * in + 5], 0.0f);
    EXPECT_EQ(deq[r * in + 17], 0.0f);
    for (int64_t i = 0; i < in; ++i) EXPECT_TRUE(std::isfinite(deq[r * in + i]));
  }
}

}  // namespace
}  // namespace tessera::quant
