// Runs every backend op on the CUDA backend and on the CPU reference over the same
// random inputs (already rounded to bf16, so the difference is kernel error) and
// compares by relative L2 error. Skipped when no CUDA device is visible.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <functional>
#include <initializer_list>
#include <limits>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include <cuda_runtime.h>

#include "gtest/gtest.h"
#include "kernels/backend.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/cuda/cuda_attention_args.h"
#include "kernels/cuda/cuda_backend_impl.h"
#include "kernels/cuda/cuda_launch.h"
#include "tests/gpu/gpu_test_util.h"

namespace tessera {
namespace {

using namespace gpu_testing;  // NOLINT: the tests' own helpers

class CudaOpsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!CudaBackendAvailable()) GTEST_SKIP() << "no CUDA device visible";
    gpu_ = Must(CreateBackend("cuda"));
    ASSERT_EQ(gpu_->kind(), DeviceKind::kCuda);
    ASSERT_EQ(gpu_->activation_dtype(), DType::kBF16);
  }

  std::unique_ptr<Backend> gpu_;
  CpuBackend cpu_;
  std::mt19937 rng_{1234};
};

constexpr double kBf16Tol = 1e-2;

// n tokens over the first n of a random permutation of `slots` cache slots (returned in
// *perm); the tokens at `padding` get slot -1 and write nothing. Positions 0.
BatchLayout ScatteredSlots(int n, int64_t slots, std::initializer_list<int> padding, std::mt19937& rng,
                           std::vector<int32_t>* perm) {
  perm->resize(slots);
  std::iota(perm->begin(), perm->end(), 0);
  std::shuffle(perm->begin(), perm->end(), rng);
  BatchLayout layout;
  layout.slot_mapping.assign(perm->begin(), perm->begin() + n);
  for (int t : padding) layout.slot_mapping[t] = -1;
  layout.token_ids.assign(n, 0);
  layout.positions.assign(n, 0);
  layout.query_start = {0, n};
  layout.context_lens = {n};
  return layout;
}

TEST_F(CudaOpsTest, EmbeddingMatchesCpu) {
  for (int64_t d : {8, 96, 4096}) {
    const int64_t vocab = 1000;
    std::vector<float> table = RandomBf16(vocab * d, rng_);
    std::vector<int32_t> ids(37);
    for (int32_t& id : ids) id = static_cast<int32_t>(rng_() % vocab);
    Tensor ct = Put(cpu_, table, vocab, d, DType::kBF16), gt = Put(*gpu_, table, vocab, d, DType::kBF16);
    DeviceBuffer gid = Must(gpu_->Allocate(ids.size() * 4));
    ASSERT_TRUE(gpu_->CopyToDevice(gid.data(), ids.data(), ids.size() * 4).ok());
    Tensor co = Poisoned(cpu_, 37, d, DType::kF32), go = Poisoned(*gpu_, 37, d, DType::kBF16);
    cpu_.Embedding(ct.view, ids.data(), 37, co.view);
    gpu_->Embedding(gt.view, static_cast<const int32_t*>(gid.data()), 37, go.view);
    EXPECT_EQ(RelError(Get(*gpu_, go.view), Get(cpu_, co.view)), 0.0) << "d=" << d;
  }
}

TEST_F(CudaOpsTest, RmsNormMatchesCpu) {
  // f32 weights with d % 8 == 0 (up to 8192) take the register-resident bf16 kernel.
  for (DType wdt : {DType::kBF16, DType::kF32}) {
    for (int64_t rows : {1, 5, 64}) {
      for (int64_t d : {8, 100, 4096, 5120, 8192, 8200}) {
        std::vector<float> x = RandomBf16(rows * d, rng_, 3.0f), w = RandomBf16(d, rng_);
        Tensor cx = Put(cpu_, x, rows, d, DType::kF32), gx = Put(*gpu_, x, rows, d, DType::kBF16);
        Tensor cw = Put(cpu_, w, 1, d, wdt), gw = Put(*gpu_, w, 1, d, wdt);
        Tensor co = Poisoned(cpu_, rows, d, DType::kF32), go = Poisoned(*gpu_, rows, d, DType::kBF16);
        cpu_.RmsNorm(cx.view, cw.view, 1e-5f, co.view);
        gpu_->RmsNorm(gx.view, gw.view, 1e-5f, go.view);
        EXPECT_LT(RelError(Get(*gpu_, go.view), Get(cpu_, co.view)), kBf16Tol)
            << rows << "x" << d << " w " << DTypeName(wdt);
      }
    }
  }
}

TEST_F(CudaOpsTest, AddRmsNormMatchesCpuAndUpdatesResidual) {
  for (int64_t d : {8, 100, 4096, 8192, 8200}) {
    const int64_t rows = 7;
    std::vector<float> x = RandomBf16(rows * d, rng_), r = RandomBf16(rows * d, rng_), w = RandomBf16(d, rng_);
    Tensor cx = Put(cpu_, x, rows, d, DType::kF32), gx = Put(*gpu_, x, rows, d, DType::kBF16);
    Tensor cr = Put(cpu_, r, rows, d, DType::kF32), gr = Put(*gpu_, r, rows, d, DType::kBF16);
    Tensor cw = Put(cpu_, w, 1, d, DType::kF32), gw = Put(*gpu_, w, 1, d, DType::kF32);
    Tensor co = Poisoned(cpu_, rows, d, DType::kF32), go = Poisoned(*gpu_, rows, d, DType::kBF16);
    cpu_.AddRmsNorm(cx.view, cr.view, cw.view, 1e-6f, co.view);
    gpu_->AddRmsNorm(gx.view, gr.view, gw.view, 1e-6f, go.view);
    EXPECT_LT(RelError(Get(*gpu_, go.view), Get(cpu_, co.view)), kBf16Tol) << "d=" << d;
    EXPECT_LT(RelError(Get(*gpu_, gr.view), Get(cpu_, cr.view)), kBf16Tol) << "residual d=" << d;
  }
}

TEST_F(CudaOpsTest, MatmulMatchesCpuForBf16AndF32Outputs) {
  struct Shape { int64_t n, k, m; };
  for (Shape s : {Shape{1, 64, 96}, Shape{7, 4096, 4096}, Shape{33, 72, 1000}, Shape{128, 512, 1024},
                  Shape{3, 100, 50}, Shape{5, 33, 17},
                  // n <= 4 with k % 8 == 0 takes the skinny GEMM kernel: its unrolled
                  // main loop and tail loop, each k split (1 to 8 warps per row), every
                  // row count, and the f32 logits head.
                  Shape{1, 4096, 32000}, Shape{2, 11008, 300}, Shape{4, 2048, 256}, Shape{2, 4096, 4096},
                  Shape{3, 1000, 77}, Shape{1, 8, 5}}) {
    std::vector<float> x = RandomBf16(s.n * s.k, rng_), w = RandomBf16(s.m * s.k, rng_, 0.05f);
    Tensor cx = Put(cpu_, x, s.n, s.k, DType::kF32), gx = Put(*gpu_, x, s.n, s.k, DType::kBF16);
    Tensor cw = Put(cpu_, w, s.m, s.k, DType::kBF16), gw = Put(*gpu_, w, s.m, s.k, DType::kBF16);
    Tensor co = Poisoned(cpu_, s.n, s.m, DType::kF32);
    cpu_.Matmul(cx.view, LinearWeight{cw.view}, co.view);
    const std::vector<float> ref = Get(cpu_, co.view);
    for (DType out_dt : {DType::kBF16, DType::kF32}) {
      Tensor go = Poisoned(*gpu_, s.n, s.m, out_dt);
      gpu_->Matmul(gx.view, LinearWeight{gw.view}, go.view);
      // f32 output keeps only accumulation-order differences.
      const double tol = out_dt == DType::kF32 ? 1e-4 : kBf16Tol;
      EXPECT_LT(RelError(Get(*gpu_, go.view), ref), tol)
          << s.n << "x" << s.k << "x" << s.m << " out " << DTypeName(out_dt);
    }
  }
}

TEST_F(CudaOpsTest, QuantizedMatmulReportsErrorAtSynchronize) {
  QuantizedWeight q;
  q.bits = 3;  // 2, 4 and 8 bits have CUDA kernels (cuda_quant_test.cc)
  q.in_features = 64;
  q.out_features = 64;
  Tensor x = Put(*gpu_, RandomBf16(64, rng_), 1, 64, DType::kBF16), out = Poisoned(*gpu_, 1, 64, DType::kBF16);
  LinearWeight w;
  w.quant = &q;
  gpu_->Matmul(x.view, w, out.view);
  absl::Status st = gpu_->Synchronize();
  EXPECT_EQ(st.code(), absl::StatusCode::kUnimplemented) << st;
  EXPECT_TRUE(gpu_->Synchronize().ok());  // reported once, then the backend is usable again
}

TEST_F(CudaOpsTest, RopeMatchesCpuAtLongPositions) {
  struct Cfg { int hq, hk, d; float theta; };
  for (Cfg c : {Cfg{4, 2, 8, 10000.0f}, Cfg{8, 8, 64, 10000.0f}, Cfg{32, 8, 128, 500000.0f}}) {
    const int64_t n = 19;
    std::vector<float> inv(c.d / 2);
    for (int i = 0; i < c.d / 2; ++i) inv[i] = 1.0f / std::pow(c.theta, 2.0f * i / c.d);
    std::vector<int32_t> pos(n);
    for (int64_t i = 0; i < n; ++i) pos[i] = i < 5 ? static_cast<int32_t>(i) : static_cast<int32_t>(rng_() % 131072);
    std::vector<float> q = RandomBf16(n * c.hq * c.d, rng_), k = RandomBf16(n * c.hk * c.d, rng_);
    Tensor cq = Put(cpu_, q, n, c.hq * c.d, DType::kF32), gq = Put(*gpu_, q, n, c.hq * c.d, DType::kBF16);
    Tensor ck = Put(cpu_, k, n, c.hk * c.d, DType::kF32), gk = Put(*gpu_, k, n, c.hk * c.d, DType::kBF16);
    DeviceBuffer gpos = Must(gpu_->Allocate(n * 4)), ginv = Must(gpu_->Allocate(inv.size() * 4));
    ASSERT_TRUE(gpu_->CopyToDevice(gpos.data(), pos.data(), n * 4).ok());
    ASSERT_TRUE(gpu_->CopyToDevice(ginv.data(), inv.data(), inv.size() * 4).ok());
    cpu_.Rope(cq.view, ck.view, pos.data(), inv.data(), c.d);
    gpu_->Rope(gq.view, gk.view, static_cast<const int32_t*>(gpos.data()), static_cast<const float*>(ginv.data()), c.d);
    EXPECT_LT(RelError(Get(*gpu_, gq.view), Get(cpu_, cq.view)), kBf16Tol) << "q d=" << c.d;
    EXPECT_LT(RelError(Get(*gpu_, gk.view), Get(cpu_, ck.view)), kBf16Tol) << "k d=" << c.d;
  }
}

TEST_F(CudaOpsTest, SiluMulAndAddMatchCpu) {
  struct Case { int64_t rows, f; };
  // From 32 rows of f a multiple of 8 the vectorised SiluMul.
  for (Case c : {Case{9, 11}, Case{40, 11}, Case{1, 4096}, Case{9, 4096}, Case{33, 4096}, Case{70, 11008}}) {
    const int64_t rows = c.rows, f = c.f;
    std::vector<float> gu = RandomBf16(rows * 2 * f, rng_, 2.0f), base = RandomBf16(rows * f, rng_);
    Tensor cg = Put(cpu_, gu, rows, 2 * f, DType::kF32), gg = Put(*gpu_, gu, rows, 2 * f, DType::kBF16);
    Tensor co = Poisoned(cpu_, rows, f, DType::kF32), go = Poisoned(*gpu_, rows, f, DType::kBF16);
    cpu_.SiluMul(cg.view, co.view);
    gpu_->SiluMul(gg.view, go.view);
    EXPECT_LT(RelError(Get(*gpu_, go.view), Get(cpu_, co.view)), kBf16Tol) << "silu rows=" << rows << " f=" << f;
    Tensor cb = Put(cpu_, base, rows, f, DType::kF32), gb = Put(*gpu_, base, rows, f, DType::kBF16);
    cpu_.Add(co.view, cb.view);
    gpu_->Add(go.view, gb.view);
    EXPECT_LT(RelError(Get(*gpu_, gb.view), Get(cpu_, cb.view)), kBf16Tol) << "add rows=" << rows << " f=" << f;
  }
}

TEST_F(CudaOpsTest, GatherRowsCopiesExactly) {
  for (DType dt : {DType::kBF16, DType::kF32}) {
    for (int64_t cols : {3, 8, 4096}) {
      const int64_t rows = 50;
      std::vector<float> x = RandomBf16(rows * cols, rng_);
      std::vector<int32_t> idx = {49, 0, 7, 7, 23};
      Tensor gx = Put(*gpu_, x, rows, cols, dt);
      DeviceBuffer gi = Must(gpu_->Allocate(idx.size() * 4));
      ASSERT_TRUE(gpu_->CopyToDevice(gi.data(), idx.data(), idx.size() * 4).ok());
      Tensor go = Poisoned(*gpu_, idx.size(), cols, dt);
      gpu_->GatherRows(gx.view, static_cast<const int32_t*>(gi.data()), idx.size(), go.view);
      std::vector<float> ref;
      for (int32_t r : idx) ref.insert(ref.end(), x.begin() + r * cols, x.begin() + (r + 1) * cols);
      EXPECT_EQ(RelError(Get(*gpu_, go.view), ref), 0.0) << DTypeName(dt) << " cols=" << cols;
    }
  }
}

TEST_F(CudaOpsTest, StoreKvWritesSlotsAndSkipsPadding) {
  for (int d : {8, 128}) {
    const int hk = 4, block_size = 16, num_blocks = 9, n = 21;
    const int64_t width = hk * d, slots = num_blocks * block_size;
    std::vector<int32_t> perm;
    BatchLayout layout = ScatteredSlots(n, slots, {3, 17}, rng_, &perm);
    DeviceBatch cb = Must(cpu_.UploadBatch(layout)), gb = Must(gpu_->UploadBatch(layout));
    std::vector<float> k = RandomBf16(n * width, rng_), v = RandomBf16(n * width, rng_);
    std::vector<float> kc0 = RandomBf16(slots * width, rng_), vc0 = RandomBf16(slots * width, rng_);
    Tensor ck = Put(cpu_, k, n, width, DType::kF32), gk = Put(*gpu_, k, n, width, DType::kBF16);
    Tensor cv = Put(cpu_, v, n, width, DType::kF32), gv = Put(*gpu_, v, n, width, DType::kBF16);
    Tensor ckc = Put(cpu_, kc0, slots, width, DType::kF32), gkc = Put(*gpu_, kc0, slots, width, DType::kBF16);
    Tensor cvc = Put(cpu_, vc0, slots, width, DType::kF32), gvc = Put(*gpu_, vc0, slots, width, DType::kBF16);
    KvLayerView cc{ckc.buf.data(), cvc.buf.data(), DType::kF32, num_blocks, block_size, hk, d};
    KvLayerView gc{gkc.buf.data(), gvc.buf.data(), DType::kBF16, num_blocks, block_size, hk, d};
    cpu_.StoreKv(ck.view, cv.view, cb, cc);
    gpu_->StoreKv(gk.view, gv.view, gb, gc);
    EXPECT_EQ(RelError(Get(*gpu_, gkc.view), Get(cpu_, ckc.view)), 0.0) << "k d=" << d;
    EXPECT_EQ(RelError(Get(*gpu_, gvc.view), Get(cpu_, cvc.view)), 0.0) << "v d=" << d;
  }
}

// The inputs of a rope + KV-store test: n tokens over scattered slots (token 4 a padding
// token), positions below max_pos, the rotary frequencies on both backends, and random
// qkv rows with their q, k and v split out for the unfused ops.
struct RopeStoreInputs {
  BatchLayout layout;
  DeviceBatch cpu_batch, gpu_batch;
  std::vector<float> inv;  // [head_dim / 2]
  DeviceBuffer gpu_inv;
  std::vector<float> qkv, q, k, v;
};

RopeStoreInputs MakeRopeStoreInputs(CpuBackend& cpu, Backend& gpu, int hq, int hk, int d, int n, int64_t slots,
                                    int max_pos, std::mt19937& rng) {
  RopeStoreInputs in;
  const int64_t qdim = hq * d, width = hk * d;
  in.inv.resize(d / 2);
  for (int i = 0; i < d / 2; ++i) in.inv[i] = 1.0f / std::pow(10000.0f, 2.0f * i / d);
  std::vector<int32_t> perm;
  in.layout = ScatteredSlots(n, slots, {4}, rng, &perm);
  for (int i = 0; i < n; ++i) in.layout.positions[i] = static_cast<int32_t>(rng() % max_pos);
  in.cpu_batch = Must(cpu.UploadBatch(in.layout));
  in.gpu_batch = Must(gpu.UploadBatch(in.layout));
  in.gpu_inv = PutRaw(gpu, in.inv);
  in.qkv = RandomBf16(n * (qdim + 2 * width), rng);
  in.q.resize(n * qdim);
  in.k.resize(n * width);
  in.v.resize(n * width);
  for (int t = 0; t < n; ++t) {
    const float* row = in.qkv.data() + t * (qdim + 2 * width);
    std::copy_n(row, qdim, in.q.begin() + t * qdim);
    std::copy_n(row + qdim, width, in.k.begin() + t * width);
    std::copy_n(row + qdim + width, width, in.v.begin() + t * width);
  }
  return in;
}

// The fused form must give exactly what Rope then StoreKv give on the same device, and
// match the CPU reference; padding tokens (slot -1) still get their q rotated.
TEST_F(CudaOpsTest, RopeStoreKvEqualsRopeThenStoreKv) {
  struct Cfg { int hq, hk, d; };
  // Heads of 8 and 96 take the generic kernel, the others the vectorised one.
  for (Cfg c : {Cfg{4, 2, 8}, Cfg{32, 32, 128}, Cfg{32, 8, 128}, Cfg{6, 1, 64}, Cfg{4, 2, 96}, Cfg{2, 1, 256}}) {
    const int block_size = 16, num_blocks = 7, n = 23;
    const int64_t qdim = c.hq * c.d, width = c.hk * c.d, slots = num_blocks * block_size;
    RopeStoreInputs in = MakeRopeStoreInputs(cpu_, *gpu_, c.hq, c.hk, c.d, n, slots, 70000, rng_);
    const DeviceBatch &cb = in.cpu_batch, &gb = in.gpu_batch;
    const auto* gi = static_cast<const float*>(in.gpu_inv.data());
    const std::vector<float>&qkv = in.qkv, &q = in.q, &k = in.k, &v = in.v, &inv = in.inv;
    std::vector<float> cache0 = RandomBf16(slots * width, rng_);
    // Reference on the device: split, Rope, StoreKv.
    Tensor rq = Put(*gpu_, q, n, qdim, DType::kBF16), rk = Put(*gpu_, k, n, width, DType::kBF16);
    Tensor rv = Put(*gpu_, v, n, width, DType::kBF16);
    Tensor rkc = Put(*gpu_, cache0, slots, width, DType::kBF16), rvc = Put(*gpu_, cache0, slots, width, DType::kBF16);
    KvLayerView rc{rkc.buf.data(), rvc.buf.data(), DType::kBF16, num_blocks, block_size, c.hk, c.d};
    gpu_->Rope(rq.view, rk.view, gb.positions, gi, c.d);
    gpu_->StoreKv(rk.view, rv.view, gb, rc);
    // Fused, on the device and on the CPU.
    Tensor gqkv = Put(*gpu_, qkv, n, qdim + 2 * width, DType::kBF16);
    Tensor gq = Poisoned(*gpu_, n, qdim, DType::kBF16);
    Tensor gkc = Put(*gpu_, cache0, slots, width, DType::kBF16), gvc = Put(*gpu_, cache0, slots, width, DType::kBF16);
    KvLayerView gc{gkc.buf.data(), gvc.buf.data(), DType::kBF16, num_blocks, block_size, c.hk, c.d};
    gpu_->RopeStoreKv(gqkv.view, gq.view, gb.positions, gi, c.d, gb, gc);
    Tensor cqkv = Put(cpu_, qkv, n, qdim + 2 * width, DType::kF32);
    Tensor cq = Poisoned(cpu_, n, qdim, DType::kF32);
    Tensor ckc = Put(cpu_, cache0, slots, width, DType::kF32), cvc = Put(cpu_, cache0, slots, width, DType::kF32);
    KvLayerView cc{ckc.buf.data(), cvc.buf.data(), DType::kF32, num_blocks, block_size, c.hk, c.d};
    cpu_.RopeStoreKv(cqkv.view, cq.view, cb.positions, inv.data(), c.d, cb, cc);
    ASSERT_TRUE(gpu_->Synchronize().ok());
    EXPECT_EQ(RelError(Get(*gpu_, gq.view), Get(*gpu_, rq.view)), 0.0) << "q hq=" << c.hq << " d=" << c.d;
    EXPECT_EQ(RelError(Get(*gpu_, gkc.view), Get(*gpu_, rkc.view)), 0.0) << "k cache hk=" << c.hk;
    EXPECT_EQ(RelError(Get(*gpu_, gvc.view), Get(*gpu_, rvc.view)), 0.0) << "v cache hk=" << c.hk;
    EXPECT_LT(RelError(Get(*gpu_, gq.view), Get(cpu_, cq.view)), kBf16Tol) << "q vs cpu";
    EXPECT_LT(RelError(Get(*gpu_, gkc.view), Get(cpu_, ckc.view)), kBf16Tol) << "k cache vs cpu";
    EXPECT_LT(RelError(Get(*gpu_, gvc.view), Get(cpu_, cvc.view)), kBf16Tol) << "v cache vs cpu";
  }
}

// Both backends quantize the same bf16 values with the same arithmetic: identical codes
// and scales, padding slots left as they were.
TEST_F(CudaOpsTest, StoreKvIntoFp8CacheGivesTheCpuCodesAndScales) {
  for (int d : {32, 64, 128, 256}) {
    const int hk = 4, block_size = 16, num_blocks = 9, n = 21;
    const int64_t width = hk * d, slots = num_blocks * block_size;
    std::vector<int32_t> perm;
    BatchLayout layout = ScatteredSlots(n, slots, {3}, rng_, &perm);
    DeviceBatch cb = Must(cpu_.UploadBatch(layout)), gb = Must(gpu_->UploadBatch(layout));
    std::vector<float> k = RandomBf16(n * width, rng_, 3.0f), v = RandomBf16(n * width, rng_, 0.01f);
    for (int j = 0; j < d; ++j) k[5 * width + j] = 0.0f;  // an all-zero head: scale 0, codes 0
    const std::vector<uint8_t> codes0(slots * width, 0x55);
    const std::vector<float> scales0(slots * hk, -1.0f);
    Fp8Cache cc = PutFp8Cache(cpu_, codes0, codes0, scales0, scales0, num_blocks, block_size, hk, d);
    Fp8Cache gc = PutFp8Cache(*gpu_, codes0, codes0, scales0, scales0, num_blocks, block_size, hk, d);
    Tensor ck = Put(cpu_, k, n, width, DType::kF32), gk = Put(*gpu_, k, n, width, DType::kBF16);
    Tensor cv = Put(cpu_, v, n, width, DType::kF32), gv = Put(*gpu_, v, n, width, DType::kBF16);
    cpu_.StoreKv(ck.view, cv.view, cb, cc.view);
    gpu_->StoreKv(gk.view, gv.view, gb, gc.view);
    SCOPED_TRACE("d " + std::to_string(d));
    EXPECT_EQ(GetRaw<uint8_t>(*gpu_, gc.k.data(), slots * width), GetRaw<uint8_t>(cpu_, cc.k.data(), slots * width));
    EXPECT_EQ(GetRaw<uint8_t>(*gpu_, gc.v.data(), slots * width), GetRaw<uint8_t>(cpu_, cc.v.data(), slots * width));
    EXPECT_EQ(GetRaw<float>(*gpu_, gc.k_scale.data(), slots * hk), GetRaw<float>(cpu_, cc.k_scale.data(), slots * hk));
    EXPECT_EQ(GetRaw<float>(*gpu_, gc.v_scale.data(), slots * hk), GetRaw<float>(cpu_, cc.v_scale.data(), slots * hk));
    const std::vector<float> ks = GetRaw<float>(*gpu_, gc.k_scale.data(), slots * hk);
    EXPECT_EQ(ks[layout.slot_mapping[5] * hk], 0.0f);
    EXPECT_EQ(ks[perm[3] * hk], -1.0f);  // the padding token's slot is untouched
  }
}

// The fused rope + FP8 store equals Rope then the FP8 StoreKv on the device (k rounded to
// bf16 before it is quantized, as a 16-bit cache would hold it), and the dequantized cache
// stays within E4M3's half-step of the CPU reference's.
TEST_F(CudaOpsTest, RopeStoreKvIntoFp8CacheEqualsRopeThenStoreKv) {
  struct Cfg { int hq, hk, d; };
  // Heads of 48 take the generic kernel, the others the vectorised one.
  for (Cfg c : {Cfg{32, 8, 128}, Cfg{6, 1, 64}, Cfg{4, 2, 32}, Cfg{4, 2, 48}, Cfg{2, 1, 256}, Cfg{4, 4, 16}}) {
    const int block_size = 16, num_blocks = 7, n = 23;
    const int64_t qdim = c.hq * c.d, width = c.hk * c.d, slots = num_blocks * block_size;
    RopeStoreInputs in = MakeRopeStoreInputs(cpu_, *gpu_, c.hq, c.hk, c.d, n, slots, 5000, rng_);
    const DeviceBatch &cb = in.cpu_batch, &gb = in.gpu_batch;
    const auto* gi = static_cast<const float*>(in.gpu_inv.data());
    const std::vector<float>&qkv = in.qkv, &q = in.q, &k = in.k, &v = in.v, &inv = in.inv;
    const std::vector<uint8_t> codes0(slots * width, 0);
    const std::vector<float> scales0(slots * c.hk, 0.0f);
    Tensor rq = Put(*gpu_, q, n, qdim, DType::kBF16), rk = Put(*gpu_, k, n, width, DType::kBF16);
    Tensor rv = Put(*gpu_, v, n, width, DType::kBF16);
    Fp8Cache rc = PutFp8Cache(*gpu_, codes0, codes0, scales0, scales0, num_blocks, block_size, c.hk, c.d);
    gpu_->Rope(rq.view, rk.view, gb.positions, gi, c.d);
    gpu_->StoreKv(rk.view, rv.view, gb, rc.view);
    Tensor gqkv = Put(*gpu_, qkv, n, qdim + 2 * width, DType::kBF16);
    Tensor gq = Poisoned(*gpu_, n, qdim, DType::kBF16);
    Fp8Cache gc = PutFp8Cache(*gpu_, codes0, codes0, scales0, scales0, num_blocks, block_size, c.hk, c.d);
    gpu_->RopeStoreKv(gqkv.view, gq.view, gb.positions, gi, c.d, gb, gc.view);
    Tensor cqkv = Put(cpu_, qkv, n, qdim + 2 * width, DType::kF32);
    Tensor cq = Poisoned(cpu_, n, qdim, DType::kF32);
    Fp8Cache cc = PutFp8Cache(cpu_, codes0, codes0, scales0, scales0, num_blocks, block_size, c.hk, c.d);
    cpu_.RopeStoreKv(cqkv.view, cq.view, cb.positions, inv.data(), c.d, cb, cc.view);
    ASSERT_TRUE(gpu_->Synchronize().ok());
    SCOPED_TRACE("hq " + std::to_string(c.hq) + " hk " + std::to_string(c.hk) + " d " + std::to_string(c.d));
    EXPECT_EQ(RelError(Get(*gpu_, gq.view), Get(*gpu_, rq.view)), 0.0);
    EXPECT_EQ(GetRaw<uint8_t>(*gpu_, gc.k.data(), slots * width), GetRaw<uint8_t>(*gpu_, rc.k.data(), slots * width));
    EXPECT_EQ(GetRaw<uint8_t>(*gpu_, gc.v.data(), slots * width), GetRaw<uint8_t>(*gpu_, rc.v.data(), slots * width));
    EXPECT_EQ(GetRaw<float>(*gpu_, gc.k_scale.data(), slots * c.hk),
              GetRaw<float>(*gpu_, rc.k_scale.data(), slots * c.hk));
    // Against the CPU: dequantized caches.
    auto dequant = [&](Backend& b, const Fp8Cache& f, bool v_part) {
      const std::vector<uint8_t> codes = GetRaw<uint8_t>(b, v_part ? f.v.data() : f.k.data(), slots * width);
      const std::vector<float> sc = GetRaw<float>(b, v_part ? f.v_scale.data() : f.k_scale.data(), slots * c.hk);
      std::vector<float> out(codes.size());
      for (size_t i = 0; i < codes.size(); ++i) out[i] = E4M3ToF32(codes[i]) * sc[i / c.d];
      return out;
    };
    EXPECT_LT(RelError(Get(*gpu_, gq.view), Get(cpu_, cq.view)), kBf16Tol) << "q vs cpu";
    EXPECT_LT(RelError(dequant(*gpu_, gc, false), dequant(cpu_, cc, false)), 0.07) << "k vs cpu";
    EXPECT_EQ(RelError(dequant(*gpu_, gc, true), dequant(cpu_, cc, true)), 0.0) << "v vs cpu";
  }
}

// ---- paged attention ----------------------------------------------------------------

struct AttentionCase {
  int hq, hk, d;
  std::vector<std::pair<int, int>> seqs;  // (cached prefix length, query length)
  int block_size = 16;
  // Both backends read the same E4M3 codes and scales (the difference is kernel error).
  bool fp8 = false;
  // Fresh K/V rows of every query token are stored (StoreKv) straight before the attention,
  // as a forward pass's rope + store kernel runs straight before it.
  bool store_own = false;
};

// Runs attention on the device (the backend's PagedAttention unless a test launches a
// kernel itself).
using GpuAttention = std::function<void(const TensorView& q, const DeviceBatch& batch, const KvLayerView& cache,
                                        const AttentionParams& params, TensorView out)>;

// Builds a batch over random, non-contiguous blocks, fills the whole cache with random
// K/V and compares the two backends' attention outputs.
void RunAttentionCase(Backend& gpu, CpuBackend& cpu, const AttentionCase& c, std::mt19937& rng,
                      const GpuAttention& gpu_attention = nullptr) {
  const int block_size = c.block_size;
  BatchLayout layout;
  layout.block_size = block_size;
  int max_blocks = 0, total_blocks = 0;
  for (auto [prefix, qlen] : c.seqs) {
    const int blocks = (prefix + qlen + block_size - 1) / block_size;
    max_blocks = std::max(max_blocks, blocks);
    total_blocks += blocks;
  }
  const int num_blocks = total_blocks + 7;
  std::vector<int32_t> perm(num_blocks);
  std::iota(perm.begin(), perm.end(), 0);
  std::shuffle(perm.begin(), perm.end(), rng);
  layout.max_blocks_per_seq = max_blocks;
  layout.query_start.push_back(0);
  int next = 0;
  for (auto [prefix, qlen] : c.seqs) {
    const int ctx = prefix + qlen, blocks = (ctx + block_size - 1) / block_size;
    std::vector<int32_t> table(max_blocks, -1);
    for (int b = 0; b < blocks; ++b) table[b] = perm[next++];
    for (int i = 0; i < qlen; ++i) {
      const int p = prefix + i;
      layout.token_ids.push_back(0);
      layout.positions.push_back(p);
      layout.slot_mapping.push_back(table[p / block_size] * block_size + p % block_size);
    }
    layout.query_start.push_back(layout.query_start.back() + qlen);
    layout.context_lens.push_back(ctx);
    layout.block_tables.insert(layout.block_tables.end(), table.begin(), table.end());
  }
  const int n = layout.num_tokens();
  const int64_t kv_rows = static_cast<int64_t>(num_blocks) * block_size;
  const int64_t kv_width = static_cast<int64_t>(c.hk) * c.d, q_width = static_cast<int64_t>(c.hq) * c.d;
  std::vector<float> q = RandomBf16(n * q_width, rng), k = RandomBf16(kv_rows * kv_width, rng),
                     v = RandomBf16(kv_rows * kv_width, rng);
  Tensor cq = Put(cpu, q, n, q_width, DType::kF32), gq = Put(gpu, q, n, q_width, DType::kBF16);
  Tensor ck = Put(cpu, k, kv_rows, kv_width, DType::kF32), gk = Put(gpu, k, kv_rows, kv_width, DType::kBF16);
  Tensor cv = Put(cpu, v, kv_rows, kv_width, DType::kF32), gv = Put(gpu, v, kv_rows, kv_width, DType::kBF16);
  Tensor co = Poisoned(cpu, n, q_width, DType::kF32), go = Poisoned(gpu, n, q_width, DType::kBF16);
  KvLayerView cc{ck.buf.data(), cv.buf.data(), DType::kF32, num_blocks, block_size, c.hk, c.d};
  KvLayerView gc{gk.buf.data(), gv.buf.data(), DType::kBF16, num_blocks, block_size, c.hk, c.d};
  Fp8Cache cpu_fp8, gpu_fp8;
  if (c.fp8) {
    std::vector<uint8_t> kq, vq;
    std::vector<float> ks, vs;
    QuantizeRows(k, c.hk, c.d, &kq, &ks);
    QuantizeRows(v, c.hk, c.d, &vq, &vs);
    cpu_fp8 = PutFp8Cache(cpu, kq, vq, ks, vs, num_blocks, block_size, c.hk, c.d);
    gpu_fp8 = PutFp8Cache(gpu, kq, vq, ks, vs, num_blocks, block_size, c.hk, c.d);
    cc = cpu_fp8.view;
    gc = gpu_fp8.view;
  }
  AttentionParams params{c.hq, c.hk, c.d, 1.0f / std::sqrt(static_cast<float>(c.d))};
  DeviceBatch cb = Must(cpu.UploadBatch(layout)), gb = Must(gpu.UploadBatch(layout));
  if (c.store_own) {
    const std::vector<float> nk = RandomBf16(n * kv_width, rng), nv = RandomBf16(n * kv_width, rng);
    Tensor cnk = Put(cpu, nk, n, kv_width, DType::kF32), gnk = Put(gpu, nk, n, kv_width, DType::kBF16);
    Tensor cnv = Put(cpu, nv, n, kv_width, DType::kF32), gnv = Put(gpu, nv, n, kv_width, DType::kBF16);
    cpu.StoreKv(cnk.view, cnv.view, cb, cc);
    gpu.StoreKv(gnk.view, gnv.view, gb, gc);  // no synchronisation before the attention
  }
  cpu.PagedAttention(cq.view, cb, cc, params, co.view);
  if (gpu_attention) {
    ASSERT_TRUE(gpu.Synchronize().ok());
    gpu_attention(gq.view, gb, gc, params, go.view);
  } else {
    gpu.PagedAttention(gq.view, gb, gc, params, go.view);
  }
  const std::vector<float> out = Get(gpu, go.view), ref = Get(cpu, co.view);
  EXPECT_LT(RelError(out, ref), kBf16Tol) << "hq=" << c.hq << " hk=" << c.hk << " d=" << c.d
                                          << " seqs=" << c.seqs.size() << " max_ctx=" << layout.max_context_len()
                                          << (c.fp8 ? " fp8" : "");
  // Per token too, so one wrong short sequence is not hidden by long ones.
  for (int t = 0; t < n; ++t) {
    std::vector<float> o(out.begin() + t * q_width, out.begin() + (t + 1) * q_width);
    std::vector<float> r(ref.begin() + t * q_width, ref.begin() + (t + 1) * q_width);
    ASSERT_LT(RelError(o, r), 2 * kBf16Tol) << "token " << t << " position " << layout.positions[t];
  }
}

std::vector<std::pair<int, int>> RandomDecodes(int count, int max_ctx, std::mt19937& rng) {
  std::vector<std::pair<int, int>> seqs;
  for (int i = 0; i < count; ++i) seqs.push_back({static_cast<int>(rng() % max_ctx), 1});
  return seqs;
}

TEST_F(CudaOpsTest, DecodeAttentionMatchesCpuAcrossGqaRatios) {
  struct Heads { int hq, hk, d; };
  // Group sizes 1/2/4/8/16 and odd ones (3, 5, 7) whose p·V units do not tile the CTA.
  for (Heads h : {Heads{4, 4, 64}, Heads{8, 4, 128}, Heads{16, 4, 64}, Heads{8, 1, 128}, Heads{4, 2, 8},
                  Heads{16, 1, 32}, Heads{6, 2, 256}, Heads{14, 2, 128}, Heads{10, 2, 64}, Heads{12, 4, 16}}) {
    for (int batch : {1, 5, 33}) {
      std::vector<std::pair<int, int>> seqs = RandomDecodes(batch, 1500, rng_);
      seqs[0] = {0, 1};  // a sequence with only its own token
      RunAttentionCase(*gpu_, cpu_, {h.hq, h.hk, h.d, seqs}, rng_);
    }
  }
}

// Decode attention kernels start copying the cache before the previous kernel finishes
// (programmatic launch), all but each sequence's own token, which that kernel stores: the
// output must see the own token's new rows. Small grids (one CTA per partition) and large
// ones (one warp per (sequence, kv head)), both cache formats, own tokens at every offset of
// a sub-tile and page.
TEST_F(CudaOpsTest, DecodeAttentionSeesTheOwnTokenStoredByThePreviousKernel) {
  struct Grid { int hq, hk, d, batch, max_ctx; };
  // Batches 1-4: one CTA per partition, streaming before the previous kernel ends; 80 x 32
  // kv heads: a grid deep enough to start after it; 160 x 32 over FP8: one warp per pair.
  int sms = 0;
  ASSERT_EQ(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0), cudaSuccess);
  cuda::AttentionArgs big;
  big.kv_fp8 = true;
  big.num_seqs = 160;
  big.num_heads = big.num_kv_heads = 32;
  big.head_dim = 128;
  big.max_query_len = 1;
  big.max_context_len = 120;
  ASSERT_TRUE(cuda::PlanDecodeAttention(big, sms).warp_items) << "the large grid should take the warp kernel";
  cuda::AttentionArgs deep = big, small = big;
  deep.kv_fp8 = small.kv_fp8 = false;
  deep.num_seqs = 80;
  small.num_seqs = 1;
  small.max_context_len = 3000;
  ASSERT_FALSE(cuda::PlanDecodeAttention(deep, sms).early_stream) << "80 x 32 kv heads should start after PdlWait";
  ASSERT_TRUE(cuda::PlanDecodeAttention(small, sms).early_stream) << "batch 1 should stream early";
  for (bool fp8 : {false, true}) {
    for (Grid g : {Grid{32, 32, 128, 1, 3000}, Grid{32, 32, 128, 4, 3000}, Grid{32, 8, 128, 1, 3000},
                   Grid{32, 8, 128, 4, 3000}, Grid{8, 2, 64, 3, 3000}, Grid{32, 32, 128, 80, 120},
                   Grid{32, 32, 128, 160, 120}}) {
      for (int bs : {16, 12}) {
        std::vector<std::pair<int, int>> seqs = RandomDecodes(g.batch, g.max_ctx, rng_);
        seqs[0] = {0, 1};
        if (g.batch > 1) seqs[1] = {16 * g.batch + 15, 1};  // the own token ends a sub-tile
        AttentionCase c{g.hq, g.hk, g.d, seqs, bs, fp8};
        c.store_own = true;
        SCOPED_TRACE(testing::Message() << "hq " << g.hq << " hk " << g.hk << " d " << g.d << " batch " << g.batch
                                        << " block_size " << bs << (fp8 ? " fp8" : ""));
        RunAttentionCase(*gpu_, cpu_, c, rng_);
      }
    }
  }
}

// Pages smaller and larger than a kernel's 16-token sub-tile or 64-key tile, and not a
// power of two; decodes alone and beside prefill chunks.
TEST_F(CudaOpsTest, AttentionMatchesCpuAcrossBlockSizes) {
  for (int bs : {1, 8, 12, 32, 64}) {
    SCOPED_TRACE("block_size " + std::to_string(bs));
    for (int d : {64, 128, 256}) {
      RunAttentionCase(*gpu_, cpu_, {8, 2, d, {{0, 1}, {15, 1}, {16, 1}, {200, 1}, {1500, 1}}, bs}, rng_);
      RunAttentionCase(*gpu_, cpu_, {8, 2, d, {{0, 40}, {30, 70}, {9, 1}, {130, 65}}, bs}, rng_);
    }
  }
}

TEST_F(CudaOpsTest, DecodeAttentionMatchesCpuAtLongContextLong) {
  RunAttentionCase(*gpu_, cpu_, {8, 2, 128, {{16383, 1}, {9000, 1}, {31, 1}}}, rng_);
  RunAttentionCase(*gpu_, cpu_, {32, 8, 128, {{4095, 1}, {4096, 1}}}, rng_);
  RunAttentionCase(*gpu_, cpu_, {8, 8, 64, RandomDecodes(64, 8192, rng_)}, rng_);
}

// Captured decode graphs plan for max_model_len, not the batch's longest context: short
// sequences then leave later partitions empty (or need only one, written directly), and a
// grid many waves deep has each CTA walk several partitions. The decode kernel is launched
// directly under such plans, with the fused merge and with the reduce kernel.
TEST_F(CudaOpsTest, DecodeAttentionMatchesCpuUnderPlansForLongerContexts) {
  int sms = 0;
  ASSERT_EQ(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0), cudaSuccess);
  for (int d : {64, 128}) {
    for (int grid_splits : {1, 2, 3, 0}) {  // 0: the planner's own
      for (bool fused : {true, false}) {
        SCOPED_TRACE("d " + std::to_string(d) + " grid_splits " + std::to_string(grid_splits) +
                     (fused ? " fused merge" : " reduce kernel"));
        GpuAttention launch = [&](const TensorView& q, const DeviceBatch& b, const KvLayerView& cache,
                                  const AttentionParams& p, TensorView out) {
          cuda::AttentionArgs a = cuda::AttentionArgsOf(q, b, cache, p, out);
          a.max_query_len = 1;
          a.max_context_len = 4096;  // as a graph captured for max_model_len 4096 plans
          cuda::DecodePlan plan = cuda::PlanDecodeAttention(a, sms);
          ASSERT_GT(plan.splits, 3);
          if (grid_splits > 0) plan.grid_splits = grid_splits;
          plan.fused_merge = fused;
          DeviceBuffer ws = Must(gpu_->Allocate(plan.workspace_bytes));
          ASSERT_EQ(cudaMemset(ws.data(), 0, cuda::kDecodeCounterBytes), cudaSuccess);
          cuda::LaunchDecodeAttention(a, plan, static_cast<float*>(ws.data()), nullptr);
          ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
        };
        // Lengths 1..64 fit one partition; the rest spread over several. Both cache formats
        // (FP8 under the planner's own walk and one other).
        for (bool fp8 : {false, true}) {
          if (fp8 && grid_splits != 0 && grid_splits != 3) continue;
          AttentionCase few{8, 2, d, {{0, 1}, {16, 1}, {63, 1}, {200, 1}, {1500, 1}, {4095, 1}}};
          AttentionCase many{32, 8, d, RandomDecodes(24, 4096, rng_)};
          few.fp8 = many.fp8 = fp8;
          RunAttentionCase(*gpu_, cpu_, few, rng_, launch);
          RunAttentionCase(*gpu_, cpu_, many, rng_, launch);
        }
      }
    }
  }
}

TEST_F(CudaOpsTest, PrefillAttentionMatchesCpuWithMixedDecodes) {
  struct Heads { int hq, hk, d; };
  for (Heads h : {Heads{4, 4, 64}, Heads{8, 4, 128}, Heads{16, 4, 64}, Heads{8, 1, 128}, Heads{4, 2, 8},
                  Heads{6, 3, 32}, Heads{4, 2, 256}, Heads{16, 1, 64}, Heads{10, 2, 128}}) {
    RunAttentionCase(*gpu_, cpu_, {h.hq, h.hk, h.d, {{0, 17}, {5, 64}, {37, 1}, {100, 130}, {0, 1}, {15, 2}}},
                     rng_);
  }
}

// A mixed step runs its prefill chunks on a second stream beside the decode kernel: both
// see the K/V rows stored straight before (no synchronisation), with the fork (default) and
// without it, over bf16 and FP8 caches and the one-warp-per-head decode layout.
TEST_F(CudaOpsTest, MixedStepAttentionOnTwoStreamsSeesRowsStoredJustBefore) {
  CudaBackendOptions one_stream;
  one_stream.overlap_prefill_attention = false;
  std::unique_ptr<CudaBackend> serial = Must(CudaBackend::Create(one_stream));
  for (Backend* gpu : {static_cast<Backend*>(gpu_.get()), static_cast<Backend*>(serial.get())}) {
    for (bool fp8 : {false, true}) {
      AttentionCase mixed{8, 4, 128, {{0, 17}, {5, 64}, {37, 1}, {100, 130}, {0, 1}, {15, 2}}};
      mixed.fp8 = fp8;
      mixed.store_own = true;
      RunAttentionCase(*gpu, cpu_, mixed, rng_);
      std::vector<std::pair<int, int>> seqs = RandomDecodes(80, 160, rng_);
      seqs.push_back({0, 128});
      seqs.push_back({64, 96});
      AttentionCase serving{32, 32, 128, seqs};
      serving.fp8 = fp8;
      serving.store_own = true;
      RunAttentionCase(*gpu, cpu_, serving, rng_);
    }
  }
}

TEST_F(CudaOpsTest, PrefillAttentionMatchesCpuWithLongPrefixLong) {
  RunAttentionCase(*gpu_, cpu_, {32, 8, 128, {{2000, 70}, {0, 513}, {4000, 1}}}, rng_);
}

// FP8 caches through both tensor-core kernels: GQA ratios, block sizes, long contexts,
// mixed prefill and decode batches.
TEST_F(CudaOpsTest, AttentionOverFp8CacheMatchesCpu) {
  struct Heads { int hq, hk, d; };
  for (Heads h : {Heads{4, 4, 64}, Heads{8, 4, 128}, Heads{32, 8, 128}, Heads{16, 1, 32}, Heads{14, 2, 128},
                  Heads{10, 2, 64}, Heads{32, 32, 128}}) {
    AttentionCase decodes{h.hq, h.hk, h.d, RandomDecodes(33, 1500, rng_)};
    decodes.seqs[0] = {0, 1};
    decodes.fp8 = true;
    RunAttentionCase(*gpu_, cpu_, decodes, rng_);
    AttentionCase mixed{h.hq, h.hk, h.d, {{0, 17}, {5, 64}, {37, 1}, {100, 130}, {0, 1}, {15, 2}}};
    mixed.fp8 = true;
    RunAttentionCase(*gpu_, cpu_, mixed, rng_);
  }
  // Enough sequences for the planner's one warp per (sequence, kv head) (DecodeWarpKernel).
  AttentionCase serving{32, 32, 128, RandomDecodes(80, 1200, rng_)};
  serving.fp8 = true;
  RunAttentionCase(*gpu_, cpu_, serving, rng_);
  for (int bs : {1, 8, 12, 32}) {
    AttentionCase c{8, 2, 128, {{0, 1}, {15, 1}, {16, 1}, {200, 1}, {1500, 1}, {30, 70}}, bs};
    c.fp8 = true;
    RunAttentionCase(*gpu_, cpu_, c, rng_);
  }
  AttentionCase long_ctx{8, 2, 128, {{9000, 1}, {31, 1}, {2000, 70}}};
  long_ctx.fp8 = true;
  RunAttentionCase(*gpu_, cpu_, long_ctx, rng_);
  AttentionCase many{32, 32, 128, RandomDecodes(24, 3000, rng_)};
  many.fp8 = true;
  RunAttentionCase(*gpu_, cpu_, many, rng_);
}

// The decode kernel's layouts over FP8 caches: query heads as mma rows (any group), and
// tokens as rows with up to 8 query heads as columns (the planner's choice for those
// groups), with rings of 2 and 3 sub-tiles, in CTAs of four warps per (sequence, kv head)
// or one warp per (sequence, kv head) (where the kv heads are a multiple of 4); groups 1-8,
// head dims 32/64/128, odd block sizes and contexts split over partitions.
TEST_F(CudaOpsTest, Fp8DecodeAttentionMatchesCpuUnderEachTensorCoreLayout) {
  int sms = 0;
  ASSERT_EQ(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0), cudaSuccess);
  struct Layout { bool token_rows; int ring; bool warp; };
  for (Layout layout : {Layout{false, 3, false}, Layout{true, 2, false}, Layout{true, 3, false},
                        Layout{false, 3, true}, Layout{true, 2, true}, Layout{true, 3, true}}) {
    SCOPED_TRACE(std::string(layout.token_rows ? "token rows" : "head rows") + ", ring " +
                 std::to_string(layout.ring) + (layout.warp ? ", warp per kv head" : ""));
    GpuAttention launch = [&](const TensorView& q, const DeviceBatch& b, const KvLayerView& cache,
                              const AttentionParams& p, TensorView out) {
      cuda::AttentionArgs a = cuda::AttentionArgsOf(q, b, cache, p, out);
      cuda::DecodePlan want;
      want.token_rows = layout.token_rows;
      want.ring_stages = layout.ring;
      want.warp_items = layout.warp;
      const cuda::DecodePlan plan = cuda::PlanDecodeAttention(a, sms, &want);
      ASSERT_EQ(plan.token_rows, layout.token_rows);
      ASSERT_EQ(plan.warp_items, layout.warp && p.num_kv_heads % 4 == 0);
      DeviceBuffer ws = Must(gpu_->Allocate(std::max<size_t>(plan.workspace_bytes, 1)));
      ASSERT_EQ(cudaMemset(ws.data(), 0, std::min(plan.workspace_bytes, cuda::kDecodeCounterBytes)), cudaSuccess);
      cuda::LaunchDecodeAttention(a, plan, static_cast<float*>(ws.data()), nullptr);
      ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    };
    struct Heads { int hq, hk, d; };
    for (Heads h : {Heads{32, 32, 128}, Heads{8, 4, 64}, Heads{6, 2, 32}, Heads{8, 1, 128}, Heads{8, 1, 64},
                    Heads{10, 2, 64}, Heads{14, 2, 128}, Heads{32, 8, 128}}) {
      AttentionCase c{h.hq, h.hk, h.d, RandomDecodes(17, 1500, rng_)};
      c.seqs[0] = {0, 1};
      c.seqs[1] = {15, 1};
      c.fp8 = true;
      RunAttentionCase(*gpu_, cpu_, c, rng_, launch);
    }
    for (int hk : {2, 4}) {
      AttentionCase odd{4 * hk, hk, 128, {{0, 1}, {16, 1}, {200, 1}, {3000, 1}}, 12};
      odd.fp8 = true;
      RunAttentionCase(*gpu_, cpu_, odd, rng_, launch);
    }
  }
}

}  // namespace
}  // namespace tessera
