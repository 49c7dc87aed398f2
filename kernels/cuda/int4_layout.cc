// Host-side repacking of AutoGPTQ 4-bit weights into the CUDA kernels' fragment layout.
#include "kernels/cuda/int4_layout.h"

#include <cstring>

#include "runtime/common/dtype.h"
#include "runtime/common/thread_pool.h"

namespace tessera::cuda {
namespace {

// Field index of a little-endian 4-bit stream over words[0], words[stride], ...
inline uint32_t Nibble(const int32_t* words, int64_t stride, int64_t index) {
  return (static_cast<uint32_t>(words[(index / 8) * stride]) >> (4 * (index % 8))) & 0xFu;
}

}  // namespace

bool Int4LayoutSupported(const QuantizedWeight& q) {
  return q.bits == 4 && q.in_features > 0 && q.out_features > 0 && q.group_size > 0 &&
         (q.group_size % 16 == 0 || q.group_size >= q.in_features);
}

Int4Layout Int4LayoutOf(const QuantizedWeight& q) {
  Int4Layout l;
  l.in_features = q.in_features;
  l.out_features = q.out_features;
  l.n_blocks = (q.out_features + 15) / 16;
  l.k_chunks = (q.in_features + 63) / 64;
  // A single group spans the padding too: the padded activations are zero.
  l.group_size = q.group_size >= q.in_features ? 64 * l.k_chunks : q.group_size;
  l.groups = (64 * l.k_chunks + l.group_size - 1) / l.group_size;
  l.word_bytes = static_cast<size_t>(l.n_blocks * l.k_chunks) * 32 * 4 * sizeof(uint32_t);
  l.meta_bytes = static_cast<size_t>(l.groups * l.n_blocks) * kInt4MetaBytes;
  return l;
}

Int4Args Int4ArgsOf(const QuantizedWeight& q) {
  const Int4Layout layout = Int4LayoutOf(q);
  Int4Args w;
  w.in_features = q.in_features;
  w.out_features = q.out_features;
  w.n_blocks = layout.n_blocks;
  w.k_chunks = layout.k_chunks;
  w.group_size = layout.group_size;
  w.groups = layout.groups;
  w.words = static_cast<const uint32_t*>(q.packed);
  w.meta = static_cast<const unsigned char*>(q.packed) + layout.word_bytes;
  w.perm = q.perm;
  return w;
}

void PackInt4Layout(const QuantizedWeight& q, const Int4Layout& l, void* dst) {
  auto* words = static_cast<uint32_t*>(dst);
  auto* meta = reinterpret_cast<uint16_t*>(static_cast<char*>(dst) + l.word_bytes);
  const int64_t n = l.out_features, k = l.in_features;
  const int64_t real_groups = q.group_size < k ? k / q.group_size : 1;
  const int64_t zero_words = (n * 4 + 31) / 32;
  ThreadPool::Default().ParallelFor(l.n_blocks, [&](int64_t nb0, int64_t nb1) {
    for (int64_t nb = nb0; nb < nb1; ++nb) {
      for (int64_t c = 0; c < l.k_chunks; ++c) {
        uint32_t* out = words + (nb * l.k_chunks + c) * 32 * 4;
        for (int lane = 0; lane < 32; ++lane) {
          const int g = lane / 4, t = lane % 4;
          for (int j = 0; j < 4; ++j) {
            uint32_t w = 0;
            for (int p = 0; p < 8; ++p) {
              const int r = p % 4, e = p / 4, tile = r / 2, breg = r % 2;
              const int64_t row = 64 * c + 16 * j + 2 * t + e + 8 * breg;
              const int64_t col = 16 * nb + 8 * tile + g;
              if (row < k && col < n) w |= Nibble(q.qweight + col, n, row) << (4 * p);
            }
            out[lane * 4 + j] = w;
          }
        }
      }
      for (int64_t grp = 0; grp < l.groups; ++grp) {
        uint16_t* rec = meta + (grp * l.n_blocks + nb) * (kInt4MetaBytes / 2);
        for (int i = 0; i < 16; ++i) {
          const int64_t col = 16 * nb + i;
          uint16_t scale = 0, zero = 0;
          if (col < n && grp < real_groups && grp * l.group_size < k) {
            scale = q.scales[grp * n + col];
            uint32_t z = Nibble(q.qzeros + grp * zero_words, 1, col);
            if (q.zeros_minus_one) z += 1;
            zero = static_cast<uint16_t>(0x4300u + z);  // bf16 128 + z (z <= 16 stays exact)
          }
          rec[i] = scale;
          rec[16 + i] = zero;
        }
      }
    }
  });
}

}  // namespace tessera::cuda
