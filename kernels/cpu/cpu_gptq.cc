// CPU reference dequantization of AutoGPTQ-layout weights (power-of-two bit widths).
#include "kernels/cpu/cpu_backend.h"

namespace tessera {

void CpuDequantizeGptq(const QuantizedWeight& q, float* out) {
  const int bits = q.bits;
  const int per_word = 32 / bits;
  const uint32_t mask = (1u << bits) - 1u;
  const int64_t in = q.in_features, outf = q.out_features;
  const int64_t zero_cols = outf / per_word;
  for (int64_t i = 0; i < in; ++i) {
    const int64_t g = i / q.group_size;
    const uint32_t* qrow = reinterpret_cast<const uint32_t*>(q.qweight) + (i / per_word) * outf;
    const int shift = static_cast<int>(i % per_word) * bits;
    for (int64_t j = 0; j < outf; ++j) {
      uint32_t v = (qrow[j] >> shift) & mask;
      uint32_t zw = reinterpret_cast<const uint32_t*>(q.qzeros)[g * zero_cols + j / per_word];
      int32_t z = static_cast<int32_t>((zw >> ((j % per_word) * bits)) & mask);
      if (q.zeros_minus_one) z += 1;
      float s = F16ToF32(q.scales[g * outf + j]);
      out[j * in + i] = s * static_cast<float>(static_cast<int32_t>(v) - z);
    }
  }
}

}  // namespace tessera
