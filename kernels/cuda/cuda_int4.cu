// int4 x bf16 matmul on the repacked layout (int4_layout.h) above the decode kernel's batches
// (cuda_int4_decode.cu), and the planner and launcher of both. mma.sync m16n8k16 with the
// weight fragment dequantised in registers: each warp streams one 16-column block;
// weights, activations and per-group metadata go through one cp.async pipeline in shared
// memory, kStages 64-input chunks deep, behind a compact, not unrolled chunk loop. Integer
// weights (q - zero, exact in bf16) are multiplied in the tensor cores and each group's f32
// partial sum is scaled once, so the result is as exact as an f32 dequantise-then-multiply.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>

#include "kernels/cuda/cuda_common.cuh"
#include "kernels/cuda/cuda_int4_common.cuh"
#include "kernels/cuda/cuda_int4_launch.h"
#include "kernels/cuda/cuda_quant_launch.h"

namespace tessera::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;  // one 16-column block per warp: 128 columns per block
// cp.async stages of (weights, activations, metadata), one per 64-input chunk: kStages - 1
// chunks are in flight per block.
constexpr int kStages = 8;
constexpr int kWeightBytes = kWarps * 32 * 16;  // one 16-byte load per thread per chunk
constexpr int kLdA = 64 + 8;           // bf16 per staged activation row: 144 B keeps ldmatrix rows on distinct banks
constexpr int kMetaSlotBytes = kWarps * 64;  // one group's records for the block's 8 column blocks
constexpr int kMetaSlots = 4;                // a 64-input chunk spans at most 4 groups of >= 16

template <int MT>
constexpr int StageBytes() {
  return kWeightBytes + 16 * MT * kLdA * 2 + kMetaSlots * kMetaSlotBytes;
}

__device__ __forceinline__ uint32_t SmemAddr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// 16 bytes global -> shared; src_bytes 0 writes zeros without reading.
__device__ __forceinline__ void CpAsync16(void* dst, const void* src, int src_bytes) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(SmemAddr(dst)), "l"(src), "r"(src_bytes));
}
__device__ __forceinline__ void CpAsyncCommit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void CpAsyncWait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

__device__ __forceinline__ void LdMatrixX4(uint32_t (&r)[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(SmemAddr(p)));
}

template <int MT>
__global__ void __launch_bounds__(kThreads, MT == 1 ? 3 : MT == 2 ? 2 : 1)
    Int4MmaKernel(Int4Args w, const __nv_bfloat16* x, int64_t lda, int64_t k_valid, int64_t rows, void* out,
                  DType odt, int chunks_per_split, int splits, float* partial, unsigned* counters) {
  extern __shared__ __align__(16) unsigned char smem[];
  // A stage: weights [8 warps][32 lanes][16 B], activations [16*MT][kLdA], metadata.
  constexpr int kABytes = kWeightBytes + 16 * MT * kLdA * 2;  // end of the activations
  constexpr int kStage = StageBytes<MT>();
  __shared__ bool last_block;

  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int g = lane / 4, t = lane % 4;
  const int tile = blockIdx.x, split = blockIdx.y, rb = blockIdx.z;
  const int64_t m0 = static_cast<int64_t>(rb) * 16 * MT;
  const int nb0 = tile * kWarps;
  const int nb = nb0 + warp;
  const bool active = nb < w.n_blocks;
  const int n_blocks = static_cast<int>(w.n_blocks);
  const int c0 = split * chunks_per_split;
  const int c1 = min(c0 + chunks_per_split, static_cast<int>(w.k_chunks));
  const int64_t n = w.out_features;
  // Groups are whole 16-input steps. The hot loop tracks them with counters: integer
  // division here would cost more than the rest of the loop.
  const int gsteps = static_cast<int>(w.group_size / 16);
  const int step0 = c0 * 4;

  // This thread's 16-byte piece of its warp's weight chunk c is wsrc[32 * c].
  const uint4* wsrc = reinterpret_cast<const uint4*>(w.words) + static_cast<int64_t>(active ? nb : 0) * w.k_chunks * 32 + lane;
  // Producer side: the group of the next chunk's first step and its steps left there.
  int issue_group = step0 / gsteps, issue_left = gsteps - step0 % gsteps;
  auto issue = [&](int c, int slot) {
    if (c < c1) {
      unsigned char* st = smem + slot * kStage;
      CpAsync16(st + tid * 16, wsrc + c * 32, active ? 16 : 0);
      unsigned char* as = st + kWeightBytes;
#pragma unroll
      for (int i = tid; i < 16 * MT * 8; i += kThreads) {
        const int r = i / 8, seg = i % 8;
        const int64_t row = m0 + r, col = c * 64 + seg * 8;
        const bool ok = row < rows && col < k_valid;
        CpAsync16(as + (r * kLdA + seg * 8) * 2, ok ? x + row * lda + col : x, ok ? 16 : 0);
      }
      int spanned = 1;
      for (int left = issue_left; left < 4; left += gsteps) ++spanned;
      unsigned char* ms = st + kABytes;
      if (tid < spanned * (kMetaSlotBytes / 16)) {
        const int s = tid / (kMetaSlotBytes / 16), part = tid % (kMetaSlotBytes / 16);
        const int rec = nb0 + part / 4;
        const bool ok = rec < n_blocks;
        const unsigned char* src =
            ok ? w.meta + (static_cast<int64_t>(issue_group + s) * n_blocks + rec) * 64 + (part % 4) * 16 : w.meta;
        CpAsync16(ms + s * kMetaSlotBytes + part * 16, src, ok ? 16 : 0);
      }
    }
    for (issue_left -= 4; issue_left <= 0; issue_left += gsteps) ++issue_group;
    CpAsyncCommit();  // empty groups keep the wait count uniform
  };

  float acc[MT][2][4], tmp[MT][2][4];
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int h = 0; h < 2; ++h)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[mt][h][e] = tmp[mt][h][e] = 0.0f;

#pragma unroll 1
  for (int s = 0; s < kStages - 1; ++s) issue(c0 + s, s);

  // Consumer side: steps left in the current group; the zero pairs are re-read at each group.
  int group_left = gsteps - step0 % gsteps;
  bool new_group = true;
  uint32_t zero_pair[2] = {0, 0};
  int read_stage = 0, write_stage = kStages - 1;
#pragma unroll 1
  for (int c = c0; c < c1; ++c) {
    {
      CpAsyncWait<kStages - 2>();
      __syncthreads();
      issue(c + kStages - 1, write_stage);
      write_stage = write_stage + 1 == kStages ? 0 : write_stage + 1;
      const unsigned char* st = smem + read_stage * kStage;
      read_stage = read_stage + 1 == kStages ? 0 : read_stage + 1;
      if (!active) continue;
      const uint4 q4 = *reinterpret_cast<const uint4*>(st + tid * 16);
      const uint32_t qw[4] = {q4.x, q4.y, q4.z, q4.w};
      const unsigned char* meta_slot = st + kABytes + warp * 64;
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const auto* rec = reinterpret_cast<const uint16_t*>(meta_slot);
        if (new_group) {
          new_group = false;
          const uint32_t z0 = rec[16 + g], z1 = rec[24 + g];
          zero_pair[0] = z0 | (z0 << 16);
          zero_pair[1] = z1 | (z1 << 16);
        }
        uint32_t a[MT][4];
#pragma unroll
        for (int mt = 0; mt < MT; ++mt)
          LdMatrixX4(a[mt], st + kWeightBytes + ((mt * 16 + lane % 16) * kLdA + j * 16 + (lane / 16) * 8) * 2);
        uint32_t b[4];
#pragma unroll
        for (int r = 0; r < 4; ++r) b[r] = DequantPair(qw[j] >> (4 * r), zero_pair[r / 2]);
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) {
          MmaBf16(tmp[mt][0], a[mt], b[0], b[1]);
          MmaBf16(tmp[mt][1], a[mt], b[2], b[3]);
        }
        const bool group_ends = --group_left == 0;
        if (group_ends || (j == 3 && c + 1 == c1)) {
          // Columns 2t, 2t+1 of each 8-column tile, where this lane's accumulators sit.
          const float2 s0 = __half22float2(*reinterpret_cast<const __half2*>(rec + 2 * t));
          const float2 s1 = __half22float2(*reinterpret_cast<const __half2*>(rec + 8 + 2 * t));
#pragma unroll
          for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
            for (int e = 0; e < 4; ++e) {
              acc[mt][0][e] = fmaf(tmp[mt][0][e], e % 2 ? s0.y : s0.x, acc[mt][0][e]);
              acc[mt][1][e] = fmaf(tmp[mt][1][e], e % 2 ? s1.y : s1.x, acc[mt][1][e]);
              tmp[mt][0][e] = tmp[mt][1][e] = 0.0f;
            }
          }
        }
        if (group_ends) {
          group_left = gsteps;
          new_group = true;
          meta_slot += kMetaSlotBytes;  // the chunk's next group (the next chunk restarts at its slot 0)
        }
      }
    }
  }
  CpAsyncWait<0>();

  // Accumulator e of tile h sits at row 16*mt + g + 8*(e / 2), column 16*nb + 8*h + 2*t + e % 2.
  auto for_each_acc = [&](auto&& fn) {
    if (!active) return;
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
      for (int h = 0; h < 2; ++h)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int64_t row = m0 + mt * 16 + g + 8 * (e / 2), col = static_cast<int64_t>(nb) * 16 + h * 8 + 2 * t + e % 2;
          if (row < rows && col < n) fn(row, col, acc[mt][h][e]);
        }
  };
  if (splits == 1) {
    for_each_acc([&](int64_t row, int64_t col, float v) { StoreFromFloat(out, odt, row * n + col, v); });
    return;
  }
  for_each_acc([&](int64_t row, int64_t col, float v) { partial[(split * rows + row) * n + col] = v; });
  __threadfence();
  __syncthreads();
  unsigned* counter = counters + static_cast<int64_t>(rb) * gridDim.x + tile;
  if (tid == 0) last_block = atomicAdd(counter, 1u) == static_cast<unsigned>(splits - 1);
  __syncthreads();
  if (!last_block) return;
  __threadfence();
  const int nrows = static_cast<int>(min(static_cast<int64_t>(16 * MT), rows - m0));
  const int ncols = static_cast<int>(min(static_cast<int64_t>(16 * kWarps), n - static_cast<int64_t>(nb0) * 16));
  for (int idx = tid; idx < nrows * ncols; idx += kThreads) {
    const int64_t row = m0 + idx / ncols, col = static_cast<int64_t>(nb0) * 16 + idx % ncols;
    float s = 0.0f;
    // Other blocks wrote these: read around L1, which is not coherent across SMs.
    for (int sp = 0; sp < splits; ++sp) s += __ldcg(partial + (sp * rows + row) * n + col);
    StoreFromFloat(out, odt, row * n + col, s);
  }
  if (tid == 0) *counter = 0;  // ready for the next launch (CUDA-graph replays too)
}

// Activations through the act-order permutation (or just re-strided), zero-padded to ld.
__global__ void GatherKernel(const __nv_bfloat16* x, int64_t k, const int32_t* perm, int64_t rows, int64_t ld,
                             __nv_bfloat16* xg) {
  const int64_t total = rows * ld;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = i / ld, j = i % ld;
    xg[i] = j < k ? x[r * k + (perm != nullptr ? perm[j] : j)] : __float2bfloat16(0.0f);
  }
}

template <int MT>
void LaunchMt(const Int4Args& w, const Int4Plan& p, const __nv_bfloat16* x, int64_t lda, int64_t k_valid,
              int64_t rows, void* out, DType odt, float* partial, unsigned* counters, cudaStream_t stream) {
  const dim3 grid(p.col_tiles, p.splits, p.row_blocks);
  Int4MmaKernel<MT><<<grid, kThreads, kStages * StageBytes<MT>(), stream>>>(
      w, x, lda, k_valid, rows, out, odt, p.chunks_per_split, p.splits, partial, counters);
}

size_t AlignUp(size_t v, size_t a) { return (v + a - 1) / a * a; }

// Opts the kernel for MT into its shared memory (over the 48 KiB default for MT 4) and
// returns how many of its blocks one multiprocessor holds at once. Asked once per MT.
template <int MT>
int PrepareKernel() {
  static const int blocks = [] {
    constexpr int bytes = kStages * StageBytes<MT>();
    int n = 0;
    if (cudaFuncSetAttribute(Int4MmaKernel<MT>, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes) != cudaSuccess ||
        cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, Int4MmaKernel<MT>, kThreads, bytes) != cudaSuccess) {
      return 1;
    }
    return std::max(n, 1);
  }();
  return blocks;
}

int ResidentBlocksPerSm(int mt) {
  return mt == 1 ? PrepareKernel<1>() : mt == 2 ? PrepareKernel<2>() : PrepareKernel<4>();
}

}  // namespace

void PlaceInt4Workspace(const Int4Args& w, int64_t rows, bool x_direct, Int4Plan* p) {
  size_t bytes = kGptqGemvPartialOffset;
  p->partial_offset = bytes;
  if (p->splits > 1) bytes += static_cast<size_t>(p->splits) * rows * w.out_features * sizeof(float);
  p->gather = !x_direct;
  if (p->gather) {
    p->gather_ld = (w.in_features + 7) / 8 * 8;
    p->gather_offset = AlignUp(bytes, 256);
    bytes = p->gather_offset + static_cast<size_t>(rows * p->gather_ld) * 2;
  }
  p->workspace_bytes = p->splits > 1 || p->gather ? bytes : 0;
}

Int4Plan PlanInt4Matmul(const Int4Args& w, int64_t rows, bool x_direct, int num_sms) {
  if (rows <= kInt4DecodeMaxRows) {
    // Two column blocks per warp (four measured faster only on 11008x4096 at 1-8 rows, by
    // 0.3-0.5 us in round 5's sweep, slower elsewhere; not planned) and two
    // blocks per multiprocessor (three, registers capped at 80, measured slower on 4096x4096
    // at 1-8 rows); warps across columns such that the grid fills its waves best, two unless
    // another is clearly better (wide weights, whose column tiles alone come near a wave).
    // At 1-2 rows four warps across columns come first (4096x4096 at one row: 6.75 us against
    // 6.96 for two, same fill; bench sweep, H100).
    // Each K slice's warps stage their own inputs: no block-wide barrier between
    // griddepcontrol.wait and the first mma (0.05-0.4 us faster than block-wide staging on
    // the same plans at every decode batch and shape; bench sweep, H100).
    constexpr bool kSlice = true;
    // Fewest waves of resident blocks first, then the best-filled last wave. Only the first
    // wave streams weights before the previous kernel ends, and each wave adds its blocks'
    // chain (staging, reduction, split-K meeting): in the model at one row the fused q/k/v
    // weight (12288x4096) took 13.4 us per call in one wave of 240 blocks (0.91 filled)
    // against 19.0 us in three waves of 768 (0.97), and gate_up (22016x4096) 20.0 us in one
    // wave against 25-33 us in two to six (CUPTI kernel account, tessera-bench-decode
    // --trace-batches, H100).
    Int4Plan best;
    double best_fill = 0.0;
    int64_t best_waves = 0;
    static constexpr int kFewRows[] = {4, 2, 8, 1}, kMoreRows[] = {2, 4, 8, 1};
    const int* order = rows <= 2 ? kFewRows : kMoreRows;
    for (int i = 0; i < 4; ++i) {
      const int warps_n = order[i];
      const Int4Plan d = PlanInt4Decode(w, rows, x_direct, num_sms, 2, warps_n, 0, 2, 2, kSlice);
      if (!d.decode) continue;
      const int64_t blocks = static_cast<int64_t>(d.col_tiles) * d.splits;
      const int64_t resident = Int4DecodeResidentBlocks(d, num_sms);
      const int64_t waves = (blocks + resident - 1) / resident;
      const double fill = static_cast<double>(blocks) / (waves * resident);
      if (!best.decode || waves < best_waves || (waves == best_waves && fill > best_fill + 0.05)) {
        best = d;
        best_fill = fill;
        best_waves = waves;
      }
    }
    // Blocks owning all of K at 9-16 rows (planned in rounds 3-4 where their column tiles
    // fill the device) lost to the split plan once slices stage their own inputs and the
    // split-K meeting's loads are batched: 4096x4096 at 16 rows 11.3-11.6 us against 11.0.
    if (best.decode) return best;
  }
  Int4Plan p;
  p.mt = rows <= 16 ? 1 : rows <= 32 ? 2 : 4;
  p.row_blocks = static_cast<int32_t>((rows + 16 * p.mt - 1) / (16 * p.mt));
  p.col_tiles = static_cast<int32_t>((w.n_blocks + kWarps - 1) / kWarps);
  const int64_t tiles = static_cast<int64_t>(p.col_tiles) * p.row_blocks;
  // Split K only to fill the blocks that fit on the device at once (one wave: a second,
  // partial wave would leave most multiprocessors idle at the end), keeping a few chunks per
  // split so the weight ring has something to run ahead on.
  const int64_t resident = static_cast<int64_t>(ResidentBlocksPerSm(p.mt)) * num_sms;
  int64_t splits = std::clamp<int64_t>(resident / tiles, 1, std::max<int64_t>(1, w.k_chunks / 4));
  if (tiles > kGptqGemvMaxColTiles) splits = 1;
  p.chunks_per_split = static_cast<int32_t>((w.k_chunks + splits - 1) / splits);
  p.splits = static_cast<int32_t>((w.k_chunks + p.chunks_per_split - 1) / p.chunks_per_split);
  PlaceInt4Workspace(w, rows, x_direct, &p);
  return p;
}

void LaunchInt4Matmul(const Int4Args& w, const Int4Plan& p, const void* x, int64_t rows, void* out, DType odt,
                      void* workspace, cudaStream_t stream) {
  auto* base = static_cast<char*>(workspace);
  const auto* xb = static_cast<const __nv_bfloat16*>(x);
  int64_t lda = w.in_features, k_valid = w.in_features;
  if (p.gather) {
    auto* xg = reinterpret_cast<__nv_bfloat16*>(base + p.gather_offset);
    const int64_t total = rows * p.gather_ld;
    const int blocks = static_cast<int>(std::min<int64_t>((total + 255) / 256, 4096));
    GatherKernel<<<blocks, 256, 0, stream>>>(xb, w.in_features, w.perm, rows, p.gather_ld, xg);
    xb = xg;
    lda = k_valid = p.gather_ld;
  }
  auto* counters = reinterpret_cast<unsigned*>(base);
  auto* partial = reinterpret_cast<float*>(base + p.partial_offset);
  if (p.decode) {
    LaunchInt4Decode(w, p, xb, lda, k_valid, rows, out, odt, partial, counters, stream);
    return;
  }
  switch (p.mt) {
    case 1: LaunchMt<1>(w, p, xb, lda, k_valid, rows, out, odt, partial, counters, stream); break;
    case 2: LaunchMt<2>(w, p, xb, lda, k_valid, rows, out, odt, partial, counters, stream); break;
    default: LaunchMt<4>(w, p, xb, lda, k_valid, rows, out, odt, partial, counters, stream); break;
  }
}

void LaunchInt4SiluMulMatmul(const Int4Args& w, const Int4Plan& p, const void* gate_up, int64_t rows, void* out,
                             DType odt, void* workspace, cudaStream_t stream) {
  auto* base = static_cast<char*>(workspace);
  LaunchInt4Decode(w, p, gate_up, 2 * w.in_features, w.in_features, rows, out, odt,
                   reinterpret_cast<float*>(base + p.partial_offset), reinterpret_cast<unsigned*>(base), stream,
                   w.in_features);
}

}  // namespace tessera::cuda
