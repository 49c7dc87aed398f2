// Element types of weights and activations, and scalar conversions between them.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

namespace tessera {

// kF8E4M3: OCP FP8 E4M3 (bias 7, max 448, no infinities; 0x7F/0xFF are NaN), used for the
// KV cache with a scale per (token, kv head).
enum class DType : uint8_t { kF32, kF16, kBF16, kI32, kI8, kU8, kI64, kF8E4M3 };

size_t DTypeSize(DType t);
std::string_view DTypeName(DType t);
// Parses a safetensors dtype tag ("F32", "BF16", ...). Returns false when unknown (FP8 weights
// are not read: kF8E4M3 is the KV cache's).
bool DTypeFromSafetensors(std::string_view tag, DType* out);
std::string_view DTypeSafetensorsTag(DType t);

inline float BF16ToF32(uint16_t v) {
  uint32_t bits = static_cast<uint32_t>(v) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

// Round-to-nearest-even, NaN stays NaN.
inline uint16_t F32ToBF16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((bits >> 16) | 0x40);
  uint32_t rounding = 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>((bits + rounding) >> 16);
}

inline float F16ToF32(uint16_t h) {
  uint32_t sign = (h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1f;
  uint32_t mant = h & 0x3ff;
  uint32_t bits;
  if (exp == 0) {
    if (mant == 0) {
      bits = sign;
    } else {  // subnormal: normalise
      exp = 127 - 15 + 1;
      while ((mant & 0x400) == 0) {
        mant <<= 1;
        --exp;
      }
      mant &= 0x3ff;
      bits = sign | (exp << 23) | (mant << 13);
    }
  } else if (exp == 31) {
    bits = sign | 0x7f800000u | (mant << 13);
  } else {
    bits = sign | ((exp + 127 - 15) << 23) | (mant << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

uint16_t F32ToF16(float f);

// FP8 E4M3: round to nearest even, saturating to +-448 (NaN stays NaN), as the device's
// cvt.rn.satfinite.e4m3x2.f32 does.
uint8_t F32ToE4M3(float f);
float E4M3ToF32(uint8_t v);
inline constexpr float kE4M3Max = 448.0f;

// The KV cache's FP8 form of one head of one token: scale = max|x| / 448 and
// q[d] = E4M3(x[d] * (448 / max|x|)), so x[d] ~ q[d] * scale; all zeros for a zero head.
// The CUDA store kernels follow the same arithmetic.
void QuantizeKvHeadE4M3(const float* x, int n, uint8_t* q, float* scale);

// Converts n elements of src (dtype `from`) to float.
void ConvertToF32(const void* src, DType from, float* dst, size_t n);
// Converts n floats to dtype `to` (F32, F16 or BF16).
void ConvertFromF32(const float* src, DType to, void* dst, size_t n);

}  // namespace tessera
