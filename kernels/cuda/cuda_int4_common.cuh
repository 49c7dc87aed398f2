// Device pieces shared by the int4 kernels on the repacked layout (cuda_int4.cu,
// cuda_int4_decode.cu): the bf16 m16n8k16 tensor-core step and the exact nibble dequantisation.
#pragma once

#include <cuda_bf16.h>

#include <cstdint>

namespace tessera::cuda {

// D += A * B with f32 accumulation; A is 16x16 (4 bf16x2 registers), B 16x8 (2 registers).
__device__ __forceinline__ void MmaBf16(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// (a & b) | c in one instruction.
__device__ __forceinline__ uint32_t Lop3AndOr(uint32_t a, uint32_t b, uint32_t c) {
  uint32_t r;
  asm("lop3.b32 %0, %1, %2, %3, 0xEA;\n" : "=r"(r) : "r"(a), "r"(b), "r"(c));
  return r;
}

// Two nibbles at bits 0-3 and 16-19 of q as bf16x2 (128 + q), exact.
__device__ __forceinline__ uint32_t Int4Pair128(uint32_t q) { return Lop3AndOr(q, 0x000F000Fu, 0x43004300u); }

// Two nibbles at bits 0-3 and 16-19 of q as bf16x2 (128 + q) minus the pair (128 + zero):
// q - zero exactly.
__device__ __forceinline__ uint32_t DequantPair(uint32_t q, uint32_t zero_pair) {
  const uint32_t v = Int4Pair128(q);
  __nv_bfloat162 r = __hsub2(*reinterpret_cast<const __nv_bfloat162*>(&v),
                             *reinterpret_cast<const __nv_bfloat162*>(&zero_pair));
  return *reinterpret_cast<uint32_t*>(&r);
}

}  // namespace tessera::cuda
