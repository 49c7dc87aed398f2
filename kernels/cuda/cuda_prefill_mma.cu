// Tensor-core paged causal attention for prefill chunks, head dims 32/64/128
// (FlashAttention-2 style). One CTA per (64 query rows, sequence, kv head); a row is
// (query token, head of the GQA group), as in the CUDA-core kernel, so each K/V tile in
// shared memory serves the whole group. Each of the 4 warps owns 16 rows: S = Q·Kᵀ for a
// 64-key tile with mma.sync, the causal mask and online softmax in registers, then
// O += P·V with P as the next A operand. K/V tiles are double-buffered with cp.async; an
// FP8 cache's tiles are dequantized (codes times their token's scale, rounded to bf16) as
// they are stored to shared memory.
#include <cuda_bf16.h>

#include <cmath>

#include "kernels/cuda/cuda_common.cuh"
#include "kernels/cuda/cuda_launch.h"
#include "kernels/cuda/cuda_mma.cuh"
#include "kernels/cuda/cuda_pdl.h"
#include "kernels/cuda/cuda_prefill_internal.h"

namespace tessera::cuda {
namespace {

constexpr int kWarps = 4;
constexpr int kThreads = kWarps * 32;
constexpr int kRows = 16 * kWarps;  // query rows per CTA
constexpr int kKeys = 64;           // keys per tile
constexpr float kLog2e = 1.4426950408889634f;

template <int D>
struct Shape {
  static constexpr int kRow = D + 8;  // bf16 per shared row (+16 B: ldmatrix conflict-free)
  static constexpr int kKSteps = D / 16;
  static constexpr int kNTiles = D / 8;
  static constexpr int kTileElems = 2 * kKeys * kRow;  // K then V
  static constexpr size_t kSmemBytes = sizeof(__nv_bfloat16) * (kRows * kRow + 2 * kTileElems);
};

// Sixteen E4M3 codes times `scale`, as sixteen bf16 at dst (two 16-byte stores).
__device__ __forceinline__ void DequantE4M3x16(const uint4& codes, float scale, __nv_bfloat16* dst) {
  const uint32_t w[4] = {codes.x, codes.y, codes.z, codes.w};
  uint32_t out[8];
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    uint32_t lo, hi;
    E4M3x4ToF16(w[i], lo, hi);
    const float2 a = __half22float2(*reinterpret_cast<const __half2*>(&lo));
    const float2 b = __half22float2(*reinterpret_cast<const __half2*>(&hi));
    out[2 * i] = PackBf16(a.x * scale, a.y * scale);
    out[2 * i + 1] = PackBf16(b.x * scale, b.y * scale);
  }
  reinterpret_cast<uint4*>(dst)[0] = make_uint4(out[0], out[1], out[2], out[3]);
  reinterpret_cast<uint4*>(dst)[1] = make_uint4(out[4], out[5], out[6], out[7]);
}

template <int D, bool kFp8>
__global__ void __launch_bounds__(kThreads) PrefillMmaKernel(AttentionArgs a) {
  using S = Shape<D>;
  const int q_tile = blockIdx.x, kvh = blockIdx.z;
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int G = a.num_heads / a.num_kv_heads;
  const int tokens_per_tile = kRows / G;
  PdlStart();
  const int seq = a.prefill_seqs != nullptr ? a.prefill_seqs[blockIdx.y] : static_cast<int>(blockIdx.y);
  const int q_begin = a.query_start[seq];
  const int q_len = a.query_start[seq + 1] - q_begin;
  if (q_tile * tokens_per_tile >= q_len || (a.single_token_seqs_elsewhere && q_len == 1)) return;

  extern __shared__ uint4 smem_raw[];
  __nv_bfloat16* qs = reinterpret_cast<__nv_bfloat16*>(smem_raw);
  __nv_bfloat16* tiles = qs + kRows * S::kRow;
  __shared__ int kv_end;

  // Row r of the CTA: token q_tile * tokens_per_tile + r / G, head kvh * G + r % G.
  auto row_token = [&](int r, int* token, int* head) {
    const int tq = q_tile * tokens_per_tile + r / G;
    *token = q_begin + tq;
    *head = kvh * G + r % G;
    return r < tokens_per_tile * G && tq < q_len;
  };
  if (tid == 0) kv_end = 0;
  for (int u = tid; u < kRows * (D / 8); u += kThreads) {
    const int r = u / (D / 8), c = u % (D / 8);
    int token, head;
    const bool valid = row_token(r, &token, &head);
    uint4 v = make_uint4(0, 0, 0, 0);
    if (valid) {
      v = *reinterpret_cast<const uint4*>(static_cast<const __nv_bfloat16*>(a.q) +
                                          static_cast<int64_t>(token) * a.q_stride + head * D + c * 8);
    }
    *reinterpret_cast<uint4*>(qs + r * S::kRow + c * 8) = v;
  }
  // This lane's two rows (lane / 4 and lane / 4 + 8 of the warp's 16) and their positions.
  int pos[2];
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    int token, head;
    pos[i] = row_token(warp * 16 + lane / 4 + 8 * i, &token, &head) ? a.positions[token] : -1;
  }
  __syncthreads();
  if (lane % 4 == 0) atomicMax(&kv_end, max(pos[0], pos[1]) + 1);
  __syncthreads();
  const int keys_end = kv_end;

  uint32_t qa[S::kKSteps][4];
  {
    const int r = warp * 16 + lane % 16, c = (lane / 16) * 8;
#pragma unroll
    for (int kk = 0; kk < S::kKSteps; ++kk) Ldsm4(qa[kk], qs + r * S::kRow + kk * 16 + c);
  }

  const int32_t* table = a.block_tables + static_cast<int64_t>(seq) * a.max_blocks_per_seq;
  const char* kc = static_cast<const char*>(a.k_cache);
  const char* vc = static_cast<const char*>(a.v_cache);
  const int64_t slot_bytes = static_cast<int64_t>(a.num_kv_heads) * D * 2;
  const int bs = a.block_size;
  constexpr int kRowChunks = D / 8, kRowsPerPass = kThreads / kRowChunks;
  auto load_tile = [&](int k0, int stage) {
    __nv_bfloat16* kd = tiles + stage * S::kTileElems;
    __nv_bfloat16* vd = kd + kKeys * S::kRow;
    if constexpr (kFp8) {
      constexpr int kChunks = D / 16;  // 16 codes per chunk
      const int64_t slot_codes = static_cast<int64_t>(a.num_kv_heads) * D;
      for (int u = tid; u < kKeys * kChunks; u += kThreads) {
        const int key = u / kChunks, c = u % kChunks, j = k0 + key;
        uint4 kq = make_uint4(0, 0, 0, 0), vq = kq;
        float ks = 0.0f, vs = 0.0f;
        if (j < keys_end) {
          const int64_t slot = static_cast<int64_t>(table[j / bs]) * bs + j % bs;
          const int64_t off = slot * slot_codes + kvh * D + c * 16;
          kq = *reinterpret_cast<const uint4*>(kc + off);
          vq = *reinterpret_cast<const uint4*>(vc + off);
          ks = a.k_scale[slot * a.num_kv_heads + kvh];
          vs = a.v_scale[slot * a.num_kv_heads + kvh];
        }
        DequantE4M3x16(kq, ks, kd + key * S::kRow + c * 16);
        DequantE4M3x16(vq, vs, vd + key * S::kRow + c * 16);
      }
      return;
    }
    const int c = tid % kRowChunks;
    for (int key = tid / kRowChunks; key < kKeys; key += kRowsPerPass) {
      const int j = k0 + key;
      const bool valid = j < keys_end;
      int64_t off = 0;
      if (valid) off = (static_cast<int64_t>(table[j / bs]) * bs + j % bs) * slot_bytes + (kvh * D + c * 8) * 2;
      CpAsync16(kd + key * S::kRow + c * 8, kc + off, valid);
      CpAsync16(vd + key * S::kRow + c * 8, vc + off, valid);
    }
  };

  const int tq = lane % 4;
  const float qscale = a.scale * kLog2e;
  float o[S::kNTiles][4];
#pragma unroll
  for (int nd = 0; nd < S::kNTiles; ++nd) o[nd][0] = o[nd][1] = o[nd][2] = o[nd][3] = 0.0f;
  float m_r[2] = {-INFINITY, -INFINITY}, l_r[2] = {0.0f, 0.0f};

  const int n_tiles = (keys_end + kKeys - 1) / kKeys;
  if (n_tiles > 0) load_tile(0, 0);
  CpAsyncCommit();
  for (int i = 0; i < n_tiles; ++i) {
    if (i + 1 < n_tiles) load_tile((i + 1) * kKeys, (i + 1) % 2);
    CpAsyncCommit();
    CpAsyncWait<1>();
    __syncthreads();
    const __nv_bfloat16* ks = tiles + (i % 2) * S::kTileElems;
    const __nv_bfloat16* vs = ks + kKeys * S::kRow;
    const int k0 = i * kKeys;

    float s[kKeys / 8][4];
#pragma unroll
    for (int nt = 0; nt < kKeys / 8; ++nt) {
      s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.0f;
#pragma unroll
      for (int kk = 0; kk < S::kKSteps; kk += 2) {
        uint32_t b[4];
        Ldsm4(b, ks + (nt * 8 + lane % 8) * S::kRow + kk * 16 + (lane / 8) * 8);
        Mma(s[nt], qa[kk], b[0], b[1]);
        Mma(s[nt], qa[kk + 1], b[2], b[3]);
      }
    }
    // Causal mask (key j visible to a row at position p when j <= p), then online softmax;
    // a row's 64 scores sit in the 4 lanes of a quad.
    float mx[2] = {m_r[0], m_r[1]};
#pragma unroll
    for (int nt = 0; nt < kKeys / 8; ++nt) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int j = k0 + nt * 8 + 2 * tq + (e & 1);
        s[nt][e] = j <= pos[e >> 1] ? s[nt][e] * qscale : -INFINITY;
        mx[e >> 1] = fmaxf(mx[e >> 1], s[nt][e]);
      }
    }
    float alpha[2];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 1));
      mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 2));
      // A row with no visible key yet (or past its sequence) keeps everything at zero.
      alpha[r] = mx[r] == -INFINITY ? 1.0f : exp2f(m_r[r] - mx[r]);
      m_r[r] = mx[r];
      l_r[r] *= alpha[r];
    }
    uint32_t pa[kKeys / 16][4];
#pragma unroll
    for (int nt = 0; nt < kKeys / 8; ++nt) {
      float p[4];
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const float mrow = mx[e >> 1];
        p[e] = mrow == -INFINITY ? 0.0f : exp2f(s[nt][e] - mrow);
      }
      l_r[0] += p[0] + p[1];
      l_r[1] += p[2] + p[3];
      pa[nt / 2][(nt % 2) * 2] = PackBf16(p[0], p[1]);
      pa[nt / 2][(nt % 2) * 2 + 1] = PackBf16(p[2], p[3]);
    }
#pragma unroll
    for (int nd = 0; nd < S::kNTiles; ++nd) {
      o[nd][0] *= alpha[0];
      o[nd][1] *= alpha[0];
      o[nd][2] *= alpha[1];
      o[nd][3] *= alpha[1];
    }
#pragma unroll
    for (int kk = 0; kk < kKeys / 16; ++kk) {
#pragma unroll
      for (int nd = 0; nd < S::kNTiles; nd += 2) {
        uint32_t b[4];
        Ldsm4T(b, vs + (kk * 16 + lane % 16) * S::kRow + (nd + lane / 16) * 8);
        Mma(o[nd], pa[kk], b[0], b[1]);
        Mma(o[nd + 1], pa[kk], b[2], b[3]);
      }
    }
    __syncthreads();  // the stage is refilled two iterations on
  }
  CpAsyncWait<0>();

#pragma unroll
  for (int r = 0; r < 2; ++r) {
    l_r[r] += __shfl_xor_sync(0xffffffffu, l_r[r], 1);
    l_r[r] += __shfl_xor_sync(0xffffffffu, l_r[r], 2);
  }
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    int token, head;
    if (!row_token(warp * 16 + lane / 4 + 8 * i, &token, &head)) continue;
    const float inv = l_r[i] > 0.0f ? 1.0f / l_r[i] : 0.0f;
    __nv_bfloat16* orow = static_cast<__nv_bfloat16*>(a.out) + static_cast<int64_t>(token) * a.out_stride + head * D;
#pragma unroll
    for (int nd = 0; nd < S::kNTiles; ++nd) {
      *reinterpret_cast<uint32_t*>(orow + nd * 8 + 2 * tq) = PackBf16(o[nd][2 * i] * inv, o[nd][2 * i + 1] * inv);
    }
  }
}

template <int D, bool kFp8>
void LaunchOf(const AttentionArgs& a, cudaStream_t stream) {
  static const cudaError_t attr = cudaFuncSetAttribute(
      PrefillMmaKernel<D, kFp8>, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(Shape<D>::kSmemBytes));
  (void)attr;
  const int tokens_per_tile = kRows / (a.num_heads / a.num_kv_heads);
  const dim3 grid((a.max_query_len + tokens_per_tile - 1) / tokens_per_tile,
                  a.prefill_seqs != nullptr ? a.num_prefill_seqs : a.num_seqs, a.num_kv_heads);
  LaunchPdl(PrefillMmaKernel<D, kFp8>, grid, kThreads, Shape<D>::kSmemBytes, stream, a);
}

template <int D>
void Launch(const AttentionArgs& a, cudaStream_t stream) {
  if (a.kv_fp8) return LaunchOf<D, true>(a, stream);
  LaunchOf<D, false>(a, stream);
}

}  // namespace

bool MmaPrefillSupported(int32_t head_dim) { return head_dim == 32 || head_dim == 64 || head_dim == 128; }

void LaunchMmaPrefill(const AttentionArgs& a, cudaStream_t stream) {
  switch (a.head_dim) {
    case 32: return Launch<32>(a, stream);
    case 64: return Launch<64>(a, stream);
    case 128: return Launch<128>(a, stream);
    default: return;
  }
}

}  // namespace tessera::cuda
