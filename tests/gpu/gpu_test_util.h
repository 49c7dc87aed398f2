// Shared helpers of the GPU op tests: bf16-rounded random inputs, device tensors poisoned
// with NaN before an op runs, and the relative error against the CPU reference.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/backend.h"

namespace tessera::gpu_testing {

template <typename T>
T Must(absl::StatusOr<T> s) {
  if (!s.ok()) {
    ADD_FAILURE() << s.status();
    std::abort();
  }
  return std::move(s).value();
}

// Normal values scaled by `scale`, rounded to bf16 so both backends see the same inputs.
inline std::vector<float> RandomBf16(size_t n, std::mt19937& rng, float scale = 1.0f) {
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<float> v(n);
  for (float& x : v) x = BF16ToF32(F32ToBF16(dist(rng)));
  return v;
}

inline double RelError(const std::vector<float>& out, const std::vector<float>& ref) {
  if (out.size() != ref.size()) return std::numeric_limits<double>::infinity();
  double num = 0.0, den = 0.0;
  for (size_t i = 0; i < out.size(); ++i) {
    if (!std::isfinite(out[i])) return std::numeric_limits<double>::infinity();  // unwritten (poisoned) or NaN
    num += (static_cast<double>(out[i]) - ref[i]) * (static_cast<double>(out[i]) - ref[i]);
    den += static_cast<double>(ref[i]) * ref[i];
  }
  return den == 0.0 ? std::sqrt(num) : std::sqrt(num / den);
}

struct Tensor {
  DeviceBuffer buf;
  TensorView view;
};

inline Tensor Put(Backend& b, const std::vector<float>& host, int64_t rows, int64_t cols, DType dt) {
  std::vector<uint8_t> raw(host.size() * DTypeSize(dt));
  ConvertFromF32(host.data(), dt, raw.data(), host.size());
  Tensor t;
  t.buf = Must(b.Allocate(raw.size()));
  EXPECT_TRUE(b.CopyToDevice(t.buf.data(), raw.data(), raw.size()).ok());
  t.view = t.buf.View(dt, rows, cols);
  return t;
}

// An output whose every element is NaN until an op writes it.
inline Tensor Poisoned(Backend& b, int64_t rows, int64_t cols, DType dt) {
  return Put(b, std::vector<float>(rows * cols, std::numeric_limits<float>::quiet_NaN()), rows, cols, dt);
}

inline std::vector<float> Get(Backend& b, const TensorView& v) {
  absl::Status st = b.Synchronize();
  EXPECT_TRUE(st.ok()) << st;
  std::vector<uint8_t> raw(v.bytes());
  EXPECT_TRUE(b.CopyToHost(raw.data(), v.data, raw.size()).ok());
  std::vector<float> out(v.numel());
  ConvertToF32(raw.data(), v.dtype, out.data(), out.size());
  return out;
}

template <typename T>
inline std::vector<T> GetRaw(Backend& b, const void* p, size_t n) {
  absl::Status st = b.Synchronize();
  EXPECT_TRUE(st.ok()) << st;
  std::vector<T> out(n);
  EXPECT_TRUE(b.CopyToHost(out.data(), p, n * sizeof(T)).ok());
  return out;
}

template <typename T>
inline DeviceBuffer PutRaw(Backend& b, const std::vector<T>& host) {
  DeviceBuffer buf = Must(b.Allocate(host.size() * sizeof(T)));
  EXPECT_TRUE(b.CopyToDevice(buf.data(), host.data(), host.size() * sizeof(T)).ok());
  return buf;
}

// One layer's FP8 KV cache on a backend: E4M3 codes [slots, hk * d] and scales [slots, hk].
struct Fp8Cache {
  DeviceBuffer k, v, k_scale, v_scale;
  KvLayerView view;
};

inline Fp8Cache PutFp8Cache(Backend& b, const std::vector<uint8_t>& k, const std::vector<uint8_t>& v,
                            const std::vector<float>& k_scale, const std::vector<float>& v_scale, int num_blocks,
                            int block_size, int hk, int d) {
  Fp8Cache c;
  c.k = PutRaw(b, k);
  c.v = PutRaw(b, v);
  c.k_scale = PutRaw(b, k_scale);
  c.v_scale = PutRaw(b, v_scale);
  c.view = KvLayerView{c.k.data(),  c.v.data(), DType::kF8E4M3, num_blocks, block_size, hk, d,
                       static_cast<float*>(c.k_scale.data()), static_cast<float*>(c.v_scale.data())};
  return c;
}

// Each (row, head) of x [rows, hk * d] quantized as the KV cache stores it.
inline void QuantizeRows(const std::vector<float>& x, int hk, int d, std::vector<uint8_t>* codes,
                         std::vector<float>* scales) {
  const size_t rows = x.size() / (static_cast<size_t>(hk) * d);
  codes->resize(x.size());
  scales->resize(rows * hk);
  for (size_t r = 0; r < rows * hk; ++r) QuantizeKvHeadE4M3(x.data() + r * d, d, codes->data() + r * d, &(*scales)[r]);
}

}  // namespace tessera::gpu_testing
