// The CPU multi-adapter LoRA op against a per-token double-precision reference: mixed
// slots, runs long and short, rank-0 and base tokens untouched, column windows, and
// results that do not depend on the batch around a token.
#include <cmath>
#include <random>

#include "gtest/gtest.h"
#include "kernels/cpu/cpu_backend.h"

namespace tessera {
namespace {

// Slot tables for one layer and target, f32 on the host (= the CPU device).
struct Tables {
  int32_t num_slots, max_rank;
  int64_t in, out;
  std::vector<float> a, b_t;
  std::vector<int32_t> ranks;
  LoraModuleSlots modules[kNumLoraTargets];
  LoraSlotTables tables;

  Tables(int32_t slots, int32_t rank, int64_t in_f, int64_t out_f, std::vector<int32_t> slot_ranks, std::mt19937& rng)
      : num_slots(slots), max_rank(rank), in(in_f), out(out_f), ranks(std::move(slot_ranks)) {
    std::normal_distribution<float> d(0.0f, 1.0f);
    a.resize(static_cast<size_t>(slots) * rank * in);
    b_t.resize(static_cast<size_t>(slots) * rank * out);
    for (float& v : a) v = d(rng);
    for (float& v : b_t) v = d(rng);
    for (auto& m : modules) m = {a.data(), b_t.data(), ranks.data(), in, out};
    tables.modules = modules;
    tables.num_layers = 1;
    tables.num_slots = slots;
    tables.max_rank = rank;
    tables.dtype = DType::kF32;
  }

  // out[t] + (x[t] · A_sᵀ) · Bᵀ in double, for one token.
  std::vector<double> Reference(const float* x, const float* out_row, int32_t slot) const {
    std::vector<double> r(out_row, out_row + out);
    if (slot < 0) return r;
    for (int k = 0; k < ranks[slot]; ++k) {
      double s = 0;
      for (int64_t i = 0; i < in; ++i) s += double(x[i]) * a[(static_cast<size_t>(slot) * max_rank + k) * in + i];
      for (int64_t j = 0; j < out; ++j) r[j] += s * b_t[(static_cast<size_t>(slot) * max_rank + k) * out + j];
    }
    return r;
  }
};

std::vector<float> Random(size_t n, std::mt19937& rng) {
  std::normal_distribution<float> d(0.0f, 1.0f);
  std::vector<float> v(n);
  for (float& x : v) x = d(rng);
  return v;
}

TEST(CpuLoraTest, MatchesPerTokenReferenceAcrossSlotsAndRanks) {
  std::mt19937 rng(7);
  CpuBackend cpu;
  // Slot 2 has rank 0 for this module: its tokens must stay untouched, like base tokens.
  Tables t(4, 8, 37, 29, {8, 3, 0, 5}, rng);
  std::vector<int32_t> slots;
  for (int i = 0; i < 19; ++i) slots.push_back(0);  // a prefill run longer than a tile
  for (int s : {-1, 1, 3, -1, 2, 0, 1, 1, 3}) slots.push_back(s);
  for (int i = 0; i < 9; ++i) slots.push_back(3);
  const int n = static_cast<int>(slots.size());
  auto x = Random(n * t.in, rng);
  auto out = Random(n * t.out, rng);
  const auto before = out;
  LoraBatch batch{slots.data(), n, &t.tables};
  cpu.LoraApply({x.data(), DType::kF32, n, t.in}, batch, 0, kLoraV, {out.data(), DType::kF32, n, t.out}, 0);
  ASSERT_TRUE(cpu.Synchronize().ok());
  for (int i = 0; i < n; ++i) {
    auto ref = t.Reference(&x[i * t.in], &before[i * t.out], slots[i]);
    const bool untouched = slots[i] < 0 || t.ranks[slots[i]] == 0;
    for (int64_t j = 0; j < t.out; ++j) {
      if (untouched) {
        ASSERT_EQ(out[i * t.out + j], before[i * t.out + j]) << "token " << i;
      } else {
        ASSERT_NEAR(out[i * t.out + j], ref[j], 1e-4 * (1 + std::abs(ref[j]))) << "token " << i << " col " << j;
      }
    }
  }
}

TEST(CpuLoraTest, UpdatesOnlyItsColumnWindow) {
  std::mt19937 rng(8);
  CpuBackend cpu;
  Tables t(2, 4, 16, 10, {4, 2}, rng);
  std::vector<int32_t> slots = {1, 0, 1};
  const int n = 3, width = 2 * 10;
  auto x = Random(n * t.in, rng);
  auto out = Random(n * width, rng);
  const auto before = out;
  LoraBatch batch{slots.data(), n, &t.tables};
  cpu.LoraApply({x.data(), DType::kF32, n, t.in}, batch, 0, kLoraUp, {out.data(), DType::kF32, n, width}, 10);
  ASSERT_TRUE(cpu.Synchronize().ok());
  for (int i = 0; i < n; ++i) {
    std::vector<float> right(before.begin() + i * width + 10, before.begin() + (i + 1) * width);
    auto ref = t.Reference(&x[i * t.in], right.data(), slots[i]);
    for (int j = 0; j < 10; ++j) {
      EXPECT_EQ(out[i * width + j], before[i * width + j]);
      EXPECT_NEAR(out[i * width + 10 + j], ref[j], 1e-4 * (1 + std::abs(ref[j])));
    }
  }
}

TEST(CpuLoraTest, TokenResultDoesNotDependOnTheBatchAroundIt) {
  std::mt19937 rng(9);
  CpuBackend cpu;
  Tables t(3, 16, 64, 172, {16, 7, 12}, rng);
  const int n = 21;
  std::vector<int32_t> slots(n, 1);
  slots[3] = 0;
  slots[17] = 2;
  auto x = Random(n * t.in, rng);
  std::vector<float> batched(n * t.out, 0.0f);
  LoraBatch batch{slots.data(), n, &t.tables};
  cpu.LoraApply({x.data(), DType::kF32, n, t.in}, batch, 0, kLoraGate, {batched.data(), DType::kF32, n, t.out}, 0);
  for (int i = 0; i < n; ++i) {
    std::vector<float> alone(t.out, 0.0f);
    LoraBatch one{&slots[i], 1, &t.tables};
    cpu.LoraApply({&x[i * t.in], DType::kF32, 1, t.in}, one, 0, kLoraGate, {alone.data(), DType::kF32, 1, t.out}, 0);
    for (int64_t j = 0; j < t.out; ++j) ASSERT_EQ(batched[i * t.out + j], alone[j]) << "token " << i;
  }
  ASSERT_TRUE(cpu.Synchronize().ok());
}

TEST(CpuLoraTest, ReportsABadSlotAtSynchronizeOnce) {
  std::mt19937 rng(10);
  CpuBackend cpu;
  Tables t(2, 4, 8, 8, {4, 4}, rng);
  std::vector<int32_t> slots = {0, 2};
  auto x = Random(2 * 8, rng);
  std::vector<float> out(2 * 8, 0.0f);
  LoraBatch batch{slots.data(), 2, &t.tables};
  cpu.LoraApply({x.data(), DType::kF32, 2, 8}, batch, 0, kLoraQ, {out.data(), DType::kF32, 2, 8}, 0);
  absl::Status st = cpu.Synchronize();
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("slot 2"), std::string::npos) << st;
  EXPECT_TRUE(cpu.Synchronize().ok());
  // A window that does not fit the output is an error too, not a write past the row.
  slots[1] = 1;
  cpu.LoraApply({x.data(), DType::kF32, 2, 8}, batch, 0, kLoraQ, {out.data(), DType::kF32, 2, 8}, 4);
  EXPECT_FALSE(cpu.Synchronize().ok());
}

}  // namespace
}  // namespace tessera
