// CPU reference dequantization of AutoGPTQ-layout weights for 2, 3, 4 and 8 bits.
// Fields are read as one little-endian bit stream per qweight column (down the input
// features) and per qzeros row (along the output features), so 3-bit fields that straddle
// two int32 words come out whole, as AutoGPTQ packs them.
#include "kernels/cpu/cpu_backend.h"

namespace tessera {
namespace {

// Field `index` of the bit stream over words[0], words[stride], ...
inline uint32_t ReadField(const uint32_t* words, int64_t stride, int64_t index, int bits) {
  const int64_t bit = index * bits;
  const int64_t w = bit / 32;
  const int shift = static_cast<int>(bit % 32);
  uint64_t v = words[w * stride] >> shift;
  if (shift + bits > 32) v |= static_cast<uint64_t>(words[(w + 1) * stride]) << (32 - shift);
  return static_cast<uint32_t>(v) & ((1u << bits) - 1u);
}

}  // namespace

void CpuDequantizeGptq(const QuantizedWeight& q, float* out) {
  const int bits = q.bits;
  const int64_t in = q.in_features, outf = q.out_features;
  const int64_t zero_words = (outf * bits + 31) / 32;
  const auto* qweight = reinterpret_cast<const uint32_t*>(q.qweight);
  const auto* qzeros = reinterpret_cast<const uint32_t*>(q.qzeros);
  for (int64_t i = 0; i < in; ++i) {
    const int64_t g = i / q.group_size;
    for (int64_t j = 0; j < outf; ++j) {
      const int32_t v = static_cast<int32_t>(ReadField(qweight + j, outf, i, bits));
      // v1 keeps AutoGPTQ's reading: stored + 1 without wrapping (a stored all-ones field is
      // zero 2^bits, as AutoGPTQ's kernels compute it).
      int32_t z = static_cast<int32_t>(ReadField(qzeros + g * zero_words, 1, j, bits));
      if (q.zeros_minus_one) z += 1;
      const float s = F16ToF32(q.scales[g * outf + j]);
      out[j * in + i] = s * static_cast<float>(v - z);
    }
  }
}

}  // namespace tessera
