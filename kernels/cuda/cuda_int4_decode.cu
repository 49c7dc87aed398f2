// int4 x bf16 matmul for decode batches (1-16 rows) on the repacked layout (int4_layout.h).
// The weight is the mma's A operand: a packed word is already the m16n8k16 A fragment of 16
// columns x 16 inputs, and the activations (8 rows) are B, so batch 1-8 costs one mma per
// 16x16 weight block and nothing is wasted on a second column tile. Each warp streams nb
// column blocks over its run of 64-input chunks with 16-byte loads straight into a register
// ring (no shared-memory round trip for weights); activations and per-group metadata are
// staged in shared memory, by the warps that share a K slice for that slice alone (meeting
// at a named barrier of their own) or once for the block. The warps of a block split its K
// run and meet in shared memory; blocks split K further only as far as the device needs to
// be filled and then meet through the workspace, the last block to arrive summing (or, as
// plan knobs, through distributed shared memory as one thread-block cluster, or published by
// one thread's acquire-release arrival); a block may also own all of K. The ring's depth
// (chunk steps in flight per warp) is a template parameter. Launched as a programmatic
// dependent, a block streams its weights before the previous kernel has finished and waits
// for it only to read the activations.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cooperative_groups.h>

#include <algorithm>

#include "kernels/cuda/cuda_common.cuh"
#include "kernels/cuda/cuda_int4_common.cuh"
#include "kernels/cuda/cuda_int4_launch.h"
#include "kernels/cuda/cuda_quant_launch.h"

namespace tessera::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int kMaxSmemBytes = 160 * 1024;   // what a plan may ask for
constexpr int kFillChunks = 32;             // a block's K run when the planner splits K to fill the device
constexpr int kMaxClusterSplits = 8;        // the portable thread-block cluster size

struct DecodeArgs {
  Int4Args w;
  const __nv_bfloat16* x;
  int64_t lda, k_valid;
  int64_t up_offset;  // 0: x holds the activations; else x holds gate_up rows, up at gate + up_offset
  int rows, warps_n, chunks_per_split;
  bool cluster;       // the splits meet in distributed shared memory
  bool release_once;  // one thread publishes the block's partial sums (else every thread fences)
  bool slice;         // each K slice's warps stage their own activations and metadata
  bool batched_meet;  // the last block keeps many partial-sum loads in flight per thread
  int x_stride;     // staged activation row, bf16
  int meta_offset;  // staged metadata, bytes into shared memory
  int slice_meta_bytes;  // one K slice's metadata (slice staging)
  int red_offset;   // the warps' sums, bytes into shared memory (0: over the staged inputs)
  void* out;
  DType odt;
  float* partial;
  unsigned* counters;
};

// Weights are read once: keep them out of L1.
__device__ __forceinline__ uint4 LoadStreaming(const uint4* p) {
  uint4 v;
  asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
               : "l"(p));
  return v;
}

// The last block's sum of the splits' partials for its tile, out = sum over sp in split order
// (as the one-at-a-time loop, so the result is the same bits). Each thread owns up to kOuts
// outputs and keeps kOuts x kSplits L2 loads in flight: one at a time, the round trips of a
// thread's outputs and splits queue behind each other (at 8-16 rows of a wide tile, several
// per thread).
__device__ __forceinline__ void MeetBatched(const float* partial, int rows, int64_t n, int64_t col0, int ncols,
                                            int splits, void* out, DType odt, int tid) {
  constexpr int kOuts = 4, kSplits = 8;
  const int total = rows * ncols;
  for (int base = tid; base < total; base += kThreads * kOuts) {
    const float* src[kOuts];
    bool ok[kOuts];
    float s[kOuts];
#pragma unroll
    for (int u = 0; u < kOuts; ++u) {
      const int idx = base + u * kThreads;
      ok[u] = idx < total;
      const int row = ok[u] ? idx / ncols : 0, col = ok[u] ? idx % ncols : 0;
      src[u] = partial + row * n + col0 + col;
      s[u] = 0.0f;
    }
    const int64_t split_stride = static_cast<int64_t>(rows) * n;
    for (int sp = 0; sp < splits; sp += kSplits) {
      float v[kSplits][kOuts];
#pragma unroll
      for (int q = 0; q < kSplits; ++q)
#pragma unroll
        for (int u = 0; u < kOuts; ++u) v[q][u] = ok[u] && sp + q < splits ? __ldcg(src[u] + (sp + q) * split_stride) : 0.0f;
#pragma unroll
      for (int q = 0; q < kSplits; ++q)
#pragma unroll
        for (int u = 0; u < kOuts; ++u) s[u] += v[q][u];
    }
#pragma unroll
    for (int u = 0; u < kOuts; ++u) {
      if (ok[u]) StoreFromFloat(out, odt, src[u] - partial, s[u]);
    }
  }
}

// The fused SiluMul's staging: each 8-input segment of a staged row is formed from the gate
// and up segments of its gate_up row as SiluMul forms it (f32, one bf16 rounding), through
// registers instead of cp.async. Each thread keeps two segments' loads in flight.
__device__ __forceinline__ void StageSiluMul(const DecodeArgs& a, __nv_bfloat16* xs, int r0, int x0, int segs,
                                             int stager, int stagers) {
  constexpr int kInFlight = 2;
  const int items = a.rows * segs;
  for (int i0 = stager; i0 < items; i0 += kInFlight * stagers) {
    uint4 gv[kInFlight], uv[kInFlight];
#pragma unroll
    for (int u = 0; u < kInFlight; ++u) {
      const int i = i0 + u * stagers;
      const int r = i / segs, s = i % segs;
      const int64_t col = static_cast<int64_t>(r0) * 64 + s * 8;
      gv[u] = uv[u] = make_uint4(0, 0, 0, 0);
      if (i < items && col < a.k_valid) {
        const __nv_bfloat16* gate = a.x + r * a.lda + col;
        gv[u] = __ldg(reinterpret_cast<const uint4*>(gate));
        uv[u] = __ldg(reinterpret_cast<const uint4*>(gate + a.up_offset));
      }
    }
#pragma unroll
    for (int u = 0; u < kInFlight; ++u) {
      const int i = i0 + u * stagers;
      if (i >= items) break;
      float g[8], up[8];
      Bf16x8ToFloat(gv[u], g);
      Bf16x8ToFloat(uv[u], up);
#pragma unroll
      for (int e = 0; e < 8; ++e) g[e] = SiluMulF32(g[e], up[e]);
      *reinterpret_cast<uint4*>(xs + (i / segs) * a.x_stride + x0 + (i % segs) * 8) = FloatToBf16x8(g);
    }
  }
}

// MinBlocks: blocks per multiprocessor the registers must allow (3 caps them at 80). R: chunk
// steps of weight loads in flight per warp (the register ring); all of a warp's loads when
// its K run is at most R chunks, so that they all go out before the previous kernel ends.
// Fold: the zero point leaves the inner loop. A nibble pair becomes bf16x2 128 + q with one
// lop3 and the tensor cores sum (128 + q) x; one more mma per 16-input step, with all-ones
// weights, sums the activations, and each group's flush subtracts (128 + zero) times that sum
// in one fma before scaling (an f32 difference of sums ~30x larger than it; tests hold it to
// the same tolerance). Without it each pair is lop3 + one bf16x2 subtract of 128 + zero.
template <int NT, int NB, int MinBlocks, int R, bool Fold>
__global__ void __launch_bounds__(kThreads, MinBlocks) Int4DecodeKernel(DecodeArgs a) {
  extern __shared__ __align__(16) unsigned char smem[];
  __shared__ bool last_block;
  const Int4Args& w = a.w;
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int g = lane / 4, t = lane % 4;
  const int warps_k = kWarps / a.warps_n;
  const int wn = warp % a.warps_n, wk = warp / a.warps_n;
  const int n_blocks = static_cast<int>(w.n_blocks), k_chunks = static_cast<int>(w.k_chunks);
  const int tile_blocks = a.warps_n * NB;
  const int nb_tile = blockIdx.x * tile_blocks, nb_warp = nb_tile + wn * NB;
  const int split = blockIdx.y, splits = gridDim.y;
  const int c0 = split * a.chunks_per_split, c1 = min(c0 + a.chunks_per_split, k_chunks);
  const int per_warp = (c1 - c0 + warps_k - 1) / warps_k;
  const int wc0 = min(c1, c0 + wk * per_warp), wc1 = min(c1, wc0 + per_warp);

  // Metadata and weights do not depend on the previous kernel: they go out before waiting for
  // it, the small metadata first so that it is not queued behind the weight stream. Staged
  // metadata: the groups a K run touches, [group][tile_blocks] 64-byte records; the block's
  // run staged by all its threads, or (slice staging) each K slice's run by the warps_n warps
  // that share it, into a region of its own, so that no block-wide barrier stands between
  // griddepcontrol.wait and a warp's first mma (they meet at a named barrier of their own).
  const int gsize = static_cast<int>(w.group_size), gsteps = gsize / 16;
  const int r0 = a.slice ? wc0 : c0, r1 = a.slice ? wc1 : c1;  // the staged K run
  const int stagers = a.slice ? a.warps_n * 32 : kThreads, stager = a.slice ? wn * 32 + lane : tid;
  const int gfirst = r0 * 64 / gsize;
  const int glast = r1 > r0 ? min(static_cast<int>(w.groups) - 1, (r1 * 64 - 1) / gsize) : gfirst - 1;
  unsigned char* ms = smem + a.meta_offset + (a.slice ? wk * a.slice_meta_bytes : 0);
  const int pieces = tile_blocks * 4;
  for (int i = stager; i < (glast - gfirst + 1) * pieces; i += stagers) {
    const int grp = i / pieces, nb = nb_tile + (i % pieces) / 4, part = i % 4;
    const bool ok = nb < n_blocks;
    const unsigned char* src = w.meta + ((static_cast<int64_t>(gfirst + grp) * n_blocks + nb) * 64 + part * 16);
    CpAsync16(ms + i * 16, ok ? src : w.meta, ok);
  }
  CpAsyncCommit();

  const uint4* wsrc = reinterpret_cast<const uint4*>(w.words) + static_cast<int64_t>(nb_warp) * k_chunks * 32 + lane;
  bool col_ok[NB];
#pragma unroll
  for (int b = 0; b < NB; ++b) col_ok[b] = nb_warp + b < n_blocks;
  auto load = [&](uint4(&dst)[NB], int c) {
#pragma unroll
    for (int b = 0; b < NB; ++b) {
      dst[b] = c < wc1 && col_ok[b] ? LoadStreaming(wsrc + (static_cast<int64_t>(b) * k_chunks + c) * 32)
                                    : make_uint4(0, 0, 0, 0);
    }
  };
  uint4 q[R][NB];
#pragma unroll
  for (int r = 0; r < R; ++r) load(q[r], wc0 + r);

  // A dependent kernel may start launching now (it waits for this grid to finish before it
  // reads anything this grid writes); this one waits for its predecessor here, before reading
  // the activations or touching the workspace. Both are no-ops without a programmatic launch.
  asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
  asm volatile("griddepcontrol.wait;\n" ::: "memory");

  // Activations of the staged K run, valid rows only, zeros from k_valid on; a row is indexed
  // by chunk - c0 either way (the slices' runs are disjoint parts of the block's).
  auto* xs = reinterpret_cast<__nv_bfloat16*>(smem);
  const int segs = a.slice ? (wc1 - wc0) * 8 : a.chunks_per_split * 8;
  const int x0 = (r0 - c0) * 64;  // the run's first input in a staged row
  if (a.up_offset == 0) {
    for (int r = 0; r < a.rows; ++r) {
      for (int s = stager; s < segs; s += stagers) {
        const int64_t col = static_cast<int64_t>(r0) * 64 + s * 8;
        const bool ok = col < a.k_valid;
        CpAsync16(xs + r * a.x_stride + x0 + s * 8, ok ? a.x + r * a.lda + col : a.x, ok);
      }
    }
  } else {
    StageSiluMul(a, xs, r0, x0, segs, stager, stagers);
  }
  CpAsyncCommit();
  CpAsyncWait<0>();
  if (a.slice) {
    // The warps of this K slice only (barrier 0 is __syncthreads').
    asm volatile("bar.sync %0, %1;\n" ::"r"(1 + wk), "r"(stagers) : "memory");
  } else {
    __syncthreads();
  }

  // Group bookkeeping by counters (steps are 16 inputs): a division per step would cost more
  // than the step. This lane needs columns g and g + 8 of each block: scales as f32, zeros as
  // bf16x2 pairs (128 + zero), or folding as the f32 bits of 128 + zero.
  const int s0 = wc0 * 4;
  const int gmax = max(glast - gfirst, 0);
  int gidx = s0 / gsteps - gfirst, group_left = gsteps - s0 % gsteps;
  uint32_t zlo[NB], zhi[NB];
  float slo[NB], shi[NB];
  auto read_meta = [&](int gi) {
    const auto* recs = reinterpret_cast<const uint16_t*>(ms + (min(gi, gmax) * tile_blocks + wn * NB) * 64);
#pragma unroll
    for (int b = 0; b < NB; ++b) {
      const uint16_t* rec = recs + b * 32;
      slo[b] = __half2float(__ushort_as_half(rec[g]));
      shi[b] = __half2float(__ushort_as_half(rec[8 + g]));
      if constexpr (Fold) {
        zlo[b] = static_cast<uint32_t>(rec[16 + g]) << 16;
        zhi[b] = static_cast<uint32_t>(rec[24 + g]) << 16;
      } else {
        zlo[b] = __byte_perm(rec[16 + g], 0, 0x1010);
        zhi[b] = __byte_perm(rec[24 + g], 0, 0x1010);
      }
    }
  };
  read_meta(gidx);

  // Accumulator e of block b, row tile nt: column 16 * (nb_warp + b) + g + 8 * (e / 2), row
  // 8 * nt + 2 * t + e % 2. tmp holds the current group's integer-weight sums; folding, xsum
  // the group's activation sums (element e: row 8 * nt + 2 * t + e % 2, as tmp's).
  float acc[NB][NT][4], tmp[NB][NT][4], xsum[NT][4];
#pragma unroll
  for (int nt = 0; nt < NT; ++nt)
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      xsum[nt][e] = 0.0f;
#pragma unroll
      for (int b = 0; b < NB; ++b) acc[b][nt][e] = tmp[b][nt][e] = 0.0f;
    }
  auto flush = [&] {
#pragma unroll
    for (int b = 0; b < NB; ++b)
#pragma unroll
      for (int nt = 0; nt < NT; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          float d = tmp[b][nt][e];
          if constexpr (Fold) d = fmaf(-__uint_as_float(e < 2 ? zlo[b] : zhi[b]), xsum[nt][e], d);
          acc[b][nt][e] = fmaf(d, e < 2 ? slo[b] : shi[b], acc[b][nt][e]);
          tmp[b][nt][e] = 0.0f;
        }
    if constexpr (Fold) {
#pragma unroll
      for (int nt = 0; nt < NT; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) xsum[nt][e] = 0.0f;
    }
  };

  const auto* xs32 = reinterpret_cast<const uint32_t*>(xs);
  const int xw = a.x_stride / 2;  // words per staged row: = 4 mod 32, so the 8 rows x 4 lanes hit distinct banks
  auto compute = [&](const uint4(&qc)[NB], int c) {
    const int kw = (c - c0) * 32 + t;  // word of input 64 * (c - c0) + 2t in a staged row
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      uint32_t bx[NT][2];
#pragma unroll
      for (int nt = 0; nt < NT; ++nt) {
        const int row = nt * 8 + g;
        const bool ok = row < a.rows;
        bx[nt][0] = ok ? xs32[row * xw + kw + 8 * j] : 0u;
        bx[nt][1] = ok ? xs32[row * xw + kw + 8 * j + 4] : 0u;
      }
#pragma unroll
      for (int b = 0; b < NB; ++b) {
        const uint32_t word = j == 0 ? qc[b].x : j == 1 ? qc[b].y : j == 2 ? qc[b].z : qc[b].w;
        // Nibble pairs r = 2 * tile + breg (int4_layout.h) in A-fragment order: rows g, g + 8
        // of inputs 2t, 2t + 1, then of inputs 2t + 8, 2t + 9.
        uint32_t af[4];
        if constexpr (Fold) {
          af[0] = Int4Pair128(word);
          af[1] = Int4Pair128(word >> 8);
          af[2] = Int4Pair128(word >> 4);
          af[3] = Int4Pair128(word >> 12);
        } else {
          af[0] = DequantPair(word, zlo[b]);
          af[1] = DequantPair(word >> 8, zhi[b]);
          af[2] = DequantPair(word >> 4, zlo[b]);
          af[3] = DequantPair(word >> 12, zhi[b]);
        }
#pragma unroll
        for (int nt = 0; nt < NT; ++nt) MmaBf16(tmp[b][nt], af, bx[nt][0], bx[nt][1]);
      }
      if constexpr (Fold) {
        constexpr uint32_t kOnes = 0x3F803F80u;  // bf16x2 (1, 1)
        const uint32_t ones[4] = {kOnes, kOnes, kOnes, kOnes};
#pragma unroll
        for (int nt = 0; nt < NT; ++nt) MmaBf16(xsum[nt], ones, bx[nt][0], bx[nt][1]);
      }
      if (--group_left == 0) {
        flush();
        group_left = gsteps;
        read_meta(++gidx);
      }
    }
  };

#pragma unroll 1
  for (int c = wc0; c < wc1; c += R) {
#pragma unroll
    for (int r = 0; r < R; ++r) {
      if (c + r < wc1) {
        compute(q[r], c + r);
        load(q[r], c + r + R);
      }
    }
  }
  // The last, partial group (a no-op when a group just ended). A warp with no chunks has no
  // metadata of its own staged (slice staging): its zero sums must not meet unstaged scales.
  if (wc0 < wc1) flush();

  // The warps' sums meet in shared memory, [warps_k][8 * NT rows][tile columns], and the
  // block's sums go to `sums` [8 * NT rows][tile columns] when the cluster reads them.
  if (a.red_offset == 0) __syncthreads();  // they reuse the staged inputs: done with
  auto* red = reinterpret_cast<float*>(smem + a.red_offset);
  const int tile_cols = tile_blocks * 16, rows_pad = 8 * NT;
  float* sums = red + warps_k * rows_pad * tile_cols;
#pragma unroll
  for (int b = 0; b < NB; ++b)
#pragma unroll
    for (int nt = 0; nt < NT; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int col = (wn * NB + b) * 16 + g + 8 * (e / 2), row = nt * 8 + 2 * t + e % 2;
        red[(wk * rows_pad + row) * tile_cols + col] = acc[b][nt][e];
      }
  __syncthreads();
  const int64_t n = w.out_features, col0 = static_cast<int64_t>(nb_tile) * 16;
  const int ncols = static_cast<int>(min(static_cast<int64_t>(tile_cols), n - col0));
  const int rows = a.rows;
  // Flat over (row, column) so that every thread has work at 16 rows of a narrow tile: the
  // global path's loads below are L2 round trips, and a loop per row serialises them.
  for (int idx = tid; idx < rows * ncols; idx += kThreads) {
    const int row = idx / ncols, col = idx % ncols;
    float s = 0.0f;
    for (int k = 0; k < warps_k; ++k) s += red[(k * rows_pad + row) * tile_cols + col];
    if (splits == 1) {
      StoreFromFloat(a.out, a.odt, row * n + col0 + col, s);
    } else if (a.cluster) {
      sums[row * tile_cols + col] = s;
    } else {
      a.partial[(static_cast<int64_t>(split) * rows + row) * n + col0 + col] = s;
    }
  }
  if (splits == 1) return;

  if (a.cluster) {
    // The splits of a column tile are one cluster (grid.y == cluster size): each block sums
    // a slice of the columns over every block's `sums`, in split order (deterministic).
    namespace cg = cooperative_groups;
    cg::cluster_group cluster = cg::this_cluster();
    cluster.sync();  // every block's sums are written
    const int per = (ncols + splits - 1) / splits;
    const int lo = split * per, hi = min(ncols, lo + per);
    for (int row = 0; row < rows; ++row) {
      for (int col = lo + tid; col < hi; col += kThreads) {
        float s = 0.0f;
        for (int sp = 0; sp < splits; ++sp) s += cluster.map_shared_rank(sums, sp)[row * tile_cols + col];
        StoreFromFloat(a.out, a.odt, row * n + col0 + col, s);
      }
    }
    cluster.sync();  // no block leaves while others read its shared memory
    return;
  }

  unsigned* counter = a.counters + blockIdx.x;
  if (a.release_once) {
    // The barrier orders every thread's partial sums before thread 0's arrival, whose
    // release (cumulative over what the barrier ordered) publishes them at device scope and
    // whose acquire, passed on by the second barrier, lets the last block read the others'.
    __syncthreads();
    if (tid == 0) last_block = AtomicAddAcqRel(counter, 1u) == static_cast<unsigned>(splits - 1);
    __syncthreads();
    if (!last_block) return;
  } else {
    __threadfence();
    __syncthreads();
    if (tid == 0) last_block = atomicAdd(counter, 1u) == static_cast<unsigned>(splits - 1);
    __syncthreads();
    if (!last_block) return;
    __threadfence();
  }
  // Other blocks wrote these: read around L1, which is not coherent across SMs.
  if (a.batched_meet) {
    MeetBatched(a.partial, rows, n, col0, ncols, splits, a.out, a.odt, tid);
  } else {
    for (int idx = tid; idx < rows * ncols; idx += kThreads) {
      const int row = idx / ncols, col = idx % ncols;
      float s = 0.0f;
      for (int sp = 0; sp < splits; ++sp) s += __ldcg(a.partial + (static_cast<int64_t>(sp) * rows + row) * n + col0 + col);
      StoreFromFloat(a.out, a.odt, row * n + col0 + col, s);
    }
  }
  if (tid == 0) *counter = 0;  // ready for the next launch (CUDA-graph replays too)
}

using KernelFn = void (*)(DecodeArgs);

// The instantiated kernels (index: KernelIndex): one or two row tiles, two or four column
// blocks per warp, a ring of 2 chunk steps; two column blocks at one row tile also fit three
// blocks per multiprocessor, and take rings of 4 and 8 (4 at two row tiles); each with and
// without the zero point folded out of the inner loop.
constexpr int kShapes = 8;
constexpr int kKernels = 2 * kShapes;
int KernelIndex(const Int4Plan& p) {
  const int fold = p.fold_zero ? kShapes : 0;
  if (p.nb == 4) return fold + (p.nt == 1 ? 2 : 4);
  if (p.nt == 2) return fold + (p.ring == 4 ? 7 : 3);
  if (p.min_blocks == 3) return fold + 1;
  return fold + (p.ring == 8 ? 6 : p.ring == 4 ? 5 : 0);
}

KernelFn KernelFor(const Int4Plan& p) {
  static constexpr KernelFn kFns[kKernels] = {
      Int4DecodeKernel<1, 2, 2, 2, false>, Int4DecodeKernel<1, 2, 3, 2, false>, Int4DecodeKernel<1, 4, 2, 2, false>,
      Int4DecodeKernel<2, 2, 2, 2, false>, Int4DecodeKernel<2, 4, 2, 2, false>, Int4DecodeKernel<1, 2, 2, 4, false>,
      Int4DecodeKernel<1, 2, 2, 8, false>, Int4DecodeKernel<2, 2, 2, 4, false>,
      Int4DecodeKernel<1, 2, 2, 2, true>,  Int4DecodeKernel<1, 2, 3, 2, true>,  Int4DecodeKernel<1, 4, 2, 2, true>,
      Int4DecodeKernel<2, 2, 2, 2, true>,  Int4DecodeKernel<2, 4, 2, 2, true>,  Int4DecodeKernel<1, 2, 2, 4, true>,
      Int4DecodeKernel<1, 2, 2, 8, true>,  Int4DecodeKernel<2, 2, 2, 4, true>};
  return kFns[KernelIndex(p)];
}

// Blocks of one kernel that fit on a multiprocessor by registers; asked once per kernel (the
// opt-in to kMaxSmemBytes of shared memory goes with it).
int RegisterBlocksPerSm(const Int4Plan& p) {
  static int cached[kKernels] = {};
  int& n = cached[KernelIndex(p)];
  if (n == 0) {
    KernelFn k = KernelFor(p);
    int blocks = 0;
    if (cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, kMaxSmemBytes) != cudaSuccess ||
        cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocks, k, kThreads, 0) != cudaSuccess) {
      blocks = 1;
    }
    n = std::max(blocks, 1);
  }
  return n;
}

int SmemPerSm() {
  static const int bytes = [] {
    int dev = 0, v = 0;
    if (cudaGetDevice(&dev) != cudaSuccess ||
        cudaDeviceGetAttribute(&v, cudaDevAttrMaxSharedMemoryPerMultiprocessor, dev) != cudaSuccess) {
      return kMaxSmemBytes;
    }
    return v;
  }();
  return bytes;
}

// Shared memory of a plan whose K run is `chunks`: staged activations and metadata (64-byte
// records), and the sums: over the staged inputs (whichever is larger), or with slice
// staging after them, so that no warp waits for the others to be done with their inputs
// before writing its sums (and the metadata in one region per K slice).
void SizeSmem(const Int4Args& w, int64_t rows, int chunks, Int4Plan* p) {
  const int tile_blocks = p->warps_n * p->nb, warps_k = kWarps / p->warps_n;
  p->x_stride = chunks * 64 + 8;
  p->meta_offset = static_cast<int32_t>(rows * p->x_stride * 2);
  auto groups_of = [&](int64_t run) { return (run * 64 + w.group_size - 1) / w.group_size + 1; };
  // The warps' sums, then the block's (read by the cluster).
  const int64_t sums = static_cast<int64_t>(warps_k + 1) * 8 * p->nt * tile_blocks * 16 * 4;
  if (p->slice_stage) {
    p->slice_meta_bytes = static_cast<int32_t>(groups_of((chunks + warps_k - 1) / warps_k) * tile_blocks * 64);
    p->red_offset = p->meta_offset + warps_k * p->slice_meta_bytes;
    p->smem_bytes = static_cast<int32_t>(p->red_offset + sums);
  } else {
    p->slice_meta_bytes = 0;
    p->red_offset = 0;
    p->smem_bytes = static_cast<int32_t>(std::max(p->meta_offset + groups_of(chunks) * tile_blocks * 64, sums));
  }
}

}  // namespace

Int4Plan PlanInt4Decode(const Int4Args& w, int64_t rows, bool x_direct, int num_sms, int nb, int warps_n,
                        int splits, int min_blocks, int ring, bool slice_stage) {
  Int4Plan p;
  p.slice_stage = slice_stage;
  p.nt = rows <= 8 ? 1 : 2;
  p.nb = nb == 2 ? 2 : 4;
  p.min_blocks = p.nt == 1 && p.nb == 2 && min_blocks == 3 ? 3 : 2;
  // Deeper rings only where the registers hold them (KernelFor's list).
  p.ring = p.nb == 4 || p.min_blocks == 3 ? 2 : ring >= 8 && p.nt == 1 ? 8 : ring >= 4 ? 4 : 2;
  p.warps_n = std::clamp(warps_n, 1, kWarps);
  // Folding the zero point out of the inner loop measured 0.1-0.5 us slower at every decode
  // batch and shape (bench sweep, H100): the inner loop's instruction count is not what
  // bounds the call. It stays a tested knob.
  p.fold_zero = false;
  const int warps_k = kWarps / p.warps_n;
  p.row_blocks = 1;
  const int64_t tile_blocks = p.warps_n * p.nb;
  const int64_t col_tiles = (w.n_blocks + tile_blocks - 1) / tile_blocks;
  if (rows < 1 || rows > kInt4DecodeMaxRows || col_tiles > kGptqGemvMaxColTiles) return p;
  p.col_tiles = static_cast<int32_t>(col_tiles);
  const int k_chunks = static_cast<int>(w.k_chunks);
  // Given splits set the K run (all of K for one split); filling the device starts from runs
  // of at most kFillChunks.
  int chunks = splits > 0 ? (k_chunks + splits - 1) / splits : std::min(k_chunks, kFillChunks);
  SizeSmem(w, rows, chunks, &p);
  while (p.smem_bytes > kMaxSmemBytes && chunks > 1) {  // small groups and wide tiles stage more metadata
    chunks = (chunks + 1) / 2;
    SizeSmem(w, rows, chunks, &p);
  }
  if (p.smem_bytes > kMaxSmemBytes) return p;
  if (splits <= 0) {
    // One wave of resident blocks, each warp keeping at least a chunk; more splits than
    // that only add partial sums.
    splits = static_cast<int>(std::clamp<int64_t>(Int4DecodeResidentBlocks(p, num_sms) / col_tiles, 1,
                                                  std::max(1, k_chunks / warps_k)));
  }
  chunks = std::min(chunks, (k_chunks + splits - 1) / splits);
  SizeSmem(w, rows, chunks, &p);
  p.chunks_per_split = chunks;
  p.splits = (k_chunks + chunks - 1) / chunks;
  // Splits meet through the workspace: as a cluster in distributed shared memory they
  // measured slower on the H100 at every decode batch but 1-8 rows of 11008x4096 (cluster
  // co-scheduling; bench sweep), so that stays a knob.
  p.cluster = false;
  p.pdl = true;
  // One thread's acquire-release arrival measured 0.5-0.65 us faster per split-K call than
  // every thread fencing (bench sweep, H100).
  p.release_once = true;
  // The last block's partial-sum loads batched where each thread sums at least four outputs
  // (8-16 rows of 64-128-column tiles: 0.1-0.6 us faster); with one or two outputs a thread
  // they measured 0.6-0.9 us slower at 1-4 rows (bench sweep, H100).
  p.batched_meet = rows * tile_blocks * 16 >= 4 * kThreads;
  p.decode = true;
  PlaceInt4Workspace(w, rows, x_direct, &p);
  return p;
}

int64_t Int4DecodeResidentBlocks(const Int4Plan& p, int num_sms) {
  const int per_sm =
      std::min(RegisterBlocksPerSm(p), SmemPerSm() / (p.smem_bytes + 1024));
  return static_cast<int64_t>(std::max(per_sm, 1)) * num_sms;
}

void LaunchInt4Decode(const Int4Args& w, const Int4Plan& p, const void* x, int64_t lda, int64_t k_valid,
                      int64_t rows, void* out, DType out_dtype, float* partial, unsigned* counters,
                      cudaStream_t stream, int64_t up_offset) {
  RegisterBlocksPerSm(p);  // the shared-memory opt-in
  DecodeArgs a;
  a.w = w;
  a.x = static_cast<const __nv_bfloat16*>(x);
  a.lda = lda;
  a.k_valid = k_valid;
  a.up_offset = up_offset;
  a.rows = static_cast<int>(rows);
  a.warps_n = p.warps_n;
  a.chunks_per_split = p.chunks_per_split;
  a.cluster = p.cluster && p.splits > 1 && p.splits <= kMaxClusterSplits;
  a.release_once = p.release_once;
  a.slice = p.slice_stage;
  a.batched_meet = p.batched_meet;
  a.x_stride = p.x_stride;
  a.meta_offset = p.meta_offset;
  a.slice_meta_bytes = p.slice_meta_bytes;
  a.red_offset = p.red_offset;
  a.out = out;
  a.odt = out_dtype;
  a.partial = partial;
  a.counters = counters;
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = dim3(p.col_tiles, p.splits);
  cfg.blockDim = dim3(kThreads);
  cfg.dynamicSmemBytes = p.smem_bytes;
  cfg.stream = stream;
  cudaLaunchAttribute attrs[2];
  cfg.attrs = attrs;
  cfg.numAttrs = 0;
  if (a.cluster) {
    cudaLaunchAttribute& c = attrs[cfg.numAttrs++];
    c.id = cudaLaunchAttributeClusterDimension;
    c.val.clusterDim.x = 1;
    c.val.clusterDim.y = p.splits;
    c.val.clusterDim.z = 1;
  }
  if (p.pdl) {
    cudaLaunchAttribute& d = attrs[cfg.numAttrs++];
    d.id = cudaLaunchAttributeProgrammaticStreamSerialization;
    d.val.programmaticStreamSerializationAllowed = 1;
  }
  // Errors surface through the caller's cudaGetLastError like a <<<>>> launch's.
  cudaLaunchKernelEx(&cfg, KernelFor(p), a);
}

}  // namespace tessera::cuda
