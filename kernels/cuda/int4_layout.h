// The CUDA backend's own int4 weight layout, built once at load from the AutoGPTQ arrays:
// qweight re-ordered into mma.sync m16n8k16 B fragments (16-byte coalesced loads per lane)
// and per-group metadata pre-converted so dequantisation is one lop3 and one bf16x2 subtract.
#pragma once

#include <cstddef>
#include <cstdint>

#include "kernels/backend.h"
#include "kernels/cuda/cuda_int4_launch.h"

namespace tessera::cuda {

// Layout (all little-endian, in one device buffer):
// - words: [n16 blocks][k64 chunks][32 lanes][4] uint32. Word j of lane (g = lane/4,
//   t = lane%4) holds k16 step j of the chunk for columns 16*nb + g (tile 0) and
//   16*nb + 8 + g (tile 1); nibble p (bits 4p..4p+3) is element e = p/4 of B register
//   r = p%4, where r = 2*tile + breg and k = 64*chunk + 16*j + 2*t + e + 8*breg. Shifting
//   the word right by 4*r then masking 0x000f000f yields register r's two nibbles as the
//   low bits of a bf16x2 pair.
// - meta: [groups][n16 blocks] records of 64 bytes: 16 fp16 scales, then 16 bf16 values
//   128 + zero (ORing a nibble q into bf16 128.0 gives 128 + q, so q - zero is one exact
//   subtraction).
// K is padded to a multiple of 64 and N to a multiple of 16 with zero nibbles and zero
// metadata; the kernels zero the matching activations, so padding adds nothing.
struct Int4Layout {
  int64_t in_features = 0, out_features = 0;
  int64_t n_blocks = 0;    // ceil(N / 16)
  int64_t k_chunks = 0;    // ceil(K / 64)
  int64_t group_size = 0;  // in padded K; a single group covers all of it
  int64_t groups = 0;      // meta groups: ceil(64 * k_chunks / group_size)
  size_t word_bytes = 0;
  size_t meta_bytes = 0;
  size_t total_bytes() const { return word_bytes + meta_bytes; }
};

constexpr int kInt4MetaBytes = 64;  // per (group, n16 block)

// 4-bit weights whose groups are multiples of 16 inputs (or one group) get the layout.
bool Int4LayoutSupported(const QuantizedWeight& q);
Int4Layout Int4LayoutOf(const QuantizedWeight& q);

// Fills `dst` (layout.total_bytes(), host memory) from the AutoGPTQ arrays of `host`, whose
// pointers refer to host memory. Uses the default thread pool.
void PackInt4Layout(const QuantizedWeight& host, const Int4Layout& layout, void* dst);

// The kernels' view of a packed weight (q.packed and q.perm on the device).
Int4Args Int4ArgsOf(const QuantizedWeight& q);

}  // namespace tessera::cuda
