// CPU reference ops against straightforward double-precision formulas, over odd shapes,
// every weight dtype, GQA, and paged K/V scattered over a shuffled block table.
#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>

#include "gtest/gtest.h"
#include "kernels/cpu/cpu_backend.h"
#include "runtime/common/thread_pool.h"

namespace tessera {
namespace {

std::vector<float> Random(size_t n, std::mt19937& rng, float scale = 1.0f) {
  std::normal_distribution<float> d(0.0f, scale);
  std::vector<float> v(n);
  for (float& x : v) x = d(rng);
  return v;
}

double RelError(const std::vector<float>& got, const std::vector<double>& ref) {
  double num = 0, den = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    num += (got[i] - ref[i]) * (got[i] - ref[i]);
    den += ref[i] * ref[i];
  }
  return std::sqrt(num / std::max(den, 1e-30));
}

TensorView View(std::vector<float>& v, int64_t rows, int64_t cols) { return {v.data(), DType::kF32, rows, cols}; }

TEST(CpuOpsTest, MatmulMatchesDoubleReferenceForEveryWeightDtype) {
  std::mt19937 rng(1);
  CpuBackend cpu;
  for (auto [n, k, m] : std::vector<std::tuple<int, int, int>>{{1, 64, 172}, {7, 33, 9}, {3, 1, 5}, {17, 130, 31}}) {
    auto x = Random(n * k, rng);
    auto w32 = Random(m * k, rng);
    for (DType dt : {DType::kF32, DType::kBF16, DType::kF16}) {
      std::vector<uint16_t> w16(m * k);
      std::vector<float> wq(m * k);  // the weights as the kernel sees them
      const void* wptr = w32.data();
      if (dt != DType::kF32) {
        ConvertFromF32(w32.data(), dt, w16.data(), w16.size());
        ConvertToF32(w16.data(), dt, wq.data(), wq.size());
        wptr = w16.data();
      } else {
        wq = w32;
      }
      std::vector<double> ref(n * m, 0.0);
      for (int i = 0; i < n; ++i)
        for (int j = 0; j < m; ++j)
          for (int t = 0; t < k; ++t) ref[i * m + j] += static_cast<double>(x[i * k + t]) * wq[j * k + t];
      std::vector<float> out(n * m, NAN);
      LinearWeight w;
      w.dense = {const_cast<void*>(wptr), dt, m, k};
      cpu.Matmul(View(x, n, k), w, View(out, n, m));
      EXPECT_LT(RelError(out, ref), 1e-5) << n << "x" << k << "x" << m << " " << DTypeName(dt);
    }
  }
}

TEST(CpuOpsTest, RmsNormAndFusedResidualAdd) {
  std::mt19937 rng(2);
  CpuBackend cpu;
  const int rows = 5, d = 37;
  auto x = Random(rows * d, rng), w = Random(d, rng), res = Random(rows * d, rng);
  std::vector<float> out(rows * d);
  auto res_before = res;
  cpu.AddRmsNorm(View(x, rows, d), View(res, rows, d), View(w, 1, d), 1e-5f, View(out, rows, d));
  std::vector<double> ref(rows * d);
  for (int r = 0; r < rows; ++r) {
    double ss = 0;
    for (int j = 0; j < d; ++j) {
      double s = res_before[r * d + j] + x[r * d + j];
      EXPECT_NEAR(res[r * d + j], s, 1e-6);
      ss += s * s;
    }
    double inv = 1.0 / std::sqrt(ss / d + 1e-5);
    for (int j = 0; j < d; ++j) ref[r * d + j] = (res_before[r * d + j] + x[r * d + j]) * inv * w[j];
  }
  EXPECT_LT(RelError(out, ref), 1e-6);
}

TEST(CpuOpsTest, RopeRotatesHalvesByPositionTimesFrequency) {
  std::mt19937 rng(3);
  CpuBackend cpu;
  const int T = 3, D = 8, Hq = 2, Hk = 1;
  auto q = Random(T * Hq * D, rng), k = Random(T * Hk * D, rng);
  auto q0 = q;
  std::vector<float> inv = {1.0f, 0.1f, 0.01f, 0.001f};
  std::vector<int32_t> pos = {0, 5, 1000};
  cpu.Rope(View(q, T, Hq * D), View(k, T, Hk * D), pos.data(), inv.data(), D);
  for (int t = 0; t < T; ++t)
    for (int h = 0; h < Hq; ++h)
      for (int i = 0; i < D / 2; ++i) {
        double a = pos[t] * static_cast<double>(inv[i]);
        double x1 = q0[t * Hq * D + h * D + i], x2 = q0[t * Hq * D + h * D + i + D / 2];
        EXPECT_NEAR(q[t * Hq * D + h * D + i], x1 * std::cos(a) - x2 * std::sin(a), 1e-5);
        EXPECT_NEAR(q[t * Hq * D + h * D + i + D / 2], x2 * std::cos(a) + x1 * std::sin(a), 1e-5);
      }
}

TEST(CpuOpsTest, SiluMulAndEmbedding) {
  CpuBackend cpu;
  std::vector<float> gu = {1.0f, -2.0f, 3.0f, 4.0f};  // gate {1,-2}, up {3,4}
  std::vector<float> out(2);
  cpu.SiluMul(View(gu, 1, 4), View(out, 1, 2));
  EXPECT_NEAR(out[0], 1.0 / (1.0 + std::exp(-1.0)) * 3.0, 1e-6);
  EXPECT_NEAR(out[1], -2.0 / (1.0 + std::exp(2.0)) * 4.0, 1e-6);
  std::vector<uint16_t> table(3 * 2);
  std::vector<float> tf = {0.5f, 1.5f, -2.0f, 4.0f, 8.0f, -0.25f};
  ConvertFromF32(tf.data(), DType::kBF16, table.data(), 6);
  std::vector<int32_t> ids = {2, 0};
  std::vector<float> emb(4);
  cpu.Embedding({table.data(), DType::kBF16, 3, 2}, ids.data(), 2, View(emb, 2, 2));
  EXPECT_EQ(emb, (std::vector<float>{8.0f, -0.25f, 0.5f, 1.5f}));
}

TEST(CpuOpsTest, SiluMulMatmulIsSiluMulThenMatmul) {
  std::mt19937 rng(11);
  CpuBackend cpu;
  const int n = 3, f = 40, m = 24;
  auto gu = Random(n * 2 * f, rng, 2.0f), w = Random(m * f, rng);
  std::vector<float> act(n * f), two_ops(n * m), fused(n * m), scratch(n * f);
  cpu.SiluMul(View(gu, n, 2 * f), View(act, n, f));
  cpu.Matmul(View(act, n, f), LinearWeight{View(w, m, f)}, View(two_ops, n, m));
  cpu.SiluMulMatmul(View(gu, n, 2 * f), View(scratch, n, f), LinearWeight{View(w, m, f)}, View(fused, n, m));
  EXPECT_EQ(fused, two_ops);
  // And both against the formula in double precision.
  std::vector<double> ref(n * m, 0.0);
  for (int r = 0; r < n; ++r)
    for (int j = 0; j < m; ++j)
      for (int i = 0; i < f; ++i) {
        const double g = gu[r * 2 * f + i], u = gu[r * 2 * f + f + i];
        ref[r * m + j] += g / (1.0 + std::exp(-g)) * u * w[j * f + i];
      }
  EXPECT_LT(RelError(fused, ref), 1e-5);
}

// Naive attention over contiguous per-sequence K/V, to check the paged kernel against.
TEST(CpuOpsTest, PagedAttentionMatchesContiguousAttentionForMixedBatches) {
  std::mt19937 rng(4);
  CpuBackend cpu;
  const int Hq = 8, Hk = 2, D = 16, bs = 16;
  // Three sequences: a decode at context 40, a prefill chunk of 5 tokens starting at 20,
  // and a fresh prefill of 17 tokens.
  struct Seq { int start, len; };
  std::vector<Seq> seqs = {{39, 1}, {20, 5}, {0, 17}};
  int max_blocks = 4, num_blocks = 16;
  std::vector<int32_t> perm(num_blocks);
  std::iota(perm.begin(), perm.end(), 0);
  std::shuffle(perm.begin(), perm.end(), rng);
  BatchLayout L;
  L.block_size = bs;
  L.max_blocks_per_seq = max_blocks;
  std::vector<std::vector<float>> kseq, vseq;  // full per-sequence K/V [ctx, Hk*D]
  std::vector<float> kc(num_blocks * bs * Hk * D), vc(num_blocks * bs * Hk * D);
  L.query_start = {0};
  for (size_t s = 0; s < seqs.size(); ++s) {
    const int ctx = seqs[s].start + seqs[s].len;
    kseq.push_back(Random(ctx * Hk * D, rng));
    vseq.push_back(Random(ctx * Hk * D, rng));
    for (int b = 0; b < max_blocks; ++b) L.block_tables.push_back(perm[s * max_blocks + b]);
    for (int p = 0; p < ctx; ++p) {
      int slot = L.block_tables[s * max_blocks + p / bs] * bs + p % bs;
      std::copy_n(&kseq[s][p * Hk * D], Hk * D, &kc[slot * Hk * D]);
      std::copy_n(&vseq[s][p * Hk * D], Hk * D, &vc[slot * Hk * D]);
      if (p >= seqs[s].start) {
        L.token_ids.push_back(0);
        L.positions.push_back(p);
        L.slot_mapping.push_back(slot);
      }
    }
    L.query_start.push_back(L.query_start.back() + seqs[s].len);
    L.context_lens.push_back(ctx);
  }
  const int T = L.num_tokens();
  auto q = Random(T * Hq * D, rng);
  std::vector<float> out(T * Hq * D, NAN);
  auto db = cpu.UploadBatch(L);
  ASSERT_TRUE(db.ok());
  KvLayerView kv{kc.data(), vc.data(), DType::kF32, num_blocks, bs, Hk, D};
  AttentionParams ap{Hq, Hk, D, 1.0f / std::sqrt(static_cast<float>(D))};
  cpu.PagedAttention(View(q, T, Hq * D), *db, kv, ap, View(out, T, Hq * D));
  std::vector<double> ref(T * Hq * D);
  int t = 0;
  for (size_t s = 0; s < seqs.size(); ++s) {
    for (int i = 0; i < seqs[s].len; ++i, ++t) {
      const int p = seqs[s].start + i;
      for (int h = 0; h < Hq; ++h) {
        const int kh = h / (Hq / Hk);
        std::vector<double> sc(p + 1);
        double mx = -1e30;
        for (int j = 0; j <= p; ++j) {
          double dot = 0;
          for (int d = 0; d < D; ++d) dot += q[t * Hq * D + h * D + d] * kseq[s][j * Hk * D + kh * D + d];
          sc[j] = dot / std::sqrt(static_cast<double>(D));
          mx = std::max(mx, sc[j]);
        }
        double z = 0;
        for (double& v : sc) z += (v = std::exp(v - mx));
        for (int d = 0; d < D; ++d) {
          double acc = 0;
          for (int j = 0; j <= p; ++j) acc += sc[j] * vseq[s][j * Hk * D + kh * D + d];
          ref[t * Hq * D + h * D + d] = acc / z;
        }
      }
    }
  }
  EXPECT_LT(RelError(out, ref), 1e-5);
}

TEST(CpuOpsTest, StoreKvSkipsNegativeSlotsAndGatherRowsPicksRows) {
  CpuBackend cpu;
  const int width = 4;
  std::vector<float> k = {1, 2, 3, 4, 5, 6, 7, 8}, v = {-1, -2, -3, -4, -5, -6, -7, -8};
  std::vector<float> kc(3 * width, 0.0f), vc(3 * width, 0.0f);
  BatchLayout L;
  L.token_ids = {0, 0};
  L.positions = {0, 1};
  L.slot_mapping = {2, -1};
  L.query_start = {0, 2};
  L.context_lens = {2};
  auto db = cpu.UploadBatch(L);
  KvLayerView kv{kc.data(), vc.data(), DType::kF32, 3, 1, 1, width};
  cpu.StoreKv(View(k, 2, width), View(v, 2, width), *db, kv);
  EXPECT_EQ(std::vector<float>(kc.begin() + 8, kc.end()), (std::vector<float>{1, 2, 3, 4}));
  EXPECT_EQ(std::vector<float>(kc.begin(), kc.begin() + 8), std::vector<float>(8, 0.0f));
  std::vector<float> g(width);
  std::vector<int32_t> rows = {1};
  cpu.GatherRows(View(v, 2, width), rows.data(), 1, View(g, 1, width));
  EXPECT_EQ(g, (std::vector<float>{-5, -6, -7, -8}));
}

TEST(CpuOpsTest, RopeStoreKvEqualsSplitThenRopeThenStoreKv) {
  std::mt19937 rng(11);
  CpuBackend cpu;
  const int T = 5, D = 8, Hq = 4, Hk = 2, slots = 9;
  const int qdim = Hq * D, width = Hk * D, cols = qdim + 2 * width;
  auto qkv = Random(T * cols, rng);
  std::vector<float> inv = {1.0f, 0.3f, 0.01f, 0.002f};
  BatchLayout L;
  L.token_ids.assign(T, 0);
  L.positions = {0, 3, 17, 400, 9000};
  L.slot_mapping = {8, 2, -1, 0, 5};
  L.query_start = {0, T};
  L.context_lens = {T};
  auto db = cpu.UploadBatch(L);
  ASSERT_TRUE(db.ok());
  // Reference: the three projections apart, then the two ops.
  std::vector<float> q(T * qdim), k(T * width), v(T * width);
  for (int t = 0; t < T; ++t) {
    std::copy_n(qkv.begin() + t * cols, qdim, q.begin() + t * qdim);
    std::copy_n(qkv.begin() + t * cols + qdim, width, k.begin() + t * width);
    std::copy_n(qkv.begin() + t * cols + qdim + width, width, v.begin() + t * width);
  }
  std::vector<float> rkc(slots * width, -7.0f), rvc(slots * width, -7.0f);
  KvLayerView rkv{rkc.data(), rvc.data(), DType::kF32, slots, 1, Hk, D};
  cpu.Rope(View(q, T, qdim), View(k, T, width), L.positions.data(), inv.data(), D);
  cpu.StoreKv(View(k, T, width), View(v, T, width), *db, rkv);

  const auto qkv0 = qkv;
  std::vector<float> fq(T * qdim, 0.0f), fkc(slots * width, -7.0f), fvc(slots * width, -7.0f);
  KvLayerView fkv{fkc.data(), fvc.data(), DType::kF32, slots, 1, Hk, D};
  cpu.RopeStoreKv(View(qkv, T, cols), View(fq, T, qdim), L.positions.data(), inv.data(), D, *db, fkv);
  ASSERT_TRUE(cpu.TakeOpError().ok());
  EXPECT_EQ(fq, q);
  EXPECT_EQ(fkc, rkc);
  EXPECT_EQ(fvc, rvc);
  EXPECT_EQ(qkv, qkv0);  // the projection output is left as it was

  // A qkv row that does not hold q, k and v is refused and nothing is written.
  std::vector<float> bad(T * (cols - 1));
  cpu.RopeStoreKv(View(bad, T, cols - 1), View(fq, T, qdim), L.positions.data(), inv.data(), D, *db, fkv);
  EXPECT_EQ(cpu.TakeOpError().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(fkc, rkc);
}

TEST(ThreadPoolTest, ParallelForCoversEveryIndexOnce) {
  ThreadPool pool(3);
  std::vector<int> hits(1001, 0);
  pool.ParallelFor(1001, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) hits[i]++;
  });
  EXPECT_EQ(std::count(hits.begin(), hits.end(), 1), 1001);
}

TEST(DTypeTest, HalfConversionsRoundToNearestEven) {
  EXPECT_EQ(F32ToBF16(1.0f), 0x3F80);
  EXPECT_EQ(BF16ToF32(F32ToBF16(3.140625f)), 3.140625f);
  EXPECT_EQ(F32ToF16(1.0f), 0x3C00);
  EXPECT_EQ(F16ToF32(0x3C00), 1.0f);
  EXPECT_EQ(F32ToF16(65504.0f), 0x7BFF);
  EXPECT_EQ(F32ToF16(1e6f), 0x7C00);
  EXPECT_EQ(F16ToF32(0x0001), std::ldexp(1.0f, -24));
  EXPECT_EQ(F32ToF16(std::ldexp(1.0f, -24)), 0x0001);
  for (float f : {0.1f, -2.5f, 1234.567f, 6.1e-5f}) EXPECT_NEAR(F16ToF32(F32ToF16(f)), f, std::fabs(f) * 1e-3);
}

TEST(DTypeTest, E4M3RoundsToNearestEvenAndSaturates) {
  // Every finite code decodes and encodes back to itself.
  for (int c = 0; c < 256; ++c) {
    if ((c & 0x7F) == 0x7F) {
      EXPECT_TRUE(std::isnan(E4M3ToF32(static_cast<uint8_t>(c))));
      continue;
    }
    EXPECT_EQ(F32ToE4M3(E4M3ToF32(static_cast<uint8_t>(c))), c) << c;
  }
  EXPECT_EQ(E4M3ToF32(0x38), 1.0f);
  EXPECT_EQ(E4M3ToF32(0x7E), 448.0f);
  EXPECT_EQ(E4M3ToF32(0x01), std::ldexp(1.0f, -9));
  EXPECT_EQ(E4M3ToF32(0x08), std::ldexp(1.0f, -6));
  // Ties go to the even mantissa, in the subnormals, the normals and across a binade.
  EXPECT_EQ(F32ToE4M3(std::ldexp(0.5f, -9)), 0x00);
  EXPECT_EQ(F32ToE4M3(std::ldexp(1.5f, -9)), 0x02);
  EXPECT_EQ(F32ToE4M3(1.0625f), 0x38);
  EXPECT_EQ(F32ToE4M3(1.1875f), 0x3A);
  EXPECT_EQ(F32ToE4M3(248.0f), 0x78);
  EXPECT_EQ(F32ToE4M3(1.07f), 0x39);
  // Past the largest finite value (and infinity) saturates; NaN stays NaN.
  EXPECT_EQ(F32ToE4M3(460.0f), 0x7E);
  EXPECT_EQ(F32ToE4M3(-1e6f), 0xFE);
  EXPECT_EQ(F32ToE4M3(INFINITY), 0x7E);
  EXPECT_TRUE(std::isnan(E4M3ToF32(F32ToE4M3(NAN))));
}

TEST(DTypeTest, KvHeadQuantizationKeepsTheLargestValueExactAndOthersWithinHalfAStep) {
  std::mt19937 rng(7);
  std::normal_distribution<float> dist(0.0f, 3.0f);
  std::vector<float> x(128);
  for (float& v : x) v = dist(rng);
  x[17] = -20.0f;  // the largest magnitude
  std::vector<uint8_t> q(x.size());
  float scale = 0.0f;
  QuantizeKvHeadE4M3(x.data(), static_cast<int>(x.size()), q.data(), &scale);
  EXPECT_FLOAT_EQ(scale, 20.0f / 448.0f);
  EXPECT_EQ(q[17], 0xFE);
  for (size_t i = 0; i < x.size(); ++i) {
    const float back = E4M3ToF32(q[i]) * scale;
    // Three mantissa bits: at most half a step of 2^-3 relative, or half a subnormal step.
    EXPECT_LE(std::fabs(back - x[i]), std::max(std::fabs(x[i]) / 16.0f, std::ldexp(scale, -10)) * 1.0001f) << i;
  }
  std::vector<float> zeros(64, 0.0f);
  QuantizeKvHeadE4M3(zeros.data(), 64, q.data(), &scale);
  EXPECT_EQ(scale, 0.0f);
  EXPECT_EQ(std::count(q.begin(), q.begin() + 64, 0), 64);
}

}  // namespace
}  // namespace tessera
