// GPTQ matmul and multi-LoRA on the CUDA backend against the CPU reference, over the same
// bf16-rounded inputs: GEMV (decode) and tensor-core GEMM (prefill) batches, 2/4/8 bits,
// odd feature counts, every group-size shape, act-order and both zero conventions, on the
// AutoGPTQ arrays and on the backend's repacked int4 layout; LoRA
// with mixed slots, several ranks, every target and the gate/up column offset.
// Skipped when no CUDA device is visible.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/backend.h"
#if TESSERA_HAVE_CUDA
#include <cuda_runtime.h>

#include "kernels/cuda/cuda_backend_impl.h"
#include "kernels/cuda/cuda_int4_launch.h"
#include "kernels/cuda/int4_layout.h"
#endif
#include "kernels/cpu/cpu_backend.h"
#include "tests/gpu/gptq_test_util.h"
#include "tests/gpu/gpu_test_util.h"

namespace tessera {
namespace {

using namespace gpu_testing;  // NOLINT: the tests' own helpers

class CudaQuantTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!CudaBackendAvailable()) GTEST_SKIP() << "no CUDA device visible";
    gpu_ = Must(CreateBackend("cuda"));
  }
  std::unique_ptr<Backend> gpu_;
  CpuBackend cpu_;
  std::mt19937 rng_{4321};
};

// ---- GPTQ ----------------------------------------------------------------------------


// Whether the CUDA backend runs this product as dequantise + dense GEMM.
bool DenseInt4Gemm(Backend& gpu, const QuantizedWeight& q, int64_t rows) {
#if TESSERA_HAVE_CUDA
  auto* cuda_backend = dynamic_cast<CudaBackend*>(&gpu);
  return cuda_backend != nullptr && cuda_backend->Int4TakesDenseGemm(q, rows);
#else
  (void)gpu;
  (void)q;
  (void)rows;
  return false;
#endif
}

// Both weight layouts against the CPU reference. The AutoGPTQ-layout kernels: the decode
// GEMV dequantises exactly in f32; the tensor-core GEMM rounds each dequantised weight to
// bf16 (relative 2^-9), which averages down over the dot product. The repacked int4
// kernel: integer weights in the tensor cores and one f32 scale per group keep it as
// exact as the f32 reference for every row count.
void RunInt4Case(Backend& gpu, CpuBackend& cpu, const GptqCase& c, const std::vector<int64_t>& row_counts,
                 std::mt19937& rng, bool packed) {
  const HostGptq h = RandomGptq(c, rng);
  DeviceGptq cw = Upload(cpu, h), gw = packed ? UploadPacked(gpu, h) : Upload(gpu, h);
  if (packed) {
    ASSERT_NE(gw.q.packed, nullptr) << Describe(c, 0);
  } else {
    ASSERT_EQ(gw.q.packed, nullptr);
  }
  LinearWeight cl, gl;
  cl.quant = &cw.q;
  gl.quant = &gw.q;
  for (int64_t rows : row_counts) {
    const std::vector<float> x = RandomBf16(rows * c.in, rng);
    Tensor cx = Put(cpu, x, rows, c.in, DType::kF32), gx = Put(gpu, x, rows, c.in, DType::kBF16);
    Tensor co = Poisoned(cpu, rows, c.out, DType::kF32);
    cpu.Matmul(cx.view, cl, co.view);
    const std::vector<float> ref = Get(cpu, co.view);
    for (DType dt : {DType::kBF16, DType::kF32}) {
      Tensor go = Poisoned(gpu, rows, c.out, dt);
      gpu.Matmul(gx.view, gl, go.view);
      // Many rows of a packed weight take the dense GEMM over its bf16-rounded dequantisation
      // (as the AutoGPTQ-layout GEMM rounds its weights).
      const bool exact = rows <= 8 || (packed && !DenseInt4Gemm(gpu, gw.q, rows));
      const double tol = dt == DType::kBF16 ? 1e-2 : (exact ? 1e-4 : 5e-3);
      EXPECT_LT(RelError(Get(gpu, go.view), ref), tol)
          << (packed ? "packed " : "") << Describe(c, rows) << " out " << DTypeName(dt);
    }
  }
}

void RunGptqCase(Backend& gpu, CpuBackend& cpu, const GptqCase& c, const std::vector<int64_t>& row_counts,
                 std::mt19937& rng) {
  RunInt4Case(gpu, cpu, c, row_counts, rng, /*packed=*/false);
}

void RunPackedInt4Case(Backend& gpu, CpuBackend& cpu, const GptqCase& c, const std::vector<int64_t>& row_counts,
                       std::mt19937& rng) {
  RunInt4Case(gpu, cpu, c, row_counts, rng, /*packed=*/true);
}

// Both sides of each kernel boundary: the decode kernel's one and two row tiles (up to 8 and
// 16 rows), then the tile kernel.
const std::vector<int64_t> kPackedRows = {1, 2, 3, 8, 9, 16, 17, 33, 128};

const std::vector<int64_t> kDecodeRows = {1, 2, 3, 5, 8};
const std::vector<int64_t> kPrefillRows = {9, 16, 33, 130};

TEST_F(CudaQuantTest, Int4MatchesCpuAtLlamaShapes) {
  for (GptqCase c : {GptqCase{4, 4096, 4096, 128, false, false}, GptqCase{4, 4096, 1024, 128, true, true}}) {
    RunGptqCase(*gpu_, cpu_, c, {1, 4, 8, 16, 37}, rng_);
  }
}

TEST_F(CudaQuantTest, Int4MatchesCpuForEveryGroupShapeAndZeroConvention) {
  for (int64_t g : {32, 64, 128, -1}) {
    for (bool act : {false, true}) {
      for (bool v1 : {false, true}) {
        GptqCase c{4, 512, 320, g, act, v1};
        RunGptqCase(*gpu_, cpu_, c, kDecodeRows, rng_);
        RunGptqCase(*gpu_, cpu_, c, kPrefillRows, rng_);
      }
    }
  }
}

TEST_F(CudaQuantTest, Int4MatchesCpuWhenFeaturesAreNotMultiplesOf32) {
  // in 172 ends mid-word (padding fields), out 1003 and 50 leave the 16-byte column loads.
  for (GptqCase c : {GptqCase{4, 172, 96, -1, true, true}, GptqCase{4, 256, 1003, 64, false, true},
                     GptqCase{4, 96, 50, 32, true, false}, GptqCase{4, 344, 172, -1, false, false},
                     GptqCase{4, 96, 64, 48, false, false}}) {
    RunGptqCase(*gpu_, cpu_, c, {1, 3, 8, 11, 40}, rng_);
  }
}

TEST_F(CudaQuantTest, PackedInt4MatchesCpuAtLlamaShapes) {
  for (GptqCase c : {GptqCase{4, 4096, 4096, 128, false, false}, GptqCase{4, 4096, 1024, 128, true, true},
                     GptqCase{4, 1024, 2752, 128, false, true}}) {
    RunPackedInt4Case(*gpu_, cpu_, c, {1, 2, 3, 8, 9, 16, 17, 64, 130}, rng_);
  }
}

TEST_F(CudaQuantTest, PackedInt4MatchesCpuForEveryGroupShapeAndZeroConvention) {
  for (int64_t g : {32, 64, 128, -1}) {
    for (bool act : {false, true}) {
      for (bool v1 : {false, true}) RunPackedInt4Case(*gpu_, cpu_, GptqCase{4, 512, 320, g, act, v1}, kPackedRows, rng_);
    }
  }
}

TEST_F(CudaQuantTest, PackedInt4MatchesCpuWhenShapesLeaveTheTiles) {
  // in 172 / 344 / 96 are not multiples of the 64-input chunk (172 not even of 8: the
  // activations are re-strided), out 1003 / 50 / 72 leave the 16- and 128-column tiles,
  // group 48 straddles chunks, group 16 puts four groups in one chunk.
  for (GptqCase c : {GptqCase{4, 172, 96, -1, true, true}, GptqCase{4, 256, 1003, 64, false, true},
                     GptqCase{4, 96, 50, 32, true, false}, GptqCase{4, 344, 172, -1, false, false},
                     GptqCase{4, 96, 72, 48, false, false}, GptqCase{4, 128, 200, 16, true, false},
                     GptqCase{4, 2112, 136, 64, false, false}}) {
    RunPackedInt4Case(*gpu_, cpu_, c, kPackedRows, rng_);
  }
}

#if TESSERA_HAVE_CUDA
// A workspace for direct launches: arrival counters at zero, as the backend keeps them.
void* ZeroedWorkspace(size_t bytes) {
  void* ws = nullptr;
  bytes = std::max(bytes, size_t{1} << 20);
  if (cudaMalloc(&ws, bytes) != cudaSuccess || cudaMemset(ws, 0, bytes) != cudaSuccess) return nullptr;
  return ws;
}

// How a work-split run launches the decode kernel beyond its split: cluster meeting, programmatic
// launch, register bound, one-thread split-K release, zero point folded, per-slice staging,
// the last block's partial-sum loads batched.
struct DecodeMode {
  bool cluster, pdl;
  int min_blocks;
  bool release_once, fold_zero, slice, batched;
};

// The decode kernel under every plan it accepts, launched directly: column blocks per warp,
// warps side by side over columns (the others split K inside a block), split-K across
// blocks from none (one block walks all of K, longer than any ring) to one chunk per block
// (up to 8 as a cluster meeting in distributed shared memory, or through the workspace),
// register rings of 2, 4 and 8 chunk steps, each in the given modes, against the CPU
// reference; act-order with group 32, a K tail with one group, group 48 straddling chunks.
void RunDecodeUnderEveryWorkSplit(Backend& gpu, CpuBackend& cpu, const std::vector<DecodeMode>& modes,
                                  std::mt19937& rng) {
  cudaStream_t stream = nullptr;  // a stream of its own, as the backend launches on
  ASSERT_EQ(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), cudaSuccess);
  // One workspace for every launch: each leaves its arrival counters at zero.
  const size_t ws_bytes = size_t{8} << 20;
  void* ws = ZeroedWorkspace(ws_bytes);
  ASSERT_NE(ws, nullptr);
  for (GptqCase c : {GptqCase{4, 512, 320, 32, true, false}, GptqCase{4, 1000, 200, -1, false, true},
                     GptqCase{4, 2112, 136, 48, false, false}}) {
    const HostGptq h = RandomGptq(c, rng);
    DeviceGptq cw = Upload(cpu, h), gw = UploadPacked(gpu, h);
    ASSERT_NE(gw.q.packed, nullptr);
    const cuda::Int4Args w = cuda::Int4ArgsOf(gw.q);
    LinearWeight cl;
    cl.quant = &cw.q;
    for (int64_t rows : {1, 2, 3, 8, 9, 16}) {
      const std::vector<float> x = RandomBf16(rows * c.in, rng);
      Tensor cx = Put(cpu, x, rows, c.in, DType::kF32), gx = Put(gpu, x, rows, c.in, DType::kBF16);
      Tensor co = Poisoned(cpu, rows, c.out, DType::kF32);
      cpu.Matmul(cx.view, cl, co.view);
      const std::vector<float> ref = Get(cpu, co.view);
      const bool x_direct = h.perm.empty() && c.in % 8 == 0;
      for (int nb : {2, 4}) {
        for (int ring : {2, 4, 8}) {
          if (nb == 4 && ring > 2) continue;  // the kernel has no deeper ring at four column blocks
          for (int warps_n : {1, 2, 4, 8}) {
            for (int splits : {0, 1, 3, 1000}) {
              for (const DecodeMode& m : modes) {
                if (ring > 2 && m.min_blocks == 3) continue;  // deeper rings take two blocks per multiprocessor
                cuda::Int4Plan plan =
                    cuda::PlanInt4Decode(w, rows, x_direct, 132, nb, warps_n, splits, m.min_blocks, ring, m.slice);
                const std::string what = Describe(c, rows) + " nb " + std::to_string(nb) + " warps_n " +
                                         std::to_string(warps_n) + " splits " + std::to_string(plan.splits) +
                                         " ring " + std::to_string(plan.ring) + " cluster " +
                                         std::to_string(m.cluster) + " pdl " + std::to_string(m.pdl) +
                                         " blocks/SM " + std::to_string(plan.min_blocks) + " one-thread release " +
                                         std::to_string(m.release_once) + " fold " + std::to_string(m.fold_zero) +
                                         " slice staging " + std::to_string(m.slice) + " batched meeting " +
                                         std::to_string(m.batched);
                ASSERT_TRUE(plan.decode) << what;
                ASSERT_EQ(plan.ring, rows > 8 && ring == 8 ? 4 : ring) << what;
                ASSERT_EQ(plan.slice_stage, m.slice) << what;
                plan.cluster = m.cluster;  // used when there are 2 to 8 splits
                plan.pdl = m.pdl;
                plan.release_once = m.release_once;
                plan.fold_zero = m.fold_zero;
                plan.batched_meet = m.batched;
                ASSERT_LE(plan.workspace_bytes, ws_bytes) << what;
                Tensor go = Poisoned(gpu, rows, c.out, DType::kF32);
                ASSERT_TRUE(gpu.Synchronize().ok());
                cuda::LaunchInt4Matmul(w, plan, gx.view.data, rows, go.view.data, DType::kF32, ws, stream);
                ASSERT_EQ(cudaGetLastError(), cudaSuccess) << what;
                ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess) << what;
                EXPECT_LT(RelError(Get(gpu, go.view), ref), 1e-4) << what;
              }
            }
          }
        }
      }
    }
  }
  cudaFree(ws);
  cudaStreamDestroy(stream);
}

// Block-wide staging: with and without programmatic launch, both register bounds, both ways a
// block publishes its partial sums, the zero point per nibble pair or folded, the last
// block's loads one at a time or batched.
TEST_F(CudaQuantTest, PackedInt4DecodeMatchesCpuUnderEveryWorkSplit) {
  RunDecodeUnderEveryWorkSplit(
      *gpu_, cpu_,
      {DecodeMode{false, false, 2, false, false, false, false}, DecodeMode{true, true, 3, false, true, false, false},
       DecodeMode{true, false, 2, false, true, false, true}, DecodeMode{false, true, 3, false, false, false, true},
       DecodeMode{false, true, 2, true, true, false, false}, DecodeMode{false, true, 2, true, false, false, true}},
      rng_);
}

// Each K slice's warps staging their own activations and metadata (and the warps' sums in a
// region of their own) under the same splits: the planned launch, cluster meetings, every
// thread fencing with the zero point folded and one load at a time, the three-blocks/SM kernel.
TEST_F(CudaQuantTest, PackedInt4DecodeWithSliceStagingMatchesCpuUnderEveryWorkSplit) {
  RunDecodeUnderEveryWorkSplit(
      *gpu_, cpu_,
      {DecodeMode{false, true, 2, true, false, true, true}, DecodeMode{true, true, 2, true, false, true, true},
       DecodeMode{false, false, 2, false, true, true, false}, DecodeMode{false, true, 3, true, false, true, true}},
      rng_);
}

// The decode planner takes the fewest waves of resident blocks any of its work splits gives
// (only the first wave streams weights before the previous kernel ends): at one row the 7B
// projections, the fused q/k/v and gate_up weights included, run in one wave.
TEST_F(CudaQuantTest, PackedInt4DecodePlansTakeTheFewestWavesOfResidentBlocks) {
  const int sms = 132;
  for (auto [out, in] : {std::pair<int64_t, int64_t>{12288, 4096}, {22016, 4096}, {4096, 4096}, {4096, 11008},
                         {11008, 4096}, {2048, 1024}}) {
    cuda::Int4Args w;
    w.in_features = in;
    w.out_features = out;
    w.n_blocks = out / 16;
    w.k_chunks = in / 64;
    w.group_size = 128;
    w.groups = in / 128;
    for (int64_t rows : {1, 2, 4, 8, 9, 16}) {
      const cuda::Int4Plan p = cuda::PlanInt4Matmul(w, rows, true, sms);
      ASSERT_TRUE(p.decode) << out << "x" << in << " rows " << rows;
      const auto waves = [&](const cuda::Int4Plan& d) {
        const int64_t resident = cuda::Int4DecodeResidentBlocks(d, sms);
        return (static_cast<int64_t>(d.col_tiles) * d.splits + resident - 1) / resident;
      };
      for (int warps_n : {1, 2, 4, 8}) {
        const cuda::Int4Plan d = cuda::PlanInt4Decode(w, rows, true, sms, 2, warps_n, 0, 2, 2, true);
        if (d.decode) EXPECT_LE(waves(p), waves(d)) << out << "x" << in << " rows " << rows << " warps_n " << warps_n;
      }
      if (rows == 1) EXPECT_EQ(waves(p), 1) << out << "x" << in;
    }
  }
}

// Two decode matmuls in a captured graph, the second reading the first's output: launched as
// programmatic dependents, each streams its weights early but must read its input only after
// the kernel before it is done. Both outputs start as NaN before every replay.
TEST_F(CudaQuantTest, PackedInt4DecodeChainInACapturedGraphReadsEachInputAfterItIsWritten) {
  const HostGptq h1 = RandomGptq({4, 1024, 2048, 128, false, false}, rng_);
  const HostGptq h2 = RandomGptq({4, 2048, 512, 64, false, true}, rng_);
  DeviceGptq g1 = UploadPacked(*gpu_, h1), g2 = UploadPacked(*gpu_, h2);
  DeviceGptq c1 = Upload(cpu_, h1), c2 = Upload(cpu_, h2);
  ASSERT_NE(g1.q.packed, nullptr);
  ASSERT_NE(g2.q.packed, nullptr);
  const cuda::Int4Args w1 = cuda::Int4ArgsOf(g1.q), w2 = cuda::Int4ArgsOf(g2.q);
  LinearWeight l1, l2;
  l1.quant = &c1.q;
  l2.quant = &c2.q;
  cudaStream_t stream = nullptr;
  ASSERT_EQ(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), cudaSuccess);
  for (int64_t rows : {1, 9, 16}) {
    const cuda::Int4Plan p1 = cuda::PlanInt4Matmul(w1, rows, true, 132), p2 = cuda::PlanInt4Matmul(w2, rows, true, 132);
    ASSERT_TRUE(p1.decode && p2.decode && p1.pdl && p2.pdl);
    void* ws = ZeroedWorkspace(std::max(p1.workspace_bytes, p2.workspace_bytes));
    ASSERT_NE(ws, nullptr);
    const std::vector<float> x = RandomBf16(rows * 1024, rng_);
    Tensor gx = Put(*gpu_, x, rows, 1024, DType::kBF16), cx = Put(cpu_, x, rows, 1024, DType::kF32);
    Tensor y1 = Poisoned(*gpu_, rows, 2048, DType::kBF16), y2 = Poisoned(*gpu_, rows, 512, DType::kF32);
    Tensor r1 = Poisoned(cpu_, rows, 2048, DType::kF32);
    cpu_.Matmul(cx.view, l1, r1.view);
    ASSERT_TRUE(gpu_->Synchronize().ok());
    cudaGraph_t graph = nullptr;
    cudaGraphExec_t exec = nullptr;
    ASSERT_EQ(cudaStreamBeginCapture(stream, cudaStreamCaptureModeRelaxed), cudaSuccess);
    cuda::LaunchInt4Matmul(w1, p1, gx.view.data, rows, y1.view.data, DType::kBF16, ws, stream);
    cuda::LaunchInt4Matmul(w2, p2, y1.view.data, rows, y2.view.data, DType::kF32, ws, stream);
    ASSERT_EQ(cudaStreamEndCapture(stream, &graph), cudaSuccess);
    ASSERT_EQ(cudaGraphInstantiate(&exec, graph, 0), cudaSuccess);
    for (int replay = 0; replay < 3; ++replay) {
      ASSERT_EQ(cudaMemset(y1.view.data, 0xFF, rows * 2048 * 2), cudaSuccess);
      ASSERT_EQ(cudaMemset(y2.view.data, 0xFF, rows * 512 * 4), cudaSuccess);
      ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
      ASSERT_EQ(cudaGraphLaunch(exec, stream), cudaSuccess);
      ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
      const std::vector<float> got1 = Get(*gpu_, y1.view);
      EXPECT_LT(RelError(got1, Get(cpu_, r1.view)), 1e-2) << rows << " rows, replay " << replay;
      // The second against the CPU on the first's bf16 output, as the kernel read it.
      Tensor cy1 = Put(cpu_, got1, rows, 2048, DType::kF32), r2 = Poisoned(cpu_, rows, 512, DType::kF32);
      cpu_.Matmul(cy1.view, l2, r2.view);
      EXPECT_LT(RelError(Get(*gpu_, y2.view), Get(cpu_, r2.view)), 1e-4) << rows << " rows, replay " << replay;
    }
    cudaGraphExecDestroy(exec);
    cudaGraphDestroy(graph);
    cudaFree(ws);
  }
  cudaStreamDestroy(stream);
}
#endif

#if TESSERA_HAVE_CUDA
// The packed weight dequantised on the device (for the dense GEMM of many rows) is the CPU's
// f32 dequantisation rounded to bf16, bit for bit, in the original input order (act-order
// permutations undone), for odd shapes, every group shape and both zero conventions.
TEST_F(CudaQuantTest, PackedInt4DequantisationIsTheCpuDequantisationRoundedToBf16) {
  for (GptqCase c : {GptqCase{4, 4096, 256, 128, false, false}, GptqCase{4, 256, 1003, 64, true, true},
                     GptqCase{4, 172, 96, -1, true, true}, GptqCase{4, 96, 72, 48, false, false},
                     GptqCase{4, 128, 200, 16, true, false}, GptqCase{4, 2112, 136, 64, false, true},
                     GptqCase{4, 1000, 40, 8 * 125, false, false}}) {
    const HostGptq h = RandomGptq(c, rng_);
    DeviceGptq g = UploadPacked(*gpu_, h);
    ASSERT_NE(g.q.packed, nullptr) << Describe(c, 0);
    std::vector<float> ref(c.out * c.in);
    CpuDequantizeGptq(HostView(h), ref.data());  // [out][reordered input]
    Tensor dense = Poisoned(*gpu_, c.out, c.in, DType::kBF16);
    cuda::LaunchInt4Dequantize(cuda::Int4ArgsOf(g.q), dense.view.data, nullptr);
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    const std::vector<float> got = Get(*gpu_, dense.view);
    int64_t mismatches = 0;
    for (int64_t n = 0; n < c.out; ++n) {
      for (int64_t j = 0; j < c.in; ++j) {
        const int64_t k = h.perm.empty() ? j : h.perm[j];
        const float want = BF16ToF32(F32ToBF16(ref[n * c.in + j]));
        if (got[n * c.in + k] != want && ++mismatches <= 3) {
          ADD_FAILURE() << Describe(c, 0) << ": column " << n << " input " << k << ": " << got[n * c.in + k]
                        << " against " << want;
        }
      }
    }
    EXPECT_EQ(mismatches, 0) << Describe(c, 0);
  }
}
#endif

TEST_F(CudaQuantTest, WeightsWithoutAPackedLayoutKeepTheAutoGptqKernels) {
  // Group 8 splits a 16-input mma step, and 8-bit fields have no packed kernel: the backend
  // declines to pack them and the generic kernels serve them from the AutoGPTQ arrays.
  for (GptqCase c : {GptqCase{4, 64, 96, 8, false, false}, GptqCase{8, 128, 64, 32, false, true}}) {
    const HostGptq h = RandomGptq(c, rng_);
    QuantizedWeight dev = HostView(h);
    DeviceBuffer packed = Must(gpu_->PackQuantizedWeight(HostView(h), &dev));
    EXPECT_EQ(packed.data(), nullptr) << Describe(c, 0);
    EXPECT_EQ(dev.packed, nullptr) << Describe(c, 0);
    RunGptqCase(*gpu_, cpu_, c, {1, 5, 20}, rng_);
  }
}

TEST_F(CudaQuantTest, RepeatedSplitKCallsOnThePackedLayoutGiveTheSameResult) {
  const HostGptq h = RandomGptq({4, 4096, 512, 128, true, false}, rng_);
  DeviceGptq gw = UploadPacked(*gpu_, h);
  ASSERT_NE(gw.q.packed, nullptr);
  LinearWeight gl;
  gl.quant = &gw.q;
  for (int64_t rows : {1, 24, 64}) {
    Tensor gx = Put(*gpu_, RandomBf16(rows * 4096, rng_), rows, 4096, DType::kBF16);
    Tensor first = Poisoned(*gpu_, rows, 512, DType::kF32);
    gpu_->Matmul(gx.view, gl, first.view);
    const std::vector<float> ref = Get(*gpu_, first.view);
    for (int i = 0; i < 3; ++i) {
      Tensor again = Poisoned(*gpu_, rows, 512, DType::kF32);
      gpu_->Matmul(gx.view, gl, again.view);
      EXPECT_EQ(Get(*gpu_, again.view), ref) << rows << " rows, call " << i;
    }
  }
}

TEST_F(CudaQuantTest, Int8AndInt2MatchCpu) {
  for (GptqCase c : {GptqCase{8, 384, 200, 128, true, true}, GptqCase{8, 100, 64, -1, false, false},
                     GptqCase{8, 1024, 512, 32, false, false}, GptqCase{2, 256, 96, 64, false, false},
                     GptqCase{2, 512, 136, 128, true, true}}) {
    RunGptqCase(*gpu_, cpu_, c, {1, 6, 8, 24}, rng_);
  }
}

TEST_F(CudaQuantTest, RepeatedSplitKCallsGiveTheSameResult) {
  // The split-K arrival counters must reset themselves between launches.
  const HostGptq h = RandomGptq({4, 4096, 512, 128, false, false}, rng_);
  DeviceGptq gw = Upload(*gpu_, h);
  LinearWeight gl;
  gl.quant = &gw.q;
  Tensor gx = Put(*gpu_, RandomBf16(3 * 4096, rng_), 3, 4096, DType::kBF16);
  Tensor first = Poisoned(*gpu_, 3, 512, DType::kF32);
  gpu_->Matmul(gx.view, gl, first.view);
  const std::vector<float> ref = Get(*gpu_, first.view);
  for (int i = 0; i < 5; ++i) {
    Tensor again = Poisoned(*gpu_, 3, 512, DType::kF32);
    gpu_->Matmul(gx.view, gl, again.view);
    EXPECT_LT(RelError(Get(*gpu_, again.view), ref), 1e-6) << "call " << i;
  }
}

TEST_F(CudaQuantTest, ThreeBitWeightsReportUnimplemented) {
  const HostGptq h = RandomGptq({4, 64, 64, 32, false, false}, rng_);
  DeviceGptq gw = Upload(*gpu_, h);
  gw.q.bits = 3;
  LinearWeight gl;
  gl.quant = &gw.q;
  Tensor x = Put(*gpu_, RandomBf16(64, rng_), 1, 64, DType::kBF16), out = Poisoned(*gpu_, 1, 64, DType::kBF16);
  gpu_->Matmul(x.view, gl, out.view);
  absl::Status st = gpu_->Synchronize();
  EXPECT_EQ(st.code(), absl::StatusCode::kUnimplemented) << st;
  EXPECT_TRUE(gpu_->Synchronize().ok());
}

// ---- LoRA ----------------------------------------------------------------------------

// One (layer, target) module's tables on one backend.
struct DeviceModule {
  DeviceBuffer a, b_t, ranks;
};

struct LoraCase {
  int64_t hidden, kv, ffn;
  int32_t num_slots, max_rank;
  std::vector<int32_t> ranks;  // per slot; 0 leaves the module alone
};

// Runs every target of a two-layer model over one slot pattern on both backends.
void RunLoraCase(Backend& gpu, CpuBackend& cpu, const LoraCase& c, const std::vector<int32_t>& slots,
                 DType gpu_out_dtype, std::mt19937& rng) {
  const int num_layers = 2;
  const int32_t n = static_cast<int32_t>(slots.size());
  struct Dims { int64_t in, out, out_cols, offset; };
  auto dims = [&](int target) -> Dims {
    switch (target) {
      case kLoraK: case kLoraV: return {c.hidden, c.kv, c.kv, 0};
      case kLoraGate: return {c.hidden, c.ffn, 2 * c.ffn, 0};
      case kLoraUp: return {c.hidden, c.ffn, 2 * c.ffn, c.ffn};
      case kLoraDown: return {c.ffn, c.hidden, c.hidden, 0};
      default: return {c.hidden, c.hidden, c.hidden, 0};
    }
  };
  std::vector<DeviceModule> cmods, gmods;
  std::vector<LoraModuleSlots> ctab(num_layers * kNumLoraTargets), gtab(num_layers * kNumLoraTargets);
  for (int l = 0; l < num_layers; ++l) {
    for (int t = 0; t < kNumLoraTargets; ++t) {
      const Dims d = dims(t);
      // Rows past a slot's rank are filled too: a kernel that reads them is caught.
      const std::vector<float> a = RandomBf16(c.num_slots * c.max_rank * d.in, rng, 1.0f / std::sqrt(d.in));
      const std::vector<float> bt = RandomBf16(c.num_slots * c.max_rank * d.out, rng, 0.3f);
      for (auto [be, mods, tab, dt] : {std::tuple<Backend*, std::vector<DeviceModule>*, std::vector<LoraModuleSlots>*, DType>{&cpu, &cmods, &ctab, DType::kF32},
                                       {&gpu, &gmods, &gtab, DType::kBF16}}) {
        DeviceModule m;
        m.a = std::move(Put(*be, a, 1, a.size(), dt).buf);
        m.b_t = std::move(Put(*be, bt, 1, bt.size(), dt).buf);
        m.ranks = PutRaw(*be, c.ranks);
        (*tab)[l * kNumLoraTargets + t] = {m.a.data(), m.b_t.data(), static_cast<const int32_t*>(m.ranks.data()), d.in,
                                           d.out};
        mods->push_back(std::move(m));
      }
    }
  }
  LoraSlotTables ct{ctab.data(), num_layers, c.num_slots, c.max_rank, DType::kF32};
  LoraSlotTables gt{gtab.data(), num_layers, c.num_slots, c.max_rank, DType::kBF16};
  DeviceBuffer gslots = PutRaw(gpu, slots);
  LoraBatch cb{slots.data(), n, &ct}, gb{static_cast<const int32_t*>(gslots.data()), n, &gt};

  for (int l = 0; l < num_layers; ++l) {
    for (int t = 0; t < kNumLoraTargets; ++t) {
      const Dims d = dims(t);
      const std::vector<float> x = RandomBf16(n * d.in, rng), base = RandomBf16(n * d.out_cols, rng, 0.5f);
      Tensor cx = Put(cpu, x, n, d.in, DType::kF32), gx = Put(gpu, x, n, d.in, DType::kBF16);
      Tensor co = Put(cpu, base, n, d.out_cols, DType::kF32), go = Put(gpu, base, n, d.out_cols, gpu_out_dtype);
      cpu.LoraApply(cx.view, cb, l, t, co.view, d.offset);
      gpu.LoraApply(gx.view, gb, l, t, go.view, d.offset);
      const std::vector<float> ref = Get(cpu, co.view), out = Get(gpu, go.view);
      const std::string what = "layer " + std::to_string(l) + " target " + std::to_string(t) + " tokens " +
                               std::to_string(n) + " hidden " + std::to_string(c.hidden);
      // The update alone, so a small delta is not hidden by the base activations.
      std::vector<float> ref_delta(ref.size()), out_delta(out.size());
      for (size_t i = 0; i < ref.size(); ++i) {
        ref_delta[i] = ref[i] - base[i];
        out_delta[i] = out[i] - base[i];
      }
      EXPECT_LT(RelError(out, ref), 1e-2) << what;
      EXPECT_LT(RelError(out_delta, ref_delta), 2e-2) << what;
      // Base tokens, rank-0 slots and columns outside the target's range stay bit-exact.
      for (int32_t tok = 0; tok < n; ++tok) {
        const bool touched = slots[tok] >= 0 && c.ranks[slots[tok]] > 0;
        for (int64_t col = 0; col < d.out_cols; ++col) {
          const bool in_range = col >= d.offset && col < d.offset + d.out;
          if (touched && in_range) continue;
          const size_t i = static_cast<size_t>(tok) * d.out_cols + col;
          ASSERT_EQ(out[i], base[i]) << what << " token " << tok << " column " << col;
        }
      }
    }
  }
}

std::vector<int32_t> DecodeSlots(int n, int num_slots, std::mt19937& rng) {
  std::uniform_int_distribution<int32_t> d(-1, num_slots - 1);
  std::vector<int32_t> s(n);
  for (int32_t& v : s) v = d(rng);
  return s;
}

// Prefill-like runs of one adapter (longer than a tile, shorter, base-model runs between).
std::vector<int32_t> PrefillSlots() {
  std::vector<int32_t> s;
  for (auto [slot, len] : std::vector<std::pair<int32_t, int>>{{2, 21}, {-1, 5}, {0, 3}, {4, 17}, {1, 1}, {2, 9}}) {
    s.insert(s.end(), len, slot);
  }
  return s;
}

TEST_F(CudaQuantTest, LoraDecodeBatchMatchesCpuForEveryTarget) {
  const LoraCase c{256, 64, 344, 5, 64, {8, 16, 64, 0, 16}};
  RunLoraCase(*gpu_, cpu_, c, DecodeSlots(1, c.num_slots, rng_), DType::kBF16, rng_);
  RunLoraCase(*gpu_, cpu_, c, DecodeSlots(13, c.num_slots, rng_), DType::kBF16, rng_);
  RunLoraCase(*gpu_, cpu_, c, DecodeSlots(32, c.num_slots, rng_), DType::kBF16, rng_);
}

TEST_F(CudaQuantTest, LoraPrefillRunsMatchCpuForEveryTarget) {
  const LoraCase c{256, 64, 344, 5, 64, {8, 16, 64, 0, 16}};
  RunLoraCase(*gpu_, cpu_, c, PrefillSlots(), DType::kBF16, rng_);
  RunLoraCase(*gpu_, cpu_, c, PrefillSlots(), DType::kF32, rng_);
}

TEST_F(CudaQuantTest, LoraMatchesCpuWhenFeaturesAreNotMultiplesOf8) {
  // hidden 100 and ffn 172 take the scalar paths; the up half starts at an odd column.
  const LoraCase c{100, 20, 171, 3, 16, {16, 8, 12}};
  RunLoraCase(*gpu_, cpu_, c, DecodeSlots(11, c.num_slots, rng_), DType::kBF16, rng_);
  RunLoraCase(*gpu_, cpu_, c, {0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 2, -1, 1}, DType::kBF16, rng_);
}

TEST_F(CudaQuantTest, LoraWithOnlyBaseTokensLeavesOutputAlone) {
  const LoraCase c{64, 32, 96, 2, 8, {8, 8}};
  RunLoraCase(*gpu_, cpu_, c, std::vector<int32_t>(9, -1), DType::kBF16, rng_);
}

}  // namespace
}  // namespace tessera
