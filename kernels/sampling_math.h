// Arithmetic shared by the CPU reference and the CUDA kernel of Backend::SampleTokens:
// the Philox counter-based generator, Gumbel noise, and an order-preserving float key.
// Compiled by both the host compiler and nvcc, so both backends draw the same numbers.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#ifdef __CUDACC__
#define TESSERA_HD __host__ __device__ __forceinline__
#else
#define TESSERA_HD inline
#endif

namespace tessera::sampling {

// Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3"); the first
// of the four output words. Counter = (token id, step low, step high, 0), key = seed.
TESSERA_HD uint32_t Philox(uint64_t seed, uint64_t step, uint32_t index) {
  uint32_t c0 = index, c1 = static_cast<uint32_t>(step), c2 = static_cast<uint32_t>(step >> 32), c3 = 0;
  uint32_t k0 = static_cast<uint32_t>(seed), k1 = static_cast<uint32_t>(seed >> 32);
  for (int r = 0; r < 10; ++r) {
    const uint64_t p0 = static_cast<uint64_t>(0xD2511F53u) * c0;
    const uint64_t p1 = static_cast<uint64_t>(0xCD9E8D57u) * c2;
    const uint32_t hi0 = static_cast<uint32_t>(p0 >> 32), lo0 = static_cast<uint32_t>(p0);
    const uint32_t hi1 = static_cast<uint32_t>(p1 >> 32), lo1 = static_cast<uint32_t>(p1);
    c0 = hi1 ^ c1 ^ k0;
    c1 = lo1;
    c2 = hi0 ^ c3 ^ k1;
    c3 = lo0;
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  return c0;
}

// Standard Gumbel noise -log(-log(u)) with u uniform in (0, 1) from 24 random bits.
TESSERA_HD float Gumbel(uint64_t seed, uint64_t step, uint32_t index) {
  const float u = (static_cast<float>(Philox(seed, step, index) >> 8) + 0.5f) * (1.0f / 16777216.0f);
  return -logf(-logf(u));
}

// Maps a float to an unsigned key with the same order (larger float, larger key).
TESSERA_HD uint32_t OrderedKey(float f) {
  uint32_t b;
#ifdef __CUDA_ARCH__
  b = __float_as_uint(f);
#else
  std::memcpy(&b, &f, sizeof(b));
#endif
  return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}

}  // namespace tessera::sampling
