// Loading GPTQ linears: act-order reordering (the CPU matmul then equals a dense matmul with
// the dequantized, unpermuted weight), both zero conventions, and a clear error for every
// kind of bad checkpoint.
#include <filesystem>
#include <random>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/cpu/cpu_backend.h"
#include "quant/gptq/quantizer.h"
#include "runtime/common/thread_pool.h"
#include "runtime/model/gptq_loader.h"
#include "runtime/model/safetensors.h"

namespace tessera {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

constexpr int64_t kOut = 12, kIn = 48;

std::vector<float> Normal(int64_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, 1.0f);
  std::vector<float> v(static_cast<size_t>(n));
  for (float& x : v) x = d(rng);
  return v;
}

// The tensors of one linear "lin" as a checkpoint would hold them; tests break them.
struct LinearTensors {
  int bits = 4;
  std::vector<int64_t> qweight_shape, qzeros_shape, scales_shape, g_idx_shape;
  std::vector<int32_t> qweight, qzeros, g_idx;
  std::vector<uint16_t> scales;
  bool with_g_idx = true;
};

LinearTensors Pack(const quant::QuantizedLinear& q, bool minus_one) {
  LinearTensors t;
  t.bits = q.bits;
  std::vector<uint32_t> stored = q.zeros;
  if (minus_one)
    for (auto& z : stored) z -= 1;
  t.qweight = GptqPackRows(q.q, q.in_features, q.out_features, q.bits);
  t.qzeros = GptqPackCols(stored, q.num_groups(), q.out_features, q.bits);
  t.scales = q.scales;
  t.g_idx = q.g_idx;
  t.qweight_shape = {GptqPackedWords(q.in_features, q.bits), q.out_features};
  t.qzeros_shape = {q.num_groups(), GptqPackedWords(q.out_features, q.bits)};
  t.scales_shape = {q.num_groups(), q.out_features};
  t.g_idx_shape = {q.in_features};
  return t;
}

class GptqLoaderTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = (fs::temp_directory_path() / ("tessera_gptq_loader_" + std::to_string(::getpid()) + "_" +
                                         ::testing::UnitTest::GetInstance()->current_test_info()->name()))
               .string();
    fs::create_directories(dir_);
    w_ = Normal(kOut * kIn, 1);
    // Inputs with one dominant direction so act-order's permutation is far from identity.
    const auto x = Normal(256 * kIn, 2);
    quant::HessianAccumulator acc(kIn);
    std::vector<float> scaled = x;
    for (int64_t r = 0; r < 256; ++r)
      for (int64_t i = 0; i < kIn; ++i) scaled[r * kIn + i] *= 1.0f + static_cast<float>((i * 7) % kIn) / 4.0f;
    acc.Add(scaled.data(), 256);
    hessian_ = acc.Hessian();
  }
  void TearDown() override { fs::remove_all(dir_); }

  quant::QuantizedLinear Quantize(int bits, int group_size, bool act_order) {
    quant::QuantizeOptions o;
    o.bits = bits;
    o.group_size = group_size;
    o.act_order = act_order;
    o.sym = false;
    auto q = quant::QuantizeGptq(w_.data(), kOut, kIn, hessian_, o);
    EXPECT_TRUE(q.ok()) << q.status();
    return *q;
  }

  absl::StatusOr<GptqHostWeight> Load(const LinearTensors& t, const GptqConfig& config) {
    std::vector<TensorToWrite> ts = {
        {"lin.qweight", DType::kI32, t.qweight_shape, t.qweight.data(), t.qweight.size() * 4},
        {"lin.qzeros", DType::kI32, t.qzeros_shape, t.qzeros.data(), t.qzeros.size() * 4},
        {"lin.scales", DType::kF16, t.scales_shape, t.scales.data(), t.scales.size() * 2}};
    if (t.with_g_idx) ts.push_back({"lin.g_idx", DType::kI32, t.g_idx_shape, t.g_idx.data(), t.g_idx.size() * 4});
    EXPECT_TRUE(WriteSafetensors(dir_ + "/model.safetensors", ts).ok());
    auto store = WeightStore::Open(dir_);
    if (!store.ok()) return store.status();
    return LoadGptqLinear(**store, "lin", kIn, kOut, config);
  }

  static GptqConfig Config(int bits, int group_size, bool desc_act, bool v1) {
    GptqConfig c;
    c.bits = bits;
    c.group_size = group_size;
    c.desc_act = desc_act;
    c.format = v1 ? GptqCheckpointFormat::kGptqV1 : GptqCheckpointFormat::kGptqV2;
    return c;
  }

  std::string dir_;
  std::vector<float> w_;
  std::vector<double> hessian_;
};

TEST_F(GptqLoaderTest, ActOrderIsReorderedAndCpuMatmulEqualsDenseMatmul) {
  for (int bits : {2, 3, 4, 8}) {
    SCOPED_TRACE("bits " + std::to_string(bits));
    const quant::QuantizedLinear q = Quantize(bits, 8, /*act_order=*/true);
    bool sorted = true;
    for (int64_t i = 0; i < kIn; ++i) sorted = sorted && q.g_idx[i] == i / 8;
    ASSERT_FALSE(sorted) << "the test needs a non-trivial act-order";
    auto w = Load(Pack(q, true), Config(bits, 8, true, true));
    ASSERT_TRUE(w.ok()) << w.status();
    ASSERT_EQ(w->perm.size(), static_cast<size_t>(kIn));
    for (int64_t j = 0; j < kIn; ++j) EXPECT_EQ(q.g_idx[w->perm[j]], j / 8) << "groups contiguous after reordering";

    const int64_t n = 5;
    const auto x = Normal(n * kIn, 9);
    const QuantizedWeight view = w->View();
    LinearWeight lw;
    lw.quant = &view;
    CpuBackend backend;
    std::vector<float> got(n * kOut), want(n * kOut);
    backend.Matmul(TensorView{const_cast<float*>(x.data()), DType::kF32, n, kIn}, lw,
                   TensorView{got.data(), DType::kF32, n, kOut});
    const std::vector<float> dense = q.Dequantize();
    CpuMatmulDense(ThreadPool::Default(), x.data(), n, kIn, dense.data(), DType::kF32, kOut, want.data());
    for (int64_t i = 0; i < n * kOut; ++i) EXPECT_NEAR(got[i], want[i], 1e-4f * (1.0f + std::abs(want[i])));
  }
}

TEST_F(GptqLoaderTest, VersionOneAndTwoZerosDequantizeAlike) {
  const quant::QuantizedLinear q = Quantize(3, 16, false);
  auto v1 = Load(Pack(q, true), Config(3, 16, false, true));
  ASSERT_TRUE(v1.ok()) << v1.status();
  EXPECT_TRUE(v1->zeros_minus_one);
  EXPECT_TRUE(v1->perm.empty());
  std::vector<float> a(kOut * kIn), b(kOut * kIn);
  CpuDequantizeGptq(v1->View(), a.data());
  auto v2 = Load(Pack(q, false), Config(3, 16, false, false));
  ASSERT_TRUE(v2.ok()) << v2.status();
  EXPECT_FALSE(v2->zeros_minus_one);
  CpuDequantizeGptq(v2->View(), b.data());
  EXPECT_EQ(a, b);
  EXPECT_EQ(a, q.Dequantize());
}

TEST_F(GptqLoaderTest, MissingGIdxWithoutActOrderMeansSequentialGroups) {
  const quant::QuantizedLinear q = Quantize(4, 16, false);
  LinearTensors t = Pack(q, true);
  t.with_g_idx = false;
  auto w = Load(t, Config(4, 16, false, true));
  ASSERT_TRUE(w.ok()) << w.status();
  std::vector<float> got(kOut * kIn);
  CpuDequantizeGptq(w->View(), got.data());
  EXPECT_EQ(got, q.Dequantize());
}

TEST_F(GptqLoaderTest, WrongPackingShapeIsAnError) {
  LinearTensors t = Pack(Quantize(4, 16, false), true);
  t.qweight_shape = {kIn * 4 / 32 + 1, kOut};
  t.qweight.resize(static_cast<size_t>((kIn * 4 / 32 + 1) * kOut));
  auto w = Load(t, Config(4, 16, false, true));
  ASSERT_FALSE(w.ok());
  EXPECT_THAT(std::string(w.status().message()), HasSubstr("lin.qweight' has shape [7, 12], expected [6, 12]"));

  t = Pack(Quantize(4, 16, false), true);
  t.qzeros_shape = {3, kOut};
  t.qzeros.resize(3 * kOut);
  w = Load(t, Config(4, 16, false, true));
  ASSERT_FALSE(w.ok());
  EXPECT_THAT(std::string(w.status().message()), HasSubstr("lin.qzeros' has shape [3, 12], expected [3, 2]"));
}

TEST_F(GptqLoaderTest, GroupSizeNotDividingInputsIsAnError) {
  auto w = Load(Pack(Quantize(4, 16, false), true), Config(4, 20, false, true));
  ASSERT_FALSE(w.ok());
  EXPECT_THAT(std::string(w.status().message()), HasSubstr("group_size 20 does not divide in_features 48"));
}

TEST_F(GptqLoaderTest, ActOrderWithoutGIdxIsAnError) {
  LinearTensors t = Pack(Quantize(4, 16, true), true);
  t.with_g_idx = false;
  auto w = Load(t, Config(4, 16, true, true));
  ASSERT_FALSE(w.ok());
  EXPECT_THAT(std::string(w.status().message()), HasSubstr("lacks 'lin.g_idx'"));
}

TEST_F(GptqLoaderTest, GIdxOutOfRangeIsAnError) {
  LinearTensors t = Pack(Quantize(4, 16, true), true);
  t.g_idx[7] = 3;  // 48 / 16 = 3 groups: 0..2
  auto w = Load(t, Config(4, 16, true, true));
  ASSERT_FALSE(w.ok());
  EXPECT_THAT(std::string(w.status().message()), HasSubstr("lin.g_idx[7] = 3 is outside [0, 3)"));
  t.g_idx[7] = -1;
  w = Load(t, Config(4, 16, true, true));
  ASSERT_FALSE(w.ok());
  EXPECT_THAT(std::string(w.status().message()), HasSubstr("lin.g_idx[7] = -1"));
}

TEST_F(GptqLoaderTest, UnevenGroupsInGIdxAreAnError) {
  LinearTensors t = Pack(Quantize(4, 16, false), true);
  t.g_idx[0] = 1;  // group 0 now has 15 members, group 1 has 17
  auto w = Load(t, Config(4, 16, false, true));
  ASSERT_FALSE(w.ok());
  EXPECT_THAT(std::string(w.status().message()), HasSubstr("does not hold exactly 16 input features"));
}

TEST_F(GptqLoaderTest, UnsupportedBitsAreAnError) {
  auto c = GptqConfig::FromJsonText(R"({"bits": 5, "group_size": 16, "desc_act": false})", "quantize_config.json");
  ASSERT_FALSE(c.ok());
  EXPECT_THAT(std::string(c.status().message()), HasSubstr("bits 5 is not supported"));
  c = GptqConfig::FromJsonText(R"({"bits": 4, "checkpoint_format": "marlin"})", "quantize_config.json");
  ASSERT_FALSE(c.ok());
  EXPECT_THAT(std::string(c.status().message()), HasSubstr("checkpoint_format \"marlin\" is not supported"));
}

TEST_F(GptqLoaderTest, ConfigRoundTripsThroughJson) {
  GptqConfig c = Config(3, -1, true, false);
  c.sym = false;
  auto back = GptqConfig::FromJsonText(c.ToJson(), "roundtrip");
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->bits, 3);
  EXPECT_EQ(back->group_size, -1);
  EXPECT_TRUE(back->desc_act);
  EXPECT_FALSE(back->sym);
  EXPECT_EQ(back->format, GptqCheckpointFormat::kGptqV2);
}

TEST_F(GptqLoaderTest, StackingGateAndUpKeepsEachHalf) {
  const quant::QuantizedLinear q = Quantize(3, 16, false);
  auto a = Load(Pack(q, true), Config(3, 16, false, true));
  ASSERT_TRUE(a.ok());
  auto both = ConcatGptqOutFeatures(*a, *a);
  ASSERT_TRUE(both.ok()) << both.status();
  std::vector<float> got(2 * kOut * kIn);
  CpuDequantizeGptq(both->View(), got.data());
  const auto want = q.Dequantize();
  EXPECT_EQ(std::vector<float>(got.begin(), got.begin() + kOut * kIn), want);
  EXPECT_EQ(std::vector<float>(got.begin() + kOut * kIn, got.end()), want);
}

}  // namespace
}  // namespace tessera
