#include "runtime/common/dtype.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace tessera {

size_t DTypeSize(DType t) {
  switch (t) {
    case DType::kF32: return 4;
    case DType::kF16: return 2;
    case DType::kBF16: return 2;
    case DType::kI32: return 4;
    case DType::kI8: return 1;
    case DType::kU8: return 1;
    case DType::kI64: return 8;
    case DType::kF8E4M3: return 1;
  }
  return 0;
}

std::string_view DTypeName(DType t) {
  switch (t) {
    case DType::kF32: return "float32";
    case DType::kF16: return "float16";
    case DType::kBF16: return "bfloat16";
    case DType::kI32: return "int32";
    case DType::kI8: return "int8";
    case DType::kU8: return "uint8";
    case DType::kI64: return "int64";
    case DType::kF8E4M3: return "float8_e4m3";
  }
  return "?";
}

bool DTypeFromSafetensors(std::string_view tag, DType* out) {
  if (tag == "F32") *out = DType::kF32;
  else if (tag == "F16") *out = DType::kF16;
  else if (tag == "BF16") *out = DType::kBF16;
  else if (tag == "I32") *out = DType::kI32;
  else if (tag == "I8") *out = DType::kI8;
  else if (tag == "U8") *out = DType::kU8;
  else if (tag == "I64") *out = DType::kI64;
  else return false;
  return true;
}

std::string_view DTypeSafetensorsTag(DType t) {
  switch (t) {
    case DType::kF32: return "F32";
    case DType::kF16: return "F16";
    case DType::kBF16: return "BF16";
    case DType::kI32: return "I32";
    case DType::kI8: return "I8";
    case DType::kU8: return "U8";
    case DType::kI64: return "I64";
  }
  return "?";
}

uint16_t F32ToF16(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  uint32_t sign = (x >> 16) & 0x8000u;
  uint32_t absx = x & 0x7fffffffu;
  if (absx > 0x7f800000u) return static_cast<uint16_t>(sign | 0x7e00u);  // NaN
  if (absx >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);  // overflow -> inf
  if (absx < 0x38800000u) {  // subnormal or zero in half
    if (absx < 0x33000000u) return static_cast<uint16_t>(sign);
    uint32_t mant = (absx & 0x7fffffu) | 0x800000u;
    int shift = 113 - static_cast<int>(absx >> 23);  // 1..24
    uint32_t half = mant >> (shift + 13);
    uint32_t rem = mant & ((1u << (shift + 13)) - 1);
    uint32_t halfway = 1u << (shift + 12);
    if (rem > halfway || (rem == halfway && (half & 1u))) ++half;
    return static_cast<uint16_t>(sign | half);
  }
  uint32_t e = (absx >> 23) - 127 + 15;
  uint32_t mant = absx & 0x7fffffu;
  uint32_t half = (e << 10) | (mant >> 13);
  uint32_t rem = mant & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (half & 1u))) ++half;
  return static_cast<uint16_t>(sign | half);
}

void ConvertToF32(const void* src, DType from, float* dst, size_t n) {
  switch (from) {
    case DType::kF32:
      std::memcpy(dst, src, n * 4);
      return;
    case DType::kBF16: {
      auto* s = static_cast<const uint16_t*>(src);
      for (size_t i = 0; i < n; ++i) dst[i] = BF16ToF32(s[i]);
      return;
    }
    case DType::kF16: {
      auto* s = static_cast<const uint16_t*>(src);
      for (size_t i = 0; i < n; ++i) dst[i] = F16ToF32(s[i]);
      return;
    }
    default:
      for (size_t i = 0; i < n; ++i) dst[i] = NAN;
  }
}

void ConvertFromF32(const float* src, DType to, void* dst, size_t n) {
  switch (to) {
    case DType::kF32:
      std::memcpy(dst, src, n * 4);
      return;
    case DType::kBF16: {
      auto* d = static_cast<uint16_t*>(dst);
      for (size_t i = 0; i < n; ++i) d[i] = F32ToBF16(src[i]);
      return;
    }
    case DType::kF16: {
      auto* d = static_cast<uint16_t*>(dst);
      for (size_t i = 0; i < n; ++i) d[i] = F32ToF16(src[i]);
      return;
    }
    default:
      return;
  }
}

uint8_t F32ToE4M3(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  const uint8_t sign = static_cast<uint8_t>((bits >> 24) & 0x80u);
  if (std::isnan(f)) return static_cast<uint8_t>(sign | 0x7F);
  const float a = std::fabs(f);
  if (a >= kE4M3Max) return static_cast<uint8_t>(sign | 0x7E);  // satfinite
  constexpr float kMinNormal = 0.015625f;                        // 2^-6
  if (a < kMinNormal) {
    // Subnormals are multiples of 2^-9; 8 * 2^-9 is the smallest normal, code 0x08.
    const float q = std::nearbyint(a * 512.0f);  // exact product; ties to even
    return static_cast<uint8_t>(sign | static_cast<uint8_t>(q));
  }
  int e;
  const float m = std::frexp(a, &e);  // a = m * 2^e, m in [0.5, 1)
  // a = (1 + q/8) * 2^(e-1): q = (2m - 1) * 8, exact before rounding.
  int q = static_cast<int>(std::nearbyint((2.0f * m - 1.0f) * 8.0f));
  int exp = e - 1 + 7;
  if (q == 8) {
    q = 0;
    ++exp;
  }
  const int code = std::min((exp << 3) | q, 0x7E);
  return static_cast<uint8_t>(sign | code);
}

float E4M3ToF32(uint8_t v) {
  const int e = (v >> 3) & 0xF, m = v & 7;
  float a;
  if (e == 0) a = std::ldexp(static_cast<float>(m), -9);
  else if (e == 15 && m == 7) a = std::numeric_limits<float>::quiet_NaN();
  else a = std::ldexp(1.0f + m / 8.0f, e - 7);
  return (v & 0x80) ? -a : a;
}

void QuantizeKvHeadE4M3(const float* x, int n, uint8_t* q, float* scale) {
  float amax = 0.0f;
  for (int i = 0; i < n; ++i) amax = std::max(amax, std::fabs(x[i]));
  const float inv = amax > 0.0f ? kE4M3Max / amax : 0.0f;
  for (int i = 0; i < n; ++i) q[i] = F32ToE4M3(x[i] * inv);
  *scale = amax / kE4M3Max;
}

}  // namespace tessera
