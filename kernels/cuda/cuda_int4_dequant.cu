// The repacked int4 weight (int4_layout.h) dequantised to a dense bf16 [out_features,
// in_features] matrix in the original input order, for products of many rows: there a dense
// tensor-core GEMM over the dequantised weight beats the int4 tile kernel by far, and the
// dequantisation (the weight read once, the matrix written once) is paid once per call.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <cstdint>

#include "kernels/cuda/cuda_int4_launch.h"

namespace tessera::cuda {
namespace {

constexpr int kChunksPerBlock = 8;                   // 64-input chunks of one 16-column block
constexpr int kThreads = kChunksPerBlock * 32;       // one packed 16-byte word group per thread
constexpr int kSpan = kChunksPerBlock * 64;          // inputs per block
constexpr int kRowStride = kSpan + 8;                // bf16 per staged column (bank spread)

// Block (nb, chunk run): each thread unpacks its lane's 4 words (32 nibbles: columns g and
// g + 8, 16 inputs each) into shared memory as (q - zero) * scale rounded to bf16, then the
// block writes its 16 columns x 512 inputs as 16-byte row segments (or, with an input
// permutation, element by element to W[col][perm[k]]).
__global__ void __launch_bounds__(kThreads) DequantInt4Kernel(Int4Args w, __nv_bfloat16* out) {
  __shared__ __align__(16) __nv_bfloat16 tile[16 * kRowStride];
  const int nb = blockIdx.x, c0 = blockIdx.y * kChunksPerBlock;
  const int tid = threadIdx.x, lane = tid % 32, cl = tid / 32;  // cl: the thread's chunk in the run
  const int g = lane / 4, t = lane % 4;
  const int chunk = c0 + cl;
  if (chunk < w.k_chunks) {
    const uint4 v = reinterpret_cast<const uint4*>(w.words)[(static_cast<int64_t>(nb) * w.k_chunks + chunk) * 32 + lane];
    const uint32_t words[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int k16 = chunk * 64 + 16 * j;             // the k16 step's first input (padded K)
      const int grp = k16 / static_cast<int>(w.group_size);
      const auto* rec = reinterpret_cast<const uint16_t*>(w.meta + (static_cast<int64_t>(grp) * w.n_blocks + nb) * 64);
#pragma unroll
      for (int p = 0; p < 8; ++p) {
        const int r = p % 4, e = p / 4, tile_half = r / 2, breg = r % 2;
        const int c = 8 * tile_half + g;               // column within the 16-column block
        const int k = 16 * j + 2 * t + e + 8 * breg;   // input within the chunk
        const float q = static_cast<float>((words[j] >> (4 * p)) & 0xFu);
        const float scale = __half2float(__ushort_as_half(rec[c]));
        const float zero = __bfloat162float(__ushort_as_bfloat16(rec[16 + c])) - 128.0f;
        tile[c * kRowStride + cl * 64 + k] = __float2bfloat16((q - zero) * scale);
      }
    }
  }
  __syncthreads();
  const int64_t n0 = static_cast<int64_t>(nb) * 16, k0 = static_cast<int64_t>(c0) * 64;
  const int64_t kin = w.in_features;
  if (w.perm == nullptr && kin % 8 == 0) {
    // 16 columns x kSpan inputs as 8-element segments.
    constexpr int kSegs = kSpan / 8;
    for (int i = tid; i < 16 * kSegs; i += kThreads) {
      const int c = i / kSegs, s = i % kSegs;
      const int64_t n = n0 + c, k = k0 + s * 8;
      if (n < w.out_features && k < kin) {
        *reinterpret_cast<uint4*>(out + n * kin + k) = *reinterpret_cast<const uint4*>(tile + c * kRowStride + s * 8);
      }
    }
    return;
  }
  for (int i = tid; i < 16 * kSpan; i += kThreads) {
    const int c = i / kSpan, s = i % kSpan;
    const int64_t n = n0 + c, k = k0 + s;
    if (n < w.out_features && k < kin) out[n * kin + (w.perm != nullptr ? w.perm[k] : k)] = tile[c * kRowStride + s];
  }
}

}  // namespace

void LaunchInt4Dequantize(const Int4Args& w, void* out, cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>(w.n_blocks),
                  static_cast<unsigned>((w.k_chunks + kChunksPerBlock - 1) / kChunksPerBlock));
  DequantInt4Kernel<<<grid, kThreads, 0, stream>>>(w, static_cast<__nv_bfloat16*>(out));
}

}  // namespace tessera::cuda
