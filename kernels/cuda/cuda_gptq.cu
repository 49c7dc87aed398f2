// GPTQ (AutoGPTQ layout, 2/4/8-bit) matmul kernels: a split-K GEMV for decode batches that
// streams qweight with 16-byte loads and dequantises in registers, and a tensor-core GEMM
// (wmma bf16 m16n16k16) over weight tiles dequantised into shared memory for prefill.
// Both gather activations through `perm` on the fly and accumulate in f32.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <mma.h>

#include <algorithm>

#include "kernels/cuda/cuda_common.cuh"
#include "kernels/cuda/cuda_quant_launch.h"

namespace tessera::cuda {
namespace {

constexpr int kGemvThreads = 256;
constexpr int kGemvWarps = kGemvThreads / 32;
constexpr int kGemvCols = 128;  // 32 lanes x 4 adjacent output columns
constexpr int kGemvMaxRows = 8;
constexpr int kGemvChunkInputs = 512;  // activations per split held in shared memory
constexpr int kGemvUnroll = 4;         // independent qweight loads in flight per thread

// 2^23: a float whose low mantissa bits are OR-ed with an integer field reads 2^23 + field.
constexpr uint32_t kMagic = 0x4B000000u;
constexpr float kMagicF = 8388608.0f;

__device__ __forceinline__ uint32_t ZeroField(const GptqArgs& w, int64_t g, int64_t col) {
  const int64_t zero_words = (w.out_features * w.bits + 31) / 32;
  const int64_t bit = col * w.bits;
  const uint32_t word = static_cast<uint32_t>(w.qzeros[g * zero_words + bit / 32]);
  uint32_t z = (word >> (bit % 32)) & ((1u << w.bits) - 1u);
  // v1 reads stored + 1 without wrapping, as AutoGPTQ's kernels do.
  return z + (w.zeros_minus_one ? 1u : 0u);
}

// Each thread owns 4 adjacent output columns; the 8 warps of a block split the block's run of
// qweight word rows and reduce through shared memory; split-K blocks of one column tile
// meet in `partial`, and the last to arrive writes the output.
//
// Dequantisation without integer-to-float conversions: a field at bit offset b*j of a 16-bit
// half, masked in place and OR-ed into 2^23, reads 2^23 + q*2^(b*j); subtracting
// 2^23 + z*2^(b*j) gives (q - z)*2^(b*j) exactly, and the activations in shared memory are
// pre-scaled by 2^-(b*j) to cancel it.
template <int BITS, int ROWS>
__global__ void __launch_bounds__(kGemvThreads) GptqGemvKernel(GptqArgs w, const __nv_bfloat16* x, int rows,
                                                              void* out, DType odt, int chunk_words, int splits,
                                                              float* partial, unsigned* counters) {
  constexpr int F = 32 / BITS;    // fields per word
  constexpr int H = 16 / BITS;    // fields per 16-bit half
  constexpr uint32_t kMask = (1u << BITS) - 1u;
  __shared__ __align__(16) float smem[kGemvWarps * ROWS * kGemvCols];  // >= ROWS * kGemvChunkInputs
  __shared__ bool last_block;
  float* xs = smem;  // [ROWS][kGemvChunkInputs]

  const int64_t m = w.out_features, k = w.in_features;
  const int64_t kw = (k * BITS + 31) / 32;
  const int tile = blockIdx.x, split = blockIdx.y;
  const int64_t r0 = static_cast<int64_t>(split) * chunk_words;
  const int64_t r1 = min(r0 + chunk_words, kw);
  const int64_t i0 = r0 * F;
  const int n_in = static_cast<int>((r1 - r0) * F);
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;

  for (int idx = tid; idx < ROWS * n_in; idx += kGemvThreads) {
    const int r = idx / n_in, i = idx % n_in;
    const int64_t gi = i0 + i;
    float v = 0.0f;
    if (r < rows && gi < k) {
      const int64_t src = w.perm != nullptr ? w.perm[gi] : gi;
      v = __bfloat162float(x[static_cast<int64_t>(r) * k + src]);
    }
    xs[r * kGemvChunkInputs + i] = v * __int_as_float((127 - BITS * (i % H)) << 23);  // v * 2^-(b*j)
  }
  __syncthreads();

  const int64_t c = static_cast<int64_t>(tile) * kGemvCols + lane * 4;
  float acc[ROWS][4];
#pragma unroll
  for (int r = 0; r < ROWS; ++r)
#pragma unroll
    for (int cc = 0; cc < 4; ++cc) acc[r][cc] = 0.0f;

  if (c < m) {
    const bool vec = (m % 4) == 0 && (reinterpret_cast<uintptr_t>(w.qweight) % 16) == 0;
    int64_t cur_g = -1;
    float scale[4], zoff[4][H];
    for (int64_t rb = r0 + warp; rb < r1; rb += kGemvWarps * kGemvUnroll) {
      uint32_t q[kGemvUnroll][4];
#pragma unroll
      for (int u = 0; u < kGemvUnroll; ++u) {
        const int64_t rr = rb + u * kGemvWarps;
        const int32_t* src = w.qweight + rr * m + c;
        if (rr >= r1) {
          q[u][0] = q[u][1] = q[u][2] = q[u][3] = 0;
        } else if (vec) {
          const uint4 v = __ldg(reinterpret_cast<const uint4*>(src));
          q[u][0] = v.x, q[u][1] = v.y, q[u][2] = v.z, q[u][3] = v.w;
        } else {
#pragma unroll
          for (int cc = 0; cc < 4; ++cc) q[u][cc] = c + cc < m ? static_cast<uint32_t>(__ldg(src + cc)) : 0u;
        }
      }
#pragma unroll
      for (int u = 0; u < kGemvUnroll; ++u) {
        const int64_t rr = rb + u * kGemvWarps;
        if (rr >= r1) break;
        const int64_t g = rr * F / w.group_size;
        if (g != cur_g) {
          cur_g = g;
#pragma unroll
          for (int cc = 0; cc < 4; ++cc) {
            const bool ok = c + cc < m;
            scale[cc] = ok ? __half2float(__ushort_as_half(w.scales[g * m + c + cc])) : 0.0f;
            const float z = ok ? static_cast<float>(ZeroField(w, g, c + cc)) : 0.0f;
#pragma unroll
            for (int j = 0; j < H; ++j) zoff[cc][j] = kMagicF + z * static_cast<float>(1u << (BITS * j));
          }
        }
        const float* xw = xs + (rr - r0) * F;
        float dot[ROWS][4];
#pragma unroll
        for (int r = 0; r < ROWS; ++r)
#pragma unroll
          for (int cc = 0; cc < 4; ++cc) dot[r][cc] = 0.0f;
#pragma unroll
        for (int half = 0; half < 2; ++half) {
#pragma unroll
          for (int j0 = 0; j0 < H; j0 += 4) {
            float xv[ROWS][4];
#pragma unroll
            for (int r = 0; r < ROWS; ++r) {
              const float* xp = xw + r * kGemvChunkInputs + half * H + j0;
              if constexpr (H >= 4) {
                const float4 v = *reinterpret_cast<const float4*>(xp);
                xv[r][0] = v.x, xv[r][1] = v.y, xv[r][2] = v.z, xv[r][3] = v.w;
              } else {  // 8-bit: two fields per half, 8-byte aligned
                const float2 v = *reinterpret_cast<const float2*>(xp);
                xv[r][0] = v.x, xv[r][1] = v.y, xv[r][2] = xv[r][3] = 0.0f;
              }
            }
#pragma unroll
            for (int cc = 0; cc < 4; ++cc) {
              const uint32_t word = half ? q[u][cc] >> 16 : q[u][cc];
#pragma unroll
              for (int jj = 0; jj < 4 && j0 + jj < H; ++jj) {
                const int j = j0 + jj;
                const float wf = __uint_as_float((word & (kMask << (BITS * j))) | kMagic) - zoff[cc][j];
#pragma unroll
                for (int r = 0; r < ROWS; ++r) dot[r][cc] = fmaf(wf, xv[r][jj], dot[r][cc]);
              }
            }
          }
        }
#pragma unroll
        for (int r = 0; r < ROWS; ++r)
#pragma unroll
          for (int cc = 0; cc < 4; ++cc) acc[r][cc] = fmaf(scale[cc], dot[r][cc], acc[r][cc]);
      }
    }
  }

  // Reduce the warps' partial sums (the activation tile is dead now).
  __syncthreads();
  float* red = smem;  // [warps][ROWS][kGemvCols]
#pragma unroll
  for (int r = 0; r < ROWS; ++r)
#pragma unroll
    for (int cc = 0; cc < 4; ++cc) red[(warp * ROWS + r) * kGemvCols + lane * 4 + cc] = acc[r][cc];
  __syncthreads();
  const int64_t col0 = static_cast<int64_t>(tile) * kGemvCols;
  constexpr int kPer = (ROWS * kGemvCols + kGemvThreads - 1) / kGemvThreads;
  float sums[kPer];
#pragma unroll
  for (int p = 0; p < kPer; ++p) {
    const int idx = tid + p * kGemvThreads;
    float s = 0.0f;
    if (idx < ROWS * kGemvCols) {
#pragma unroll
      for (int wi = 0; wi < kGemvWarps; ++wi) s += red[wi * ROWS * kGemvCols + idx];
    }
    sums[p] = s;
  }
  auto store = [&](int idx, float v) {
    const int r = idx / kGemvCols;
    const int64_t col = col0 + idx % kGemvCols;
    if (idx < ROWS * kGemvCols && r < rows && col < m) StoreFromFloat(out, odt, static_cast<int64_t>(r) * m + col, v);
  };
  if (splits == 1) {
#pragma unroll
    for (int p = 0; p < kPer; ++p) store(tid + p * kGemvThreads, sums[p]);
    return;
  }
#pragma unroll
  for (int p = 0; p < kPer; ++p) {
    const int idx = tid + p * kGemvThreads;
    const int r = idx / kGemvCols;
    const int64_t col = col0 + idx % kGemvCols;
    if (idx < ROWS * kGemvCols && r < rows && col < m)
      partial[(static_cast<int64_t>(split) * kGemvMaxRows + r) * m + col] = sums[p];
  }
  __threadfence();
  __syncthreads();
  if (tid == 0) last_block = atomicAdd(&counters[tile], 1u) == static_cast<unsigned>(splits - 1);
  __syncthreads();
  if (!last_block) return;
  __threadfence();
  for (int idx = tid; idx < ROWS * kGemvCols; idx += kGemvThreads) {
    const int r = idx / kGemvCols;
    const int64_t col = col0 + idx % kGemvCols;
    if (r >= rows || col >= m) continue;
    float s = 0.0f;
    // Other blocks wrote these: read around L1, which is not coherent across SMs.
    for (int sp = 0; sp < splits; ++sp) s += __ldcg(partial + (static_cast<int64_t>(sp) * kGemvMaxRows + r) * m + col);
    store(idx, s);
  }
  if (tid == 0) counters[tile] = 0;  // ready for the next launch (CUDA-graph replays too)
}

template <int BITS, int ROWS>
void LaunchGemvRows(const GptqArgs& w, const GptqGemvPlan& plan, const __nv_bfloat16* x, int rows, void* out,
                    DType odt, void* workspace, cudaStream_t stream) {
  auto* counters = static_cast<unsigned*>(workspace);
  auto* partial = reinterpret_cast<float*>(static_cast<char*>(workspace) + kGptqGemvPartialOffset);
  GptqGemvKernel<BITS, ROWS><<<dim3(plan.col_tiles, plan.splits), kGemvThreads, 0, stream>>>(
      w, x, rows, out, odt, plan.chunk_words, plan.splits, partial, counters);
}

template <int BITS>
void LaunchGemvBits(const GptqArgs& w, const GptqGemvPlan& plan, const void* x, int64_t rows, void* out, DType odt,
                    void* workspace, cudaStream_t stream) {
  const size_t out_es = DTypeSize(odt);
  for (int64_t r0 = 0; r0 < rows; r0 += kGemvMaxRows) {
    const int n = static_cast<int>(std::min<int64_t>(kGemvMaxRows, rows - r0));
    const auto* xr = static_cast<const __nv_bfloat16*>(x) + r0 * w.in_features;
    void* o = static_cast<char*>(out) + static_cast<size_t>(r0 * w.out_features) * out_es;
    if (n == 1) {
      LaunchGemvRows<BITS, 1>(w, plan, xr, n, o, odt, workspace, stream);
    } else if (n == 2) {
      LaunchGemvRows<BITS, 2>(w, plan, xr, n, o, odt, workspace, stream);
    } else if (n <= 4) {
      LaunchGemvRows<BITS, 4>(w, plan, xr, n, o, odt, workspace, stream);
    } else {
      LaunchGemvRows<BITS, 8>(w, plan, xr, n, o, odt, workspace, stream);
    }
  }
}

// ---- tensor-core GEMM ---------------------------------------------------------------

constexpr int kGemmM = 64, kGemmN = 128, kGemmK = 32;
constexpr int kGemmThreads = 256;  // 8 warps as 2 (rows) x 4 (columns), 32x32 each
constexpr int kLdA = kGemmK + 8, kLdB = kGemmN + 8, kLdC = kGemmN + 4;
constexpr int kGemmSmem = kGemmM * kLdC * 4;  // the f32 output staging, larger than A + B tiles
static_assert(kGemmM * kLdA * 2 + kGemmK * kLdB * 2 <= kGemmSmem, "A and B tiles must fit the staging area");

template <int BITS>
__global__ void __launch_bounds__(kGemmThreads) GptqGemmKernel(GptqArgs w, const __nv_bfloat16* x, int64_t n,
                                                              void* out, DType odt) {
  using namespace nvcuda;
  constexpr int F = 32 / BITS;
  constexpr int kWordRows = kGemmK / F;
  constexpr uint32_t kMask = (1u << BITS) - 1u;
  __shared__ __align__(128) unsigned char smem[kGemmSmem];
  auto* as = reinterpret_cast<__nv_bfloat16*>(smem);                          // [kGemmM][kLdA]
  auto* bs = reinterpret_cast<__nv_bfloat16*>(smem + kGemmM * kLdA * 2);      // [kGemmK][kLdB]: B[k][n] = W[n][k]
  auto* cs = reinterpret_cast<float*>(smem);                                  // [kGemmM][kLdC]

  const int64_t m = w.out_features, k = w.in_features;
  const int64_t kw = (k * BITS + 31) / 32;
  const int64_t col0 = static_cast<int64_t>(blockIdx.x) * kGemmN;
  const int64_t row0 = static_cast<int64_t>(blockIdx.y) * kGemmM;
  const int tid = threadIdx.x, warp = tid / 32;
  const int wm = warp / 4, wn = warp % 4;

  wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[2][2];
#pragma unroll
  for (int i = 0; i < 2; ++i)
#pragma unroll
    for (int j = 0; j < 2; ++j) wmma::fill_fragment(acc[i][j], 0.0f);

  for (int64_t k0 = 0; k0 < k; k0 += kGemmK) {
    // A tile: 8 activations per thread, gathered through perm; zeros past n and k.
    {
      const int r = tid / 4, kk = (tid % 4) * 8;
      const int64_t row = row0 + r;
#pragma unroll
      for (int e = 0; e < 8; ++e) {
        const int64_t gi = k0 + kk + e;
        __nv_bfloat16 v = __float2bfloat16(0.0f);
        if (row < n && gi < k) v = x[row * k + (w.perm != nullptr ? w.perm[gi] : gi)];
        as[r * kLdA + kk + e] = v;
      }
    }
    // B tile: one group per k step (group_size % 32 == 0, or a single group).
    const int64_t g = k0 / w.group_size;
    for (int idx = tid; idx < kWordRows * kGemmN; idx += kGemmThreads) {
      const int wr = idx / kGemmN, cn = idx % kGemmN;
      const int64_t col = col0 + cn, rr = k0 / F + wr;
      uint32_t word = 0;
      float s = 0.0f, z = 0.0f;
      if (col < m && rr < kw) {
        word = static_cast<uint32_t>(__ldg(w.qweight + rr * m + col));
        s = __half2float(__ushort_as_half(w.scales[g * m + col]));
        z = static_cast<float>(ZeroField(w, g, col));
      }
#pragma unroll
      for (int f = 0; f < F; ++f) {
        const float v = (static_cast<float>((word >> (BITS * f)) & kMask) - z) * s;
        bs[(wr * F + f) * kLdB + cn] = __float2bfloat16(v);
      }
    }
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < kGemmK; kk += 16) {
      wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, wmma::row_major> fa[2];
      wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::row_major> fb[2];
#pragma unroll
      for (int i = 0; i < 2; ++i) wmma::load_matrix_sync(fa[i], as + (wm * 32 + i * 16) * kLdA + kk, kLdA);
#pragma unroll
      for (int j = 0; j < 2; ++j) wmma::load_matrix_sync(fb[j], bs + kk * kLdB + wn * 32 + j * 16, kLdB);
#pragma unroll
      for (int i = 0; i < 2; ++i)
#pragma unroll
        for (int j = 0; j < 2; ++j) wmma::mma_sync(acc[i][j], fa[i], fb[j], acc[i][j]);
    }
    __syncthreads();
  }
#pragma unroll
  for (int i = 0; i < 2; ++i)
#pragma unroll
    for (int j = 0; j < 2; ++j)
      wmma::store_matrix_sync(cs + (wm * 32 + i * 16) * kLdC + wn * 32 + j * 16, acc[i][j], kLdC,
                              wmma::mem_row_major);
  __syncthreads();
  for (int idx = tid; idx < kGemmM * kGemmN; idx += kGemmThreads) {
    const int r = idx / kGemmN, cn = idx % kGemmN;
    const int64_t row = row0 + r, col = col0 + cn;
    if (row < n && col < m) StoreFromFloat(out, odt, row * m + col, cs[r * kLdC + cn]);
  }
}

}  // namespace

GptqGemvPlan PlanGptqGemv(const GptqArgs& w, int64_t /*rows*/, int num_sms) {
  GptqGemvPlan p;
  const int64_t f = 32 / w.bits;
  const int64_t kw = (w.in_features * w.bits + 31) / 32;
  const int64_t max_chunk = kGemvChunkInputs / f;
  p.col_tiles = static_cast<int32_t>((w.out_features + kGemvCols - 1) / kGemvCols);
  // About two blocks per multiprocessor, each split keeping every warp busy.
  const int64_t want = (2 * static_cast<int64_t>(num_sms) + p.col_tiles - 1) / p.col_tiles;
  const int64_t min_splits = (kw + max_chunk - 1) / max_chunk;
  const int64_t splits = std::max<int64_t>({min_splits, std::min<int64_t>(want, kw / kGemvWarps), 1});
  p.chunk_words = static_cast<int32_t>((kw + splits - 1) / splits);
  p.splits = static_cast<int32_t>((kw + p.chunk_words - 1) / p.chunk_words);
  if (p.splits > 1) {
    p.workspace_bytes =
        kGptqGemvPartialOffset + static_cast<size_t>(p.splits) * kGemvMaxRows * w.out_features * sizeof(float);
  }
  return p;
}

void LaunchGptqGemv(const GptqArgs& w, const GptqGemvPlan& plan, const void* x, int64_t rows, void* out,
                    DType out_dtype, void* workspace, cudaStream_t stream) {
  switch (w.bits) {
    case 2: LaunchGemvBits<2>(w, plan, x, rows, out, out_dtype, workspace, stream); break;
    case 4: LaunchGemvBits<4>(w, plan, x, rows, out, out_dtype, workspace, stream); break;
    case 8: LaunchGemvBits<8>(w, plan, x, rows, out, out_dtype, workspace, stream); break;
    default: break;  // rejected by the backend
  }
}

bool GptqGemmSupported(const GptqArgs& w) {
  return (w.bits == 2 || w.bits == 4 || w.bits == 8) &&
         (w.group_size % kGemmK == 0 || w.group_size >= w.in_features);
}

void LaunchGptqGemm(const GptqArgs& w, const void* x, int64_t rows, void* out, DType out_dtype, cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>((w.out_features + kGemmN - 1) / kGemmN),
                  static_cast<unsigned>((rows + kGemmM - 1) / kGemmM));
  const auto* xb = static_cast<const __nv_bfloat16*>(x);
  switch (w.bits) {
    case 2: GptqGemmKernel<2><<<grid, kGemmThreads, 0, stream>>>(w, xb, rows, out, out_dtype); break;
    case 4: GptqGemmKernel<4><<<grid, kGemmThreads, 0, stream>>>(w, xb, rows, out, out_dtype); break;
    case 8: GptqGemmKernel<8><<<grid, kGemmThreads, 0, stream>>>(w, xb, rows, out, out_dtype); break;
    default: break;
  }
}

}  // namespace tessera::cuda
