// The K/V formats of the tensor-core decode kernel (cuda_decode_mma.cu). A tile policy
// stages the GQA group's query rows, copies a warp's 16-token sub-tile of K and V from the
// paged cache into a ring stage with cp.async, and runs the sub-tile's two products on it:
// S = Q·Kᵀ (in the cache's units times the keys' scales) and O += P·V.
//
// Bf16Tile: bf16 rows, ldmatrix fragments, bf16 mma.
// Fp8Tile: E4M3 rows and per-token scales. There is no 8-bit ldmatrix before sm_100, so the
// fragments are loaded with plain shared loads from layouts chosen so each lane's bytes are
// contiguous: the products' head dimensions are permuted (the same way for Q and K, and
// undone for O by ODim), which a dot product does not notice.
//  - S: K codes become f16 exactly (cvt.e4m3x2), Q is staged as f16; lane (g, tq) of k-step
//    kk takes dims tq·D/4 + 4kk + {0,1} (mma k 2tq, 2tq+1) and + {2,3} (k 2tq+8, 2tq+9).
//    Each score is then multiplied by its key's scale.
//  - P·V: bf16. A lane needs one dim of four tokens; it reads D/8 bytes of each token's row
//    (output dims n·D/8 + nd for mma column n), pairs the tokens' bytes with prmt and moves
//    the bits into bf16 (values times 2^-120, E4M3HighBytesToBf16Scaled). P carries each
//    token's scale times 2^120, so bf16's range holds both without underflow.
//  Q is converted to f16: query values beyond f16's range (65504) are not supported.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cmath>
#include <cstdint>

#include "kernels/cuda/cuda_common.cuh"
#include "kernels/cuda/cuda_launch.h"
#include "kernels/cuda/cuda_mma.cuh"

namespace tessera::cuda::decode {

constexpr int kSub = 16;   // tokens per warp sub-tile
constexpr int kRows = 16;  // mma rows: the query heads of one kv head (at most 16)

// Copies a sub-tile's K rows, then its V rows, of kHeadBytes bytes per token (this kv
// head's slice of the slot) into shared rows kStride bytes apart. Lane l < 16 holds the
// slot of the sub-tile's token l (-1 past the partition: zeros). Each copy instruction
// covers whole 16-byte-chunked rows, so the warp's requests stay coalesced; the lanes
// copying a token's row take its slot by shuffle.
//
// A slot of kHeldSlot copies nothing: that token's rows are copied later by CopyKvRow (the
// step's own token, which the kernel before this one stores; see IssueRingHead).
constexpr int kHeldSlot = -2;

template <int kHeadBytes, int kStride>
__device__ __forceinline__ void CopyKvRows(char* stage, const AttentionArgs& a, int kvh, int slot, int lane) {
  constexpr int kRowChunks = kHeadBytes / 16, kRowsPerCopy = 32 / kRowChunks;
  const int ld_c = lane % kRowChunks, ld_r = lane / kRowChunks;
  const int64_t slot_bytes = static_cast<int64_t>(a.num_kv_heads) * kHeadBytes;
  const int64_t col_bytes = static_cast<int64_t>(kvh) * kHeadBytes + ld_c * 16;
  const char* kc = static_cast<const char*>(a.k_cache);
  const char* vc = static_cast<const char*>(a.v_cache);
  char* kd = stage + ld_c * 16;
#pragma unroll
  for (int r = 0; r < kSub; r += kRowsPerCopy) {
    const int tok = r + ld_r;
    const int s = __shfl_sync(0xffffffffu, slot, tok);
    const int64_t off = s >= 0 ? static_cast<int64_t>(s) * slot_bytes + col_bytes : 0;
    // Predicated, not branched: a branch around the copies (taken by the held token's lanes
    // alone) cost 7% at batch 256 of 32 kv heads over 128 tokens on the H100.
    CpAsync16If(kd + tok * kStride, kc + off, s >= 0, s != kHeldSlot);
    CpAsync16If(kd + (kSub + tok) * kStride, vc + off, s >= 0, s != kHeldSlot);
  }
}

// Row `tok` of a sub-tile (its K row, then its V row) from cache slot `slot`, as CopyKvRows
// lays it out: one 16-byte copy per lane (2 * kHeadBytes / 16 <= 32 chunks).
template <int kHeadBytes, int kStride>
__device__ __forceinline__ void CopyKvRow(char* stage, const AttentionArgs& a, int kvh, int slot, int tok, int lane) {
  constexpr int kRowChunks = kHeadBytes / 16;
  static_assert(2 * kRowChunks <= 32, "one chunk per lane");
  if (lane >= 2 * kRowChunks) return;
  const bool is_v = lane >= kRowChunks;
  const int c = lane % kRowChunks;
  const int64_t off = (static_cast<int64_t>(slot) * a.num_kv_heads + kvh) * kHeadBytes + c * 16;
  const char* src = static_cast<const char*>(is_v ? a.v_cache : a.k_cache) + off;
  CpAsync16(stage + ((is_v ? kSub : 0) + tok) * kStride + c * 16, src, true);
}

template <int D>
struct Bf16Tile {
  static constexpr int kD = D;
  static constexpr int kKSteps = D / 16;  // of S = Q·Kᵀ
  static constexpr int kNTiles = D / 8;   // of O
  static_assert(kKSteps % 2 == 0 && kNTiles % 2 == 0, "fragments are loaded in pairs");
  static constexpr int kRow = D + 8;  // bf16 per shared row: +16 B keeps ldmatrix conflict-free
  static constexpr int kStageBytes = 2 * kSub * kRow * 2;  // K rows, then V rows
  static constexpr int kQBytes = kRows * kRow * 2;
  // CTAs per multiprocessor the registers must allow: as many as the shared memory does.
  static constexpr int kMinBlocks = D == 128 ? 2 : D == 64 ? 3 : 5;

  // The group's G query rows of q (bf16, contiguous), zeros past the group.
  __device__ static void StageQ(const __nv_bfloat16* q, int G, char* qs, int tid, int threads) {
    __nv_bfloat16* dst = reinterpret_cast<__nv_bfloat16*>(qs);
    for (int u = tid; u < kRows * (D / 8); u += threads) {
      const int r = u / (D / 8), c = u % (D / 8);
      const uint4 v = r < G ? *reinterpret_cast<const uint4*>(q + r * D + c * 8) : make_uint4(0, 0, 0, 0);
      *reinterpret_cast<uint4*>(dst + r * kRow + c * 8) = v;
    }
  }

  // Q as the A operand of every k-step: lanes 0-15 address rows 0-15, lanes 16-31 the same
  // rows 8 columns on, so the four 8x8 matrices land as a0..a3.
  __device__ static void LoadQ(uint32_t (&qa)[kKSteps][4], const char* qs, int lane) {
    const __nv_bfloat16* src = reinterpret_cast<const __nv_bfloat16*>(qs);
    const int r = lane % 16, c = (lane / 16) * 8;
#pragma unroll
    for (int kk = 0; kk < kKSteps; ++kk) Ldsm4(qa[kk], src + r * kRow + kk * 16 + c);
  }

  __device__ static void Copy(char* stage, const AttentionArgs& a, int kvh, int slot, int lane) {
    CopyKvRows<D * 2, kRow * 2>(stage, a, kvh, slot, lane);
  }
  __device__ static void CopyRow(char* stage, const AttentionArgs& a, int kvh, int slot, int tok, int lane) {
    CopyKvRow<D * 2, kRow * 2>(stage, a, kvh, slot, tok, lane);
  }

  // S = Q·Kᵀ: two n-tiles of 8 tokens; one ldmatrix.x4 gives two k-steps' B fragments.
  __device__ static void Scores(float (&s)[2][4], const uint32_t (&qa)[kKSteps][4], const char* stage, int lane) {
    const __nv_bfloat16* ks = reinterpret_cast<const __nv_bfloat16*>(stage);
#pragma unroll
    for (int nt = 0; nt < 2; ++nt) {
      s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.0f;
#pragma unroll
      for (int kk = 0; kk < kKSteps; kk += 2) {
        uint32_t b[4];
        Ldsm4(b, ks + (nt * 8 + lane % 8) * kRow + kk * 16 + (lane / 8) * 8);
        Mma(s[nt], qa[kk], b[0], b[1]);
        Mma(s[nt], qa[kk + 1], b[2], b[3]);
      }
    }
  }

  // O += P·V with P (16 heads x 16 tokens, from the S layout) as the A operand; V rows
  // [token][dim] transposed by ldmatrix into B fragments, two n-tiles per ldmatrix.x4.
  __device__ static void Pv(float (&o)[kNTiles][4], const float (&p)[2][4], const char* stage, int lane) {
    uint32_t pa[4];
#pragma unroll
    for (int nt = 0; nt < 2; ++nt) {
      pa[nt * 2] = PackBf16(p[nt][0], p[nt][1]);
      pa[nt * 2 + 1] = PackBf16(p[nt][2], p[nt][3]);
    }
    const __nv_bfloat16* vs = reinterpret_cast<const __nv_bfloat16*>(stage) + kSub * kRow;
#pragma unroll
    for (int nd = 0; nd < kNTiles; nd += 2) {
      uint32_t b[4];
      Ldsm4T(b, vs + (lane % 16) * kRow + (nd + lane / 16) * 8);
      Mma(o[nd], pa, b[0], b[1]);
      Mma(o[nd + 1], pa, b[2], b[3]);
    }
  }

  // The head dimension of O's n-tile nd, column n.
  __device__ static int ODim(int nd, int n) { return nd * 8 + n; }
};

template <int D>
struct Fp8Tile {
  static constexpr int kD = D;
  static constexpr int kKSteps = D / 16;
  static constexpr int kNTiles = D / 8;
  static constexpr int kRowBytes = D + 16;  // +16: the fragment loads below are conflict-free at D = 128
  static constexpr int kScaleOffset = 2 * kSub * kRowBytes;  // K scales [16], then V scales [16]
  static constexpr int kStageBytes = kScaleOffset + 2 * kSub * 4;
  static constexpr int kQRow = D + 8;  // f16 per staged query row
  static constexpr int kQBytes = kRows * kQRow * 2;
  static constexpr int kKBytes = D / 4;  // per lane and token in S
  static constexpr int kVBytes = D / 8;  // per lane and token in P·V
  static constexpr int kMinBlocks = D == 128 ? 3 : D == 64 ? 4 : 6;  // as the shared memory allows
  static_assert(D == 32 || D == 64 || D == 128, "head dims of the FP8 tile");

  __device__ static void StageQ(const __nv_bfloat16* q, int G, char* qs, int tid, int threads) {
    __half* dst = reinterpret_cast<__half*>(qs);
    for (int u = tid; u < kRows * (D / 8); u += threads) {
      const int r = u / (D / 8), c = u % (D / 8);
      uint4 v = make_uint4(0, 0, 0, 0);
      if (r < G) {
        float f[8];
        Bf16x8ToFloat(*reinterpret_cast<const uint4*>(q + r * D + c * 8), f);
        v = make_uint4(PackF16(f[0], f[1]), PackF16(f[2], f[3]), PackF16(f[4], f[5]), PackF16(f[6], f[7]));
      }
      *reinterpret_cast<uint4*>(dst + r * kQRow + c * 8) = v;
    }
  }

  __device__ static void LoadQ(uint32_t (&qa)[kKSteps][4], const char* qs, int lane) {
    const __half* src = reinterpret_cast<const __half*>(qs);
    const int g = lane / 4, tq = lane % 4;
    const __half* r0 = src + g * kQRow + tq * (D / 4);
    const __half* r1 = r0 + 8 * kQRow;
#pragma unroll
    for (int kk = 0; kk < kKSteps; ++kk) {
      qa[kk][0] = *reinterpret_cast<const uint32_t*>(r0 + 4 * kk);
      qa[kk][1] = *reinterpret_cast<const uint32_t*>(r1 + 4 * kk);
      qa[kk][2] = *reinterpret_cast<const uint32_t*>(r0 + 4 * kk + 2);
      qa[kk][3] = *reinterpret_cast<const uint32_t*>(r1 + 4 * kk + 2);
    }
  }

  // The rows as Bf16Tile::Copy; lanes 0-15 also copy token l's K scale and lanes 16-31
  // token (l - 16)'s V scale.
  __device__ static void Copy(char* stage, const AttentionArgs& a, int kvh, int slot, int lane) {
    CopyKvRows<D, kRowBytes>(stage, a, kvh, slot, lane);
    const int s = __shfl_sync(0xffffffffu, slot, lane % kSub);
    const float* scales = lane < kSub ? a.k_scale : a.v_scale;
    const int64_t idx = s >= 0 ? static_cast<int64_t>(s) * a.num_kv_heads + kvh : 0;
    CpAsync4If(stage + kScaleOffset + lane * 4, scales + idx, s >= 0, s != kHeldSlot);
  }
  // Row `tok` and its two scales (lanes 0 and 1).
  __device__ static void CopyRow(char* stage, const AttentionArgs& a, int kvh, int slot, int tok, int lane) {
    CopyKvRow<D, kRowBytes>(stage, a, kvh, slot, tok, lane);
    if (lane < 2) {
      const float* scales = lane == 0 ? a.k_scale : a.v_scale;
      CpAsync4(stage + kScaleOffset + (lane * kSub + tok) * 4, scales + static_cast<int64_t>(slot) * a.num_kv_heads + kvh,
               true);
    }
  }

  template <int N>
  __device__ static void LoadBytes(uint32_t (&w)[N / 4], const char* p) {
    if constexpr (N % 16 == 0) {
#pragma unroll
      for (int i = 0; i < N / 16; ++i) {
        const uint4 v = *reinterpret_cast<const uint4*>(p + 16 * i);
        w[4 * i] = v.x;
        w[4 * i + 1] = v.y;
        w[4 * i + 2] = v.z;
        w[4 * i + 3] = v.w;
      }
    } else if constexpr (N == 8) {
      const uint2 v = *reinterpret_cast<const uint2*>(p);
      w[0] = v.x;
      w[1] = v.y;
    } else {
      static_assert(N == 4, "row slices of 4, 8 or 16k bytes");
      w[0] = *reinterpret_cast<const uint32_t*>(p);
    }
  }

  __device__ static void Scores(float (&s)[2][4], const uint32_t (&qa)[kKSteps][4], const char* stage, int lane) {
    const int g = lane / 4, tq = lane % 4;
#pragma unroll
    for (int nt = 0; nt < 2; ++nt) {
      uint32_t w[kKSteps];  // word kk: this lane's four dims of k-step kk
      LoadBytes<kKBytes>(w, stage + (nt * 8 + g) * kRowBytes + tq * kKBytes);
      s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.0f;
#pragma unroll
      for (int kk = 0; kk < kKSteps; ++kk) {
        uint32_t b0, b1;
        E4M3x4ToF16(w[kk], b0, b1);
        MmaF16(s[nt], qa[kk], b0, b1);
      }
    }
    // Score (row, token nt·8 + 2tq + e%2) times that key's scale.
    const float* ks = reinterpret_cast<const float*>(stage + kScaleOffset);
#pragma unroll
    for (int nt = 0; nt < 2; ++nt) {
      const float2 k = *reinterpret_cast<const float2*>(ks + nt * 8 + 2 * tq);
      s[nt][0] *= k.x;
      s[nt][1] *= k.y;
      s[nt][2] *= k.x;
      s[nt][3] *= k.y;
    }
  }

  __device__ static void Pv(float (&o)[kNTiles][4], const float (&p)[2][4], const char* stage, int lane) {
    const int g = lane / 4, tq = lane % 4;
    constexpr float kUnscale = 1.329227995784916e36f;  // 2^120: the V bits' bias
    const float* vsc = reinterpret_cast<const float*>(stage + kScaleOffset) + kSub;
    uint32_t pa[4];
#pragma unroll
    for (int nt = 0; nt < 2; ++nt) {
      const float2 v = *reinterpret_cast<const float2*>(vsc + nt * 8 + 2 * tq);
      const float w0 = v.x * kUnscale, w1 = v.y * kUnscale;
      pa[nt * 2] = PackBf16(p[nt][0] * w0, p[nt][1] * w1);
      pa[nt * 2 + 1] = PackBf16(p[nt][2] * w0, p[nt][3] * w1);
    }
    // Rows 2tq, 2tq+1 (b0) and 2tq+8, 2tq+9 (b1); bytes n·D/8 .. of each, n = g.
    constexpr int kWords = kVBytes / 4;
    const char* v0 = stage + (kSub + 2 * tq) * kRowBytes + g * kVBytes;
    uint32_t r0[kWords], r1[kWords], r8[kWords], r9[kWords];
    LoadBytes<kVBytes>(r0, v0);
    LoadBytes<kVBytes>(r1, v0 + kRowBytes);
    LoadBytes<kVBytes>(r8, v0 + 8 * kRowBytes);
    LoadBytes<kVBytes>(r9, v0 + 9 * kRowBytes);
#pragma unroll
    for (int wi = 0; wi < kWords; ++wi) {
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        // Byte i of the two tokens' words into bytes 1 and 3 (bytes 0 and 2 are masked off).
        const uint32_t sel = (4 + i) * 0x1100u + i * 0x11u;
        const uint32_t b0 = E4M3HighBytesToBf16Scaled(__byte_perm(r0[wi], r1[wi], sel));
        const uint32_t b1 = E4M3HighBytesToBf16Scaled(__byte_perm(r8[wi], r9[wi], sel));
        Mma(o[4 * wi + i], pa, b0, b1);
      }
    }
  }

  __device__ static int ODim(int nd, int n) { return n * (D / 8) + nd; }
};

// A warp's work in the decode kernel, with the query heads as the mma's 16 rows (any GQA
// group up to 16; rows past the group are zero): per 16-token sub-tile S = Q·Kᵀ, an online
// softmax in registers, then O += P·V with P kept in registers as the next A operand
// (FlashAttention-2's trick). Lane (g, tq) holds query rows g and g + 8.
template <typename Tile>
struct HeadRows {
  static constexpr int kD = Tile::kD;
  static constexpr int kMaxGroup = kRows;
  static constexpr int kStages = 3;  // sub-tiles in a warp's ring
  static constexpr int kMinBlocks = Tile::kMinBlocks;
  static constexpr int kStageBytes = Tile::kStageBytes;
  static constexpr int kQBytes = Tile::kQBytes;

  struct State {
    uint32_t qa[Tile::kKSteps][4];
    float o[Tile::kNTiles][4];
    float m[2];  // rows g and g + 8, in log2 units
    float l[2];  // this lane's share of the row sums
  };

  __device__ static void StageQ(const __nv_bfloat16* q, int G, char* qs, int tid, int threads) {
    Tile::StageQ(q, G, qs, tid, threads);
  }
  __device__ static void Copy(char* stage, const AttentionArgs& a, int kvh, int slot, int lane) {
    Tile::Copy(stage, a, kvh, slot, lane);
  }
  __device__ static void CopyRow(char* stage, const AttentionArgs& a, int kvh, int slot, int tok, int lane) {
    Tile::CopyRow(stage, a, kvh, slot, tok, lane);
  }

  __device__ static void Init(State& st, const char* qs, int lane) {
    Tile::LoadQ(st.qa, qs, lane);
#pragma unroll
    for (int nd = 0; nd < Tile::kNTiles; ++nd) st.o[nd][0] = st.o[nd][1] = st.o[nd][2] = st.o[nd][3] = 0.0f;
    st.m[0] = st.m[1] = -INFINITY;
    st.l[0] = st.l[1] = 0.0f;
  }

  // One sub-tile of tokens tok0 .. tok0 + 15 (those at or past `end` are masked).
  __device__ static void Step(State& st, const char* stage, int tok0, int end, float qscale, int lane) {
    const int tq = lane % 4;
    float s[2][4];
    Tile::Scores(s, st.qa, stage, lane);
    // Online softmax: a row's 16 scores sit in the 4 lanes of a quad.
    float mx[2] = {st.m[0], st.m[1]};
#pragma unroll
    for (int nt = 0; nt < 2; ++nt) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int j = tok0 + nt * 8 + 2 * tq + (e & 1);
        s[nt][e] = j < end ? s[nt][e] * qscale : -INFINITY;
        mx[e >> 1] = fmaxf(mx[e >> 1], s[nt][e]);
      }
    }
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 1));
      mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 2));
    }
    const float alpha0 = exp2f(st.m[0] - mx[0]), alpha1 = exp2f(st.m[1] - mx[1]);
    st.m[0] = mx[0];
    st.m[1] = mx[1];
    float p[2][4];  // P (16 heads x 16 tokens) in the layout of S
#pragma unroll
    for (int nt = 0; nt < 2; ++nt) {
      p[nt][0] = exp2f(s[nt][0] - mx[0]);
      p[nt][1] = exp2f(s[nt][1] - mx[0]);
      p[nt][2] = exp2f(s[nt][2] - mx[1]);
      p[nt][3] = exp2f(s[nt][3] - mx[1]);
      st.l[0] = nt == 0 ? st.l[0] * alpha0 + p[nt][0] + p[nt][1] : st.l[0] + p[nt][0] + p[nt][1];
      st.l[1] = nt == 0 ? st.l[1] * alpha1 + p[nt][2] + p[nt][3] : st.l[1] + p[nt][2] + p[nt][3];
    }
    if (__any_sync(0xffffffffu, alpha0 != 1.0f || alpha1 != 1.0f)) {
#pragma unroll
      for (int nd = 0; nd < Tile::kNTiles; ++nd) {
        st.o[nd][0] *= alpha0;
        st.o[nd][1] *= alpha0;
        st.o[nd][2] *= alpha1;
        st.o[nd][3] *= alpha1;
      }
    }
    Tile::Pv(st.o, p, stage, lane);
  }

  // The warp's unnormalised O rows, maxima and sums into its merge slices: mo [row][stride],
  // mm [row], ml [row].
  template <int kStride>
  __device__ static void WriteMerge(State& st, float* mo, float* mm, float* ml, int lane) {
    const int g = lane / 4, tq = lane % 4;
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      st.l[r] += __shfl_xor_sync(0xffffffffu, st.l[r], 1);
      st.l[r] += __shfl_xor_sync(0xffffffffu, st.l[r], 2);
    }
    float* r0 = mo + g * kStride;
    float* r1 = r0 + 8 * kStride;
#pragma unroll
    for (int nd = 0; nd < Tile::kNTiles; ++nd) {
      r0[Tile::ODim(nd, 2 * tq)] = st.o[nd][0];
      r0[Tile::ODim(nd, 2 * tq + 1)] = st.o[nd][1];
      r1[Tile::ODim(nd, 2 * tq)] = st.o[nd][2];
      r1[Tile::ODim(nd, 2 * tq + 1)] = st.o[nd][3];
    }
    if (tq == 0) {
      mm[g] = st.m[0];
      mm[g + 8] = st.m[1];
      ml[g] = st.l[0];
      ml[g + 8] = st.l[1];
    }
  }
};

}  // namespace tessera::cuda::decode
