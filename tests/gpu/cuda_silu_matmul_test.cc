// SiluMulMatmul on CUDA: where the int4 decode kernel forms the activations while staging
// them (packed weights without act-order, up to kInt4SiluFuseMaxRows rows) its output is
// bit-identical to CUDA's SiluMul then Matmul, and every case (fused or falling back: more
// rows, act-order, odd widths, bf16 weights) matches the CPU reference. Skipped when no CUDA device is visible.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/backend.h"
#include "kernels/cpu/cpu_backend.h"
#include "tests/gpu/gptq_test_util.h"
#include "tests/gpu/gpu_test_util.h"
#if TESSERA_HAVE_CUDA
#include "kernels/cuda/cuda_int4_launch.h"
#endif

namespace tessera {
namespace {

using namespace gpu_testing;  // NOLINT: the tests' own helpers

#if TESSERA_HAVE_CUDA
constexpr int64_t kFusedRows = cuda::kInt4SiluFuseMaxRows;
#else
constexpr int64_t kFusedRows = 0;  // the tests skip
#endif

class CudaSiluMatmulTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!CudaBackendAvailable()) GTEST_SKIP() << "no CUDA device visible";
    gpu_ = Must(CreateBackend("cuda"));
  }
  std::unique_ptr<Backend> gpu_;
  CpuBackend cpu_;
  std::mt19937 rng_{2024};
};

// The raw bytes of a device tensor, for bit-for-bit comparisons.
std::vector<uint8_t> Bytes(Backend& b, const TensorView& v) { return GetRaw<uint8_t>(b, v.data, v.bytes()); }

bool AllNaN(const std::vector<float>& v) {
  for (float x : v) {
    if (!std::isnan(x)) return false;
  }
  return true;
}

// The CPU reference of the down projection on gate_up: SiluMul in f32, the activations
// rounded to bf16 as CUDA's SiluMul stores them, then the CPU matmul.
std::vector<float> CpuReference(CpuBackend& cpu, const std::vector<float>& gu, int64_t rows, int64_t f,
                                const LinearWeight& w) {
  Tensor cgu = Put(cpu, gu, rows, 2 * f, DType::kF32), cact = Poisoned(cpu, rows, f, DType::kF32);
  cpu.SiluMul(cgu.view, cact.view);
  std::vector<float> act = Get(cpu, cact.view);
  for (float& a : act) a = BF16ToF32(F32ToBF16(a));
  Tensor ca = Put(cpu, act, rows, f, DType::kF32), co = Poisoned(cpu, rows, w.out_features(), DType::kF32);
  cpu.Matmul(ca.view, w, co.view);
  return Get(cpu, co.view);
}

// One weight over several row counts and both output dtypes: SiluMulMatmul against SiluMul
// then Matmul on the same backend (bit for bit) and against the CPU reference. Fused rows
// (up to kFusedRows when `fusable`): the call must not have touched act (the activations
// were formed inside the matmul).
void ExpectSameAsUnfused(Backend& gpu, CpuBackend& cpu, const LinearWeight& gw, const LinearWeight& cw,
                         const std::vector<int64_t>& row_counts, bool fusable, double f32_tol,
                         const std::string& what, std::mt19937& rng) {
  const int64_t f = gw.in_features(), m = gw.out_features();
  for (int64_t rows : row_counts) {
    // Gates over [-8, 8] reach both tails of silu.
    const std::vector<float> gu = RandomBf16(rows * 2 * f, rng, 3.0f);
    Tensor ggu = Put(gpu, gu, rows, 2 * f, DType::kBF16);
    const std::vector<float> ref = CpuReference(cpu, gu, rows, f, cw);
    const bool fused = fusable && rows <= kFusedRows;
    for (DType dt : {DType::kBF16, DType::kF32}) {
      const std::string at = what + " rows " + std::to_string(rows) + " out " + std::string(DTypeName(dt));
      Tensor act = Poisoned(gpu, rows, f, DType::kBF16), unfused = Poisoned(gpu, rows, m, dt);
      gpu.SiluMul(ggu.view, act.view);
      gpu.Matmul(act.view, gw, unfused.view);
      Tensor scratch = Poisoned(gpu, rows, f, DType::kBF16), out = Poisoned(gpu, rows, m, dt);
      gpu.SiluMulMatmul(ggu.view, scratch.view, gw, out.view);
      EXPECT_EQ(Bytes(gpu, out.view), Bytes(gpu, unfused.view)) << at;
      if (fused) EXPECT_TRUE(AllNaN(Get(gpu, scratch.view))) << at << ": act was written, the call was not fused";
      // f32 outputs keep the kernel's own error (accumulation order, or f32_tol) and the rare
      // act that CPU and CUDA expf round to neighbouring bf16 values; bf16 outputs their rounding.
      EXPECT_LT(RelError(Get(gpu, out.view), ref), dt == DType::kF32 ? f32_tol : 1e-2) << at;
    }
  }
}

// Both sides of the fusion's row limit, the decode kernel's two row tiles, the tile kernel.
const std::vector<int64_t> kRows = {1, 3, 4, 5, 8, 16, 17};

TEST_F(CudaSiluMatmulTest, FusedInt4DownProjectionIsBitIdenticalToSiluMulThenMatmul) {
  // Half of Llama-7B's down projection (group 128), and F = 1008 with group 48: not a
  // multiple of the 64-input chunk (the staged tail is zero-filled) and groups straddling
  // chunks. Rows past the fusion's limit run unfused.
  for (GptqCase c : {GptqCase{4, 5504, 512, 128, false, false}, GptqCase{4, 1008, 200, 48, false, true},
                     GptqCase{4, 4096, 512, -1, false, false}}) {
    const HostGptq h = RandomGptq(c, rng_);
    DeviceGptq cw = Upload(cpu_, h), gw = UploadPacked(*gpu_, h);
    ASSERT_NE(gw.q.packed, nullptr) << Describe(c, 0);
    LinearWeight cl, gl;
    cl.quant = &cw.q;
    gl.quant = &gw.q;
    ExpectSameAsUnfused(*gpu_, cpu_, gl, cl, kRows, /*fusable=*/true, 1e-4, Describe(c, 0), rng_);
  }
}

TEST_F(CudaSiluMatmulTest, Int4WeightsTheFusedKernelDoesNotTakeFallBackToSiluMulThenMatmul) {
  // Act-order (the activations are gathered first), F = 172 (not a multiple of 8: re-strided
  // rows), and a weight left in the AutoGPTQ layout (group 8 has no packed kernel).
  for (GptqCase c : {GptqCase{4, 512, 320, 128, true, false}, GptqCase{4, 172, 96, -1, false, true},
                     GptqCase{4, 64, 96, 8, false, false}}) {
    const HostGptq h = RandomGptq(c, rng_);
    DeviceGptq cw = Upload(cpu_, h), gw = c.group_size == 8 ? Upload(*gpu_, h) : UploadPacked(*gpu_, h);
    LinearWeight cl, gl;
    cl.quant = &cw.q;
    gl.quant = &gw.q;
    // The AutoGPTQ tensor-core GEMM (17 rows) rounds each dequantised weight to bf16.
    const double f32_tol = c.group_size == 8 ? 5e-3 : 1e-4;
    ExpectSameAsUnfused(*gpu_, cpu_, gl, cl, kRows, /*fusable=*/false, f32_tol, Describe(c, 0), rng_);
  }
}

TEST_F(CudaSiluMatmulTest, Bf16DownProjectionMatchesSiluMulThenMatmul) {
  // Rows 1-4 take the skinny GEMV, 5-8 and 33 cuBLASLt; both stay unfused.
  const int64_t f = 1376, m = 512;
  const std::vector<float> w = RandomBf16(m * f, rng_, 0.05f);
  Tensor cw = Put(cpu_, w, m, f, DType::kBF16), gw = Put(*gpu_, w, m, f, DType::kBF16);
  ExpectSameAsUnfused(*gpu_, cpu_, LinearWeight{gw.view}, LinearWeight{cw.view}, {1, 2, 3, 4, 5, 6, 7, 8, 33},
                      /*fusable=*/false, 1e-4, "bf16 " + std::to_string(m) + "x" + std::to_string(f), rng_);
}

// gate_up written by the int4 gate_up projection and read by the fused down projection in
// one captured graph: launched as a programmatic dependent, the fused kernel streams its
// weights early but must stage gate_up only after the kernel before it is done. gate_up
// and the output start as NaN before every replay.
TEST_F(CudaSiluMatmulTest, FusedDownProjectionInAGraphReadsGateUpAfterItIsWritten) {
  const int64_t hidden = 1024, f = 2816;
  const HostGptq hg = RandomGptq({4, hidden, 2 * f, 128, false, false}, rng_);
  const HostGptq hd = RandomGptq({4, f, hidden, 128, false, true}, rng_);
  DeviceGptq gg = UploadPacked(*gpu_, hg), gd = UploadPacked(*gpu_, hd);
  ASSERT_NE(gg.q.packed, nullptr);
  ASSERT_NE(gd.q.packed, nullptr);
  LinearWeight lg, ld;
  lg.quant = &gg.q;
  ld.quant = &gd.q;
  const std::vector<float> nan(16 * 2 * f, std::numeric_limits<float>::quiet_NaN());
  std::vector<uint16_t> nan_bf16(nan.size());
  ConvertFromF32(nan.data(), DType::kBF16, nan_bf16.data(), nan.size());
  for (int64_t rows : {int64_t{1}, kFusedRows, int64_t{16}}) {
    Tensor x = Put(*gpu_, RandomBf16(rows * hidden, rng_), rows, hidden, DType::kBF16);
    Tensor gu = Poisoned(*gpu_, rows, 2 * f, DType::kBF16), act = Poisoned(*gpu_, rows, f, DType::kBF16);
    Tensor out = Poisoned(*gpu_, rows, hidden, DType::kBF16), ref = Poisoned(*gpu_, rows, hidden, DType::kBF16);
    // The unfused chain eagerly (also sizing the workspace before the capture).
    gpu_->Matmul(x.view, lg, gu.view);
    gpu_->SiluMul(gu.view, act.view);
    gpu_->Matmul(act.view, ld, ref.view);
    const std::vector<uint8_t> want = Bytes(*gpu_, ref.view);
    ASSERT_TRUE(gpu_->BeginCapture().ok());
    gpu_->Matmul(x.view, lg, gu.view);
    gpu_->SiluMulMatmul(gu.view, act.view, ld, out.view);
    auto graph = gpu_->EndCapture();
    ASSERT_TRUE(graph.ok()) << graph.status();
    for (int replay = 0; replay < 3; ++replay) {
      ASSERT_TRUE(gpu_->CopyToDevice(gu.buf.data(), nan_bf16.data(), gu.view.bytes()).ok());
      ASSERT_TRUE(gpu_->CopyToDevice(out.buf.data(), nan_bf16.data(), out.view.bytes()).ok());
      ASSERT_TRUE(gpu_->Replay(*graph).ok());
      EXPECT_EQ(Bytes(*gpu_, out.view), want) << rows << " rows, replay " << replay;
    }
    gpu_->ClearGraphs();
  }
}

}  // namespace
}  // namespace tessera
