// CPU reference matmul (out = x · Wᵀ), threaded over output features. Weights of any
// float dtype are widened to f32 a tile of rows at a time; the tile is then reused by
// every input row, so prefill reads each weight once.
#include <algorithm>
#include <vector>

#include "kernels/cpu/cpu_backend.h"
#include "runtime/common/thread_pool.h"

namespace tessera {
namespace {

__attribute__((target_clones("arch=haswell", "default")))
float Dot(const float* a, const float* b, int64_t k) {
  float s = 0.0f;
#pragma omp simd reduction(+ : s)
  for (int64_t i = 0; i < k; ++i) s += a[i] * b[i];
  return s;
}

__attribute__((target_clones("arch=haswell", "default")))
void WidenBF16(const uint16_t* src, float* dst, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    uint32_t bits = static_cast<uint32_t>(src[i]) << 16;
    float f;
    __builtin_memcpy(&f, &bits, 4);
    dst[i] = f;
  }
}

constexpr int64_t kRowTile = 8;

}  // namespace

void CpuMatmulDense(ThreadPool& pool, const float* x, int64_t n, int64_t k, const void* w,
                    DType w_dtype, int64_t m, float* out) {
  const size_t es = DTypeSize(w_dtype);
  pool.ParallelFor(
      (m + kRowTile - 1) / kRowTile,
      [&](int64_t tb, int64_t te) {
        std::vector<float> tile;
        if (w_dtype != DType::kF32) tile.resize(kRowTile * k);
        for (int64_t t = tb; t < te; ++t) {
          const int64_t r0 = t * kRowTile;
          const int64_t rows = std::min(kRowTile, m - r0);
          const float* wt;
          const char* src = static_cast<const char*>(w) + static_cast<size_t>(r0) * k * es;
          if (w_dtype == DType::kF32) {
            wt = reinterpret_cast<const float*>(src);
          } else {
            if (w_dtype == DType::kBF16) {
              WidenBF16(reinterpret_cast<const uint16_t*>(src), tile.data(), rows * k);
            } else {
              ConvertToF32(src, w_dtype, tile.data(), rows * k);
            }
            wt = tile.data();
          }
          for (int64_t i = 0; i < n; ++i) {
            const float* xr = x + i * k;
            float* orow = out + i * m + r0;
            for (int64_t r = 0; r < rows; ++r) orow[r] = Dot(xr, wt + r * k, k);
          }
        }
      },
      1);
}

void CpuBackend::Matmul(const TensorView& x, const LinearWeight& w, TensorView out) {
  const int64_t n = x.rows, k = x.cols, m = w.out_features();
  const float* xin = static_cast<const float*>(x.data);
  std::vector<float> f32_out;
  float* o = static_cast<float*>(out.data);
  if (w.quant == nullptr) {
    CpuMatmulDense(*pool_, xin, n, k, w.dense.data, w.dense.dtype, m, o);
    return;
  }
  // Quantized: the reference path dequantizes, permuting activations when the
  // checkpoint's groups were reordered at load time.
  const QuantizedWeight& q = *w.quant;
  std::vector<float> dense(static_cast<size_t>(m) * k);
  CpuDequantizeGptq(q, dense.data());
  std::vector<float> permuted;
  if (q.perm != nullptr) {
    permuted.resize(static_cast<size_t>(n) * k);
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < k; ++j) permuted[i * k + j] = xin[i * k + q.perm[j]];
    xin = permuted.data();
  }
  CpuMatmulDense(*pool_, xin, n, k, dense.data(), DType::kF32, m, o);
}

}  // namespace tessera
