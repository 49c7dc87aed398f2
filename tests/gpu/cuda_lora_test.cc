// Multi-LoRA on CUDA against the CPU reference at Llama-like widths, across the switch from
// the fused BGMV decode kernel (up to kLoraBgmvMaxTokens tokens) to SGMV, with one adapter
// per token, ranks that are not multiples of the kernel's row groups, repeated launches
// (the per-token arrival counters must re-arm) and graph replay with slots changed
// between replays. Skipped when no CUDA device is visible.
#include <algorithm>
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/backend.h"
#include "kernels/cpu/cpu_backend.h"
#include "tests/gpu/gpu_test_util.h"

namespace tessera {
namespace {

using namespace gpu_testing;  // NOLINT: the tests' own helpers

constexpr int32_t kBgmvMaxTokens = 128;  // cuda::kLoraBgmvMaxTokens

template <typename T>
DeviceBuffer PutRaw(Backend& b, const std::vector<T>& host) {
  DeviceBuffer buf = Must(b.Allocate(host.size() * sizeof(T)));
  EXPECT_TRUE(b.CopyToDevice(buf.data(), host.data(), host.size() * sizeof(T)).ok());
  return buf;
}

// One target's slot tables (A [slots, max_rank, in], Bᵀ [slots, max_rank, out]) on the CPU
// (f32) and the GPU (bf16), filled with the same bf16-rounded values, rows past each
// slot's rank included so that a kernel reading them is caught.
struct Module {
  int64_t in = 0, out = 0;
  std::vector<int32_t> ranks;
  DeviceBuffer ca, cb, cr, ga, gb, gr;
  std::vector<LoraModuleSlots> cmods, gmods;
  LoraSlotTables ct, gt;

  Module(Backend& gpu, CpuBackend& cpu, int64_t in_features, int64_t out_features, int32_t max_rank,
         std::vector<int32_t> slot_ranks, int target, std::mt19937& rng)
      : in(in_features), out(out_features), ranks(std::move(slot_ranks)) {
    const int32_t slots = static_cast<int32_t>(ranks.size());
    const auto a = RandomBf16(static_cast<size_t>(slots) * max_rank * in, rng, 1.0f / std::sqrt(float(in)));
    const auto bt = RandomBf16(static_cast<size_t>(slots) * max_rank * out, rng, 0.3f);
    ca = std::move(Put(cpu, a, 1, a.size(), DType::kF32).buf);
    cb = std::move(Put(cpu, bt, 1, bt.size(), DType::kF32).buf);
    ga = std::move(Put(gpu, a, 1, a.size(), DType::kBF16).buf);
    gb = std::move(Put(gpu, bt, 1, bt.size(), DType::kBF16).buf);
    cr = PutRaw(cpu, ranks);
    gr = PutRaw(gpu, ranks);
    cmods.resize(kNumLoraTargets);
    gmods.resize(kNumLoraTargets);
    cmods[target] = {ca.data(), cb.data(), static_cast<const int32_t*>(cr.data()), in, out};
    gmods[target] = {ga.data(), gb.data(), static_cast<const int32_t*>(gr.data()), in, out};
    ct = {cmods.data(), 1, slots, max_rank, DType::kF32};
    gt = {gmods.data(), 1, slots, max_rank, DType::kBF16};
  }
};

class CudaLoraTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!CudaBackendAvailable()) GTEST_SKIP() << "no CUDA device visible";
    gpu_ = Must(CreateBackend("cuda"));
  }

  // The CPU result of one LoraApply over `slots`, starting from `base` [n, out_cols].
  std::vector<float> Reference(const Module& m, int target, const std::vector<int32_t>& slots,
                               const std::vector<float>& x, const std::vector<float>& base, int64_t out_cols,
                               int64_t col) {
    const int32_t n = static_cast<int32_t>(slots.size());
    Tensor cx = Put(cpu_, x, n, m.in, DType::kF32), co = Put(cpu_, base, n, out_cols, DType::kF32);
    LoraBatch b{slots.data(), n, &m.ct};
    cpu_.LoraApply(cx.view, b, 0, target, co.view, col);
    return Get(cpu_, co.view);
  }

  // Checks the GPU result `out` against `ref`: close on the updated part, bit-exact
  // everywhere the op must not write.
  void ExpectMatches(const Module& m, const std::vector<int32_t>& slots, const std::vector<float>& base,
                     const std::vector<float>& ref, const std::vector<float>& out, int64_t out_cols, int64_t col,
                     const std::string& what) {
    std::vector<float> ref_delta(ref.size()), out_delta(out.size());
    for (size_t i = 0; i < ref.size(); ++i) {
      ref_delta[i] = ref[i] - base[i];
      out_delta[i] = out[i] - base[i];
    }
    EXPECT_LT(RelError(out_delta, ref_delta), 2e-2) << what;
    for (size_t t = 0; t < slots.size(); ++t) {
      const bool touched = slots[t] >= 0 && m.ranks[slots[t]] > 0;
      for (int64_t c = 0; c < out_cols; ++c) {
        if (touched && c >= col && c < col + m.out) continue;
        const size_t i = t * out_cols + c;
        ASSERT_EQ(out[i], base[i]) << what << " token " << t << " column " << c;
      }
    }
  }

  // Runs one LoraApply on both backends and compares.
  void RunCase(const Module& m, int target, const std::vector<int32_t>& slots, int64_t out_cols, int64_t col,
               DType out_dtype, const std::string& what) {
    const int32_t n = static_cast<int32_t>(slots.size());
    const auto x = RandomBf16(n * m.in, rng_), base = RandomBf16(n * out_cols, rng_, 0.5f);
    const auto ref = Reference(m, target, slots, x, base, out_cols, col);
    Tensor gx = Put(*gpu_, x, n, m.in, DType::kBF16), go = Put(*gpu_, base, n, out_cols, out_dtype);
    DeviceBuffer gs = PutRaw(*gpu_, slots);
    LoraBatch b{static_cast<const int32_t*>(gs.data()), n, &m.gt};
    gpu_->LoraApply(gx.view, b, 0, target, go.view, col);
    ExpectMatches(m, slots, base, ref, Get(*gpu_, go.view), out_cols, col, what);
  }

  std::vector<int32_t> OnePerToken(int n, int num_slots) {
    std::vector<int32_t> s(n);
    for (int i = 0; i < n; ++i) s[i] = i % (num_slots + 1) - 1;  // every slot and the base model
    std::shuffle(s.begin(), s.end(), rng_);
    return s;
  }

  std::unique_ptr<Backend> gpu_;
  CpuBackend cpu_;
  std::mt19937 rng_{97};
};

TEST_F(CudaLoraTest, DecodeBatchesMatchCpuOnBothSidesOfTheBgmvLimit) {
  // 33 slots: ranks 16 (the benchmark's), 40 (a partial row group), 64 (the table's max), 0.
  std::vector<int32_t> ranks(33, 16);
  ranks[1] = 40;
  ranks[2] = 64;
  ranks[3] = 0;
  ranks[4] = 5;
  const Module q(*gpu_, cpu_, 1024, 1024, 64, ranks, kLoraQ, rng_);
  const Module down(*gpu_, cpu_, 2752, 1024, 64, ranks, kLoraDown, rng_);
  const Module up(*gpu_, cpu_, 1024, 2752, 64, ranks, kLoraUp, rng_);
  for (int n : {1, 2, 31, 32, 33, kBgmvMaxTokens, kBgmvMaxTokens + 1, 200}) {
    const auto slots = OnePerToken(n, 33);
    const std::string what = std::to_string(n) + " tokens";
    RunCase(q, kLoraQ, slots, 1024, 0, DType::kBF16, "q, " + what);
    RunCase(down, kLoraDown, slots, 1024, 0, DType::kBF16, "down, " + what);
    RunCase(up, kLoraUp, slots, 2 * 2752, 2752, DType::kBF16, "up half of gate_up, " + what);
  }
}

// q, k and v deltas into their column ranges of one fused output, in one group call, equal
// three single applications on the CPU (BGMV and SGMV batches, GQA-sized k/v).
TEST_F(CudaLoraTest, GroupedTargetsMatchCpuAppliedOneByOne) {
  std::vector<int32_t> ranks(9, 16);
  ranks[2] = 8;
  ranks[5] = 0;
  const Module q(*gpu_, cpu_, 1024, 1024, 16, ranks, kLoraQ, rng_);
  const Module k(*gpu_, cpu_, 1024, 256, 16, ranks, kLoraK, rng_);
  const Module v(*gpu_, cpu_, 1024, 256, 16, ranks, kLoraV, rng_);
  std::vector<LoraModuleSlots> cmods(kNumLoraTargets), gmods(kNumLoraTargets);
  for (const Module* m : {&q, &k, &v}) {
    for (int t = 0; t < kNumLoraTargets; ++t) {
      if (m->gmods[t].a != nullptr) {
        cmods[t] = m->cmods[t];
        gmods[t] = m->gmods[t];
      }
    }
  }
  const LoraSlotTables ct{cmods.data(), 1, 9, 16, DType::kF32}, gt{gmods.data(), 1, 9, 16, DType::kBF16};
  const int64_t cols = 1024 + 256 + 256;
  for (int n : {1, 32, kBgmvMaxTokens + 1}) {
    const auto slots = OnePerToken(n, 9);
    const auto x = RandomBf16(n * 1024, rng_), base = RandomBf16(n * cols, rng_, 0.5f);
    Tensor cx = Put(cpu_, x, n, 1024, DType::kF32), co = Put(cpu_, base, n, cols, DType::kF32);
    LoraBatch cb{slots.data(), n, &ct};
    cpu_.LoraApply(cx.view, cb, 0, kLoraQ, co.view, 0);
    cpu_.LoraApply(cx.view, cb, 0, kLoraK, co.view, 1024);
    cpu_.LoraApply(cx.view, cb, 0, kLoraV, co.view, 1280);
    Tensor gx = Put(*gpu_, x, n, 1024, DType::kBF16), go = Put(*gpu_, base, n, cols, DType::kBF16);
    DeviceBuffer gs = PutRaw(*gpu_, slots);
    LoraBatch gb{static_cast<const int32_t*>(gs.data()), n, &gt};
    const Backend::LoraTarget targets[] = {{kLoraQ, go.view, 0}, {kLoraK, go.view, 1024}, {kLoraV, go.view, 1280}};
    gpu_->LoraApplyGroup(gx.view, gb, 0, targets);
    const std::vector<float> ref = Get(cpu_, co.view), out = Get(*gpu_, go.view);
    std::vector<float> ref_delta(ref.size()), out_delta(out.size());
    for (size_t i = 0; i < ref.size(); ++i) {
      ref_delta[i] = ref[i] - base[i];
      out_delta[i] = out[i] - base[i];
    }
    EXPECT_LT(RelError(out_delta, ref_delta), 2e-2) << n << " tokens";
    ASSERT_TRUE(gpu_->Synchronize().ok());
  }
}

TEST_F(CudaLoraTest, F32OutputsAndUnalignedColumnOffsetsMatchCpu) {
  const Module m(*gpu_, cpu_, 512, 256, 16, {16, 8, 16}, kLoraV, rng_);
  for (int n : {3, 32, 150}) {
    const auto slots = OnePerToken(n, 3);
    RunCase(m, kLoraV, slots, 256, 0, DType::kF32, "f32 out, " + std::to_string(n) + " tokens");
    RunCase(m, kLoraV, slots, 256 + 12, 5, DType::kBF16, "column offset 5, " + std::to_string(n) + " tokens");
  }
}

TEST_F(CudaLoraTest, RepeatedLaunchesOfDifferentSizesGiveTheSameResults) {
  const Module m(*gpu_, cpu_, 2048, 2048, 16, std::vector<int32_t>(32, 16), kLoraO, rng_);
  struct Run {
    std::vector<int32_t> slots;
    std::vector<float> x, base;
    std::vector<float> first;
  };
  std::vector<Run> runs;
  for (int n : {32, 7, 32, 1, 64}) {
    Run r;
    r.slots = OnePerToken(n, 32);
    r.x = RandomBf16(n * m.in, rng_);
    r.base = RandomBf16(n * m.out, rng_, 0.5f);
    runs.push_back(std::move(r));
  }
  auto apply = [&](const Run& r) {
    const int32_t n = static_cast<int32_t>(r.slots.size());
    Tensor gx = Put(*gpu_, r.x, n, m.in, DType::kBF16), go = Put(*gpu_, r.base, n, m.out, DType::kBF16);
    DeviceBuffer gs = PutRaw(*gpu_, r.slots);
    LoraBatch b{static_cast<const int32_t*>(gs.data()), n, &m.gt};
    gpu_->LoraApply(gx.view, b, 0, kLoraO, go.view, 0);
    return Get(*gpu_, go.view);
  };
  for (Run& r : runs) {
    r.first = apply(r);
    ExpectMatches(m, r.slots, r.base, Reference(m, kLoraO, r.slots, r.x, r.base, m.out, 0), r.first, m.out, 0,
                  std::to_string(r.slots.size()) + " tokens");
  }
  for (int round = 0; round < 3; ++round) {
    for (const Run& r : runs) EXPECT_EQ(apply(r), r.first) << "round " << round << ", " << r.slots.size() << " tokens";
  }
}

TEST_F(CudaLoraTest, GraphReplayReadsSlotsAndRanksWrittenAfterCapture) {
  Module m(*gpu_, cpu_, 1024, 1024, 16, std::vector<int32_t>(8, 16), kLoraQ, rng_);
  const int32_t n = 32;
  const auto x = RandomBf16(n * m.in, rng_), base = RandomBf16(n * m.out, rng_, 0.5f);
  Tensor gx = Put(*gpu_, x, n, m.in, DType::kBF16), go = Put(*gpu_, base, n, m.out, DType::kBF16);
  std::vector<int32_t> slots(n, -1);
  DeviceBuffer gs = PutRaw(*gpu_, slots);
  LoraBatch b{static_cast<const int32_t*>(gs.data()), n, &m.gt};
  // Warm up (sizes the workspace), then capture with every token on the base model.
  gpu_->LoraApply(gx.view, b, 0, kLoraQ, go.view, 0);
  ASSERT_EQ(Get(*gpu_, go.view), base);
  ASSERT_TRUE(gpu_->BeginCapture().ok());
  gpu_->LoraApply(gx.view, b, 0, kLoraQ, go.view, 0);
  auto graph = gpu_->EndCapture();
  ASSERT_TRUE(graph.ok()) << graph.status();
  for (int round = 0; round < 3; ++round) {
    slots = OnePerToken(n, 8);
    if (round == 2) {
      m.ranks[3] = 0;  // a cleared slot (an unloaded adapter) must stop applying
      ASSERT_TRUE(gpu_->CopyToDevice(m.gr.data(), m.ranks.data(), m.ranks.size() * sizeof(int32_t)).ok());
      ASSERT_TRUE(cpu_.CopyToDevice(m.cr.data(), m.ranks.data(), m.ranks.size() * sizeof(int32_t)).ok());
    }
    ASSERT_TRUE(gpu_->CopyToDevice(gs.data(), slots.data(), slots.size() * sizeof(int32_t)).ok());
    std::vector<uint16_t> raw(base.size());
    ConvertFromF32(base.data(), DType::kBF16, raw.data(), raw.size());
    ASSERT_TRUE(gpu_->CopyToDevice(go.buf.data(), raw.data(), raw.size() * sizeof(uint16_t)).ok());
    ASSERT_TRUE(gpu_->Replay(*graph).ok());
    ExpectMatches(m, slots, base, Reference(m, kLoraQ, slots, x, base, m.out, 0), Get(*gpu_, go.view), m.out, 0,
                  "replay " + std::to_string(round));
  }
  gpu_->ClearGraphs();
}

}  // namespace
}  // namespace tessera
