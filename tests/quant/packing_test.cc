// Bit packing of the AutoGPTQ layout: round trips for every width, AutoGPTQ's 3-bit word
// layout, and the CPU kernel reading what the packer wrote.
#include <random>

#include "gtest/gtest.h"
#include "kernels/cpu/cpu_backend.h"
#include "quant/gptq/quantizer.h"
#include "runtime/model/gptq_format.h"

namespace tessera {
namespace {

std::vector<uint32_t> RandomLevels(int64_t n, int bits, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<uint32_t> v(static_cast<size_t>(n));
  for (auto& x : v) x = rng() & ((1u << bits) - 1u);
  return v;
}

class PackingTest : public ::testing::TestWithParam<int> {};

TEST_P(PackingTest, RowsAndColumnsRoundTripForOddShapes) {
  const int bits = GetParam();
  for (auto [rows, cols] : {std::pair<int64_t, int64_t>{64, 8}, {172, 5}, {33, 7}, {1, 3}, {96, 1}}) {
    const auto v = RandomLevels(rows * cols, bits, static_cast<uint32_t>(rows * 31 + cols));
    const auto by_rows = GptqPackRows(v, rows, cols, bits);
    EXPECT_EQ(static_cast<int64_t>(by_rows.size()), GptqPackedWords(rows, bits) * cols);
    EXPECT_EQ(GptqUnpackRows(by_rows.data(), rows, cols, bits), v) << rows << "x" << cols;
    const auto by_cols = GptqPackCols(v, rows, cols, bits);
    EXPECT_EQ(static_cast<int64_t>(by_cols.size()), rows * GptqPackedWords(cols, bits));
    EXPECT_EQ(GptqUnpackCols(by_cols.data(), rows, cols, bits), v) << rows << "x" << cols;
  }
}

INSTANTIATE_TEST_SUITE_P(Bits, PackingTest, ::testing::Values(2, 3, 4, 8));

TEST(PackingTest, FourBitsPutInputZeroInTheLowNibble) {
  std::vector<uint32_t> v(8);
  for (int i = 0; i < 8; ++i) v[i] = static_cast<uint32_t>(i + 1);
  const auto p = GptqPackRows(v, 8, 1, 4);
  ASSERT_EQ(p.size(), 1u);
  EXPECT_EQ(static_cast<uint32_t>(p[0]), 0x87654321u);
}

TEST(PackingTest, ThreeBitsStraddleWordsAsAutoGptqPacksThem) {
  // AutoGPTQ: values 0..9 at bits 3i of word 0, value 10 split (2 low bits at 30, high bit
  // at bit 0 of word 1), 11..20 at 3(i-11)+1, value 21 split (low bit at 31, two high bits
  // at 0 of word 2), 22..31 at 3(i-22)+2.
  std::vector<uint32_t> v(32);
  for (int i = 0; i < 32; ++i) v[i] = static_cast<uint32_t>((i * 5 + 3) & 7);
  uint32_t w[3] = {0, 0, 0};
  for (int i = 0; i < 10; ++i) w[0] |= v[i] << (3 * i);
  w[0] |= v[10] << 30;
  w[1] |= (v[10] >> 2) & 1;
  for (int i = 11; i < 21; ++i) w[1] |= v[i] << (3 * (i - 11) + 1);
  w[1] |= v[21] << 31;
  w[2] |= (v[21] >> 1) & 3;
  for (int i = 22; i < 32; ++i) w[2] |= v[i] << (3 * (i - 22) + 2);
  const auto p = GptqPackRows(v, 32, 1, 3);
  ASSERT_EQ(p.size(), 3u);
  for (int k = 0; k < 3; ++k) EXPECT_EQ(static_cast<uint32_t>(p[k]), w[k]) << "word " << k;
}

class KernelDequantTest : public ::testing::TestWithParam<int> {};

TEST_P(KernelDequantTest, CpuKernelReadsWhatThePackerWrote) {
  const int bits = GetParam();
  const int64_t out = 13, in = 44;  // neither a multiple of 32 / bits
  std::mt19937 rng(7);
  std::normal_distribution<float> n(0.0f, 1.0f);
  std::vector<float> w(out * in);
  for (float& x : w) x = n(rng);
  quant::QuantizeOptions o;
  o.bits = bits;
  o.group_size = 4;
  o.sym = false;
  auto q = quant::QuantizeRtn(w.data(), out, in, o);
  ASSERT_TRUE(q.ok()) << q.status();
  for (bool minus_one : {false, true}) {
    std::vector<uint32_t> stored = q->zeros;
    if (minus_one)
      for (auto& z : stored) z -= 1;
    const auto qweight = GptqPackRows(q->q, in, out, bits);
    const auto qzeros = GptqPackCols(stored, q->num_groups(), out, bits);
    QuantizedWeight qw;
    qw.bits = bits;
    qw.group_size = 4;
    qw.in_features = in;
    qw.out_features = out;
    qw.qweight = qweight.data();
    qw.qzeros = qzeros.data();
    qw.scales = q->scales.data();
    qw.zeros_minus_one = minus_one;
    std::vector<float> got(out * in);
    CpuDequantizeGptq(qw, got.data());
    EXPECT_EQ(got, q->Dequantize()) << "zeros_minus_one " << minus_one;
  }
}

INSTANTIATE_TEST_SUITE_P(Bits, KernelDequantTest, ::testing::Values(2, 3, 4, 8));

}  // namespace
}  // namespace tessera
