// CPU reference ops: embedding, norms, rope, activations, KV writes, gathers.
#include <cmath>
#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/cpu/cpu_kv_cache.h"
#include "runtime/common/thread_pool.h"

namespace tessera {

void CpuBackend::Embedding(const TensorView& table, const int32_t* ids, int32_t n, TensorView out) {
  const int64_t d = table.cols;
  const size_t es = DTypeSize(table.dtype);
  float* o = static_cast<float*>(out.data);
  for (int32_t i = 0; i < n; ++i) {
    const char* row = static_cast<const char*>(table.data) + static_cast<size_t>(ids[i]) * d * es;
    ConvertToF32(row, table.dtype, o + i * d, d);
  }
}

namespace {

void RmsNormRow(const float* x, const float* w, float eps, int64_t d, float* out) {
  double ss = 0.0;
  for (int64_t j = 0; j < d; ++j) ss += static_cast<double>(x[j]) * x[j];
  float inv = 1.0f / std::sqrt(static_cast<float>(ss / d) + eps);
  for (int64_t j = 0; j < d; ++j) out[j] = x[j] * inv * w[j];
}

std::vector<float> WeightToF32(const TensorView& w) {
  std::vector<float> f(w.numel());
  ConvertToF32(w.data, w.dtype, f.data(), f.size());
  return f;
}

}  // namespace

void CpuBackend::RmsNorm(const TensorView& x, const TensorView& weight, float eps, TensorView out) {
  std::vector<float> w = WeightToF32(weight);
  const int64_t d = x.cols;
  for (int64_t r = 0; r < x.rows; ++r) {
    RmsNormRow(static_cast<const float*>(x.data) + r * d, w.data(), eps, d,
               static_cast<float*>(out.data) + r * d);
  }
}

void CpuBackend::AddRmsNorm(const TensorView& x, TensorView residual, const TensorView& weight,
                            float eps, TensorView out) {
  std::vector<float> w = WeightToF32(weight);
  const int64_t d = x.cols;
  for (int64_t r = 0; r < x.rows; ++r) {
    float* res = static_cast<float*>(residual.data) + r * d;
    const float* xr = static_cast<const float*>(x.data) + r * d;
    for (int64_t j = 0; j < d; ++j) res[j] += xr[j];
    RmsNormRow(res, w.data(), eps, d, static_cast<float*>(out.data) + r * d);
  }
}

namespace {

// cos/sin of position * inv_freq[i] for i < half; the angle in double, so long positions
// keep their precision.
void RopeAngles(int32_t position, const float* inv_freq, int32_t half, float* cos_t, float* sin_t) {
  for (int32_t i = 0; i < half; ++i) {
    double a = static_cast<double>(position) * static_cast<double>(inv_freq[i]);
    cos_t[i] = static_cast<float>(std::cos(a));
    sin_t[i] = static_cast<float>(std::sin(a));
  }
}

// Rotates `heads` consecutive heads of head_dim values in place (rotate_half layout).
void RotateHeads(float* row, int64_t heads, int32_t head_dim, const float* cos_t, const float* sin_t) {
  const int32_t half = head_dim / 2;
  for (int64_t h = 0; h < heads; ++h) {
    float* x = row + h * head_dim;
    for (int32_t i = 0; i < half; ++i) {
      float x1 = x[i], x2 = x[i + half];
      x[i] = x1 * cos_t[i] - x2 * sin_t[i];
      x[i + half] = x2 * cos_t[i] + x1 * sin_t[i];
    }
  }
}

}  // namespace

void CpuBackend::Rope(TensorView q, TensorView k, const int32_t* positions, const float* inv_freq,
                      int32_t head_dim) {
  const int32_t half = head_dim / 2;
  std::vector<float> cos_t(half), sin_t(half);
  for (int64_t t = 0; t < q.rows; ++t) {
    RopeAngles(positions[t], inv_freq, half, cos_t.data(), sin_t.data());
    for (TensorView* m : {&q, &k}) {
      RotateHeads(static_cast<float*>(m->data) + t * m->cols, m->cols / head_dim, head_dim, cos_t.data(),
                  sin_t.data());
    }
  }
}

void CpuBackend::RopeStoreKv(const TensorView& qkv, TensorView q_out, const int32_t* positions,
                             const float* inv_freq, int32_t head_dim, const DeviceBatch& batch,
                             const KvLayerView& cache) {
  const int64_t width = static_cast<int64_t>(cache.num_kv_heads) * cache.head_dim;
  const int64_t qdim = q_out.cols;
  if (head_dim <= 0 || head_dim % 2 != 0 || qdim % head_dim != 0 || qkv.cols != qdim + 2 * width ||
      q_out.rows != qkv.rows || batch.num_tokens > qkv.rows) {
    RecordOpError(absl::InvalidArgumentError(absl::StrCat("cpu rope_store_kv: qkv [", qkv.rows, ", ", qkv.cols,
                                                 "] does not hold q [", q_out.rows, ", ", qdim, "] and k, v of ",
                                                 width, " columns")));
    return;
  }
  const int32_t half = head_dim / 2;
  std::vector<float> cos_t(half), sin_t(half), k(width);
  for (int64_t t = 0; t < qkv.rows; ++t) {
    const float* src = static_cast<const float*>(qkv.data) + t * qkv.cols;
    float* q = static_cast<float*>(q_out.data) + t * qdim;
    RopeAngles(positions[t], inv_freq, half, cos_t.data(), sin_t.data());
    std::memcpy(q, src, qdim * sizeof(float));
    RotateHeads(q, qdim / head_dim, head_dim, cos_t.data(), sin_t.data());
    const int64_t slot = t < batch.num_tokens ? batch.slot_mapping[t] : -1;
    if (slot < 0) continue;  // padding token: nothing to store
    std::memcpy(k.data(), src + qdim, width * sizeof(float));
    RotateHeads(k.data(), width / head_dim, head_dim, cos_t.data(), sin_t.data());
    cpu::StoreKvRow(cache, cpu::KvPart::kK, slot, k.data());
    cpu::StoreKvRow(cache, cpu::KvPart::kV, slot, src + qdim + width);
  }
}

void CpuBackend::SiluMul(const TensorView& gate_up, TensorView out) {
  const int64_t f = out.cols;
  for (int64_t r = 0; r < out.rows; ++r) {
    const float* g = static_cast<const float*>(gate_up.data) + r * 2 * f;
    const float* u = g + f;
    float* o = static_cast<float*>(out.data) + r * f;
    for (int64_t j = 0; j < f; ++j) o[j] = g[j] / (1.0f + std::exp(-g[j])) * u[j];
  }
}

void CpuBackend::Add(const TensorView& x, TensorView out) {
  const float* a = static_cast<const float*>(x.data);
  float* o = static_cast<float*>(out.data);
  for (int64_t i = 0; i < x.numel(); ++i) o[i] += a[i];
}

void CpuBackend::StoreKv(const TensorView& k, const TensorView& v, const DeviceBatch& batch,
                         const KvLayerView& cache) {
  const int64_t width = static_cast<int64_t>(cache.num_kv_heads) * cache.head_dim;
  for (int32_t t = 0; t < batch.num_tokens; ++t) {
    int64_t slot = batch.slot_mapping[t];
    if (slot < 0) continue;  // padding token: nothing to store
    cpu::StoreKvRow(cache, cpu::KvPart::kK, slot, static_cast<const float*>(k.data) + t * width);
    cpu::StoreKvRow(cache, cpu::KvPart::kV, slot, static_cast<const float*>(v.data) + t * width);
  }
}

void CpuBackend::GatherRows(const TensorView& x, const int32_t* rows, int32_t count, TensorView out) {
  const size_t row_bytes = static_cast<size_t>(x.cols) * DTypeSize(x.dtype);
  for (int32_t j = 0; j < count; ++j) {
    std::memcpy(static_cast<char*>(out.data) + j * row_bytes,
                static_cast<const char*>(x.data) + static_cast<size_t>(rows[j]) * row_bytes, row_bytes);
  }
}

}  // namespace tessera
