// A warp's work in the decode kernel over an FP8 cache with the products transposed: the
// 16 tokens of a sub-tile are the mma's rows and the GQA group's query heads (up to 8) its
// columns, Sᵀ = K·Qᵀ and Oᵀ += Vᵀ·Pᵀ. Against HeadRows (queries as 16 rows) this halves
// the mma count and the registers holding Q and O when groups are small (Llama-2-7B's is 1),
// so more CTAs fit on a multiprocessor: short contexts, where each CTA's fixed latencies
// (metadata, first loads, merge) are a large part of its life, need that occupancy.
//
// Same ring stage, Q staging and head-dim permutation as Fp8Tile (cuda_decode_tiles.cuh):
//  - Sᵀ: lane (g, tq) reads tokens g and g + 8, bytes tq·D/4 + 4kk ..; the f16 codes are
//    the A fragment as they are the B fragment in Fp8Tile; Q is B: two words per k-step.
//  - Pᵀ as B: the Sᵀ accumulator (token rows, query columns) packed to bf16 and transposed
//    in registers by movmatrix, two 8x8 halves.
//  - Vᵀ as A: lane g reads D/8 bytes of tokens 2tq, 2tq+1, 2tq+8, 2tq+9 (as Fp8Tile::Pv);
//    m-tile mt's rows g and g + 8 are that slice's bytes 2mt and 2mt + 1, i.e. head dim
//    (r % 8)·D/8 + 2mt + r / 8 for row r.
#pragma once

#include <cuda_bf16.h>

#include <cmath>
#include <cstdint>

#include "kernels/cuda/cuda_decode_tiles.cuh"
#include "kernels/cuda/cuda_mma.cuh"

namespace tessera::cuda::decode {

// The 8x8 b16 matrix whose row lane/4 holds columns 2(lane%4), +1 in each lane's word,
// transposed across the warp (same fragment layout).
__device__ __forceinline__ uint32_t Transpose8x8(uint32_t x) {
  uint32_t y;
  asm volatile("movmatrix.sync.aligned.m8n8.trans.b16 %0, %1;\n" : "=r"(y) : "r"(x));
  return y;
}

template <int D, int kRing>
struct Fp8TokenRows {
  using Tile = Fp8Tile<D>;
  static constexpr int kD = D;
  static constexpr int kMaxGroup = 8;
  static constexpr int kStages = kRing;
  static constexpr int kMinBlocks = kRing == 2 ? 4 : 3;  // as the shared memory allows
  static constexpr int kStageBytes = Tile::kStageBytes;
  static constexpr int kQBytes = Tile::kQBytes;
  static constexpr int kKSteps = D / 16;  // of Sᵀ
  static constexpr int kMTiles = D / 16;  // of Oᵀ
  static constexpr int kVWords = Tile::kVBytes / 4;

  struct State {
    uint32_t qb[kKSteps][2];
    float o[kMTiles][4];  // rows: dims of m-tile mt (g, g + 8); columns: queries 2tq, 2tq + 1
    float m[2];           // queries 2tq and 2tq + 1, in log2 units
    float l[2];           // this lane's share of their sums
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
    const __half* r = reinterpret_cast<const __half*>(qs) + (lane / 4) * Tile::kQRow + (lane % 4) * (D / 4);
#pragma unroll
    for (int kk = 0; kk < kKSteps; ++kk) {
      st.qb[kk][0] = *reinterpret_cast<const uint32_t*>(r + 4 * kk);
      st.qb[kk][1] = *reinterpret_cast<const uint32_t*>(r + 4 * kk + 2);
    }
#pragma unroll
    for (int mt = 0; mt < kMTiles; ++mt) st.o[mt][0] = st.o[mt][1] = st.o[mt][2] = st.o[mt][3] = 0.0f;
    st.m[0] = st.m[1] = -INFINITY;
    st.l[0] = st.l[1] = 0.0f;
  }

  __device__ static void Step(State& st, const char* stage, int tok0, int end, float qscale, int lane) {
    const int g = lane / 4, tq = lane % 4;
    // Sᵀ in two accumulators (even and odd k-steps) to halve the mma dependency chain.
    float s[4] = {0.0f, 0.0f, 0.0f, 0.0f}, s2[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    {
      uint32_t w0[kKSteps], w8[kKSteps];
      Tile::template LoadBytes<Tile::kKBytes>(w0, stage + g * Tile::kRowBytes + tq * Tile::kKBytes);
      Tile::template LoadBytes<Tile::kKBytes>(w8, stage + (g + 8) * Tile::kRowBytes + tq * Tile::kKBytes);
#pragma unroll
      for (int kk = 0; kk < kKSteps; ++kk) {
        uint32_t a[4];
        E4M3x4ToF16(w0[kk], a[0], a[2]);
        E4M3x4ToF16(w8[kk], a[1], a[3]);
        MmaF16(kk % 2 ? s2 : s, a, st.qb[kk][0], st.qb[kk][1]);
      }
    }
    const float* ks = reinterpret_cast<const float*>(stage + Tile::kScaleOffset);
    const float* vs = ks + kSub;
    const float k0 = ks[g] * qscale, k8 = ks[g + 8] * qscale;
    const bool in0 = tok0 + g < end, in8 = tok0 + g + 8 < end;
    s[0] = in0 ? (s[0] + s2[0]) * k0 : -INFINITY;
    s[1] = in0 ? (s[1] + s2[1]) * k0 : -INFINITY;
    s[2] = in8 ? (s[2] + s2[2]) * k8 : -INFINITY;
    s[3] = in8 ? (s[3] + s2[3]) * k8 : -INFINITY;

    // Online softmax per query column: its 16 scores sit in the 8 lanes of one tq.
    float mx0 = fmaxf(st.m[0], fmaxf(s[0], s[2])), mx1 = fmaxf(st.m[1], fmaxf(s[1], s[3]));
#pragma unroll
    for (int x = 4; x < 32; x *= 2) {
      mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, x));
      mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, x));
    }
    const float alpha0 = exp2f(st.m[0] - mx0), alpha1 = exp2f(st.m[1] - mx1);
    st.m[0] = mx0;
    st.m[1] = mx1;
    const float p0 = exp2f(s[0] - mx0), p1 = exp2f(s[1] - mx1), p2 = exp2f(s[2] - mx0), p3 = exp2f(s[3] - mx1);
    st.l[0] = st.l[0] * alpha0 + p0 + p2;
    st.l[1] = st.l[1] * alpha1 + p1 + p3;
    if (__any_sync(0xffffffffu, alpha0 != 1.0f || alpha1 != 1.0f)) {
#pragma unroll
      for (int mt = 0; mt < kMTiles; ++mt) {
        st.o[mt][0] *= alpha0;
        st.o[mt][1] *= alpha1;
        st.o[mt][2] *= alpha0;
        st.o[mt][3] *= alpha1;
      }
    }

    // Pᵀ (tokens x queries) with each token's V scale times 2^120 (the V bits' bias).
    constexpr float kUnscale = 1.329227995784916e36f;
    const float v0 = vs[g] * kUnscale, v8 = vs[g + 8] * kUnscale;
    const uint32_t b0 = Transpose8x8(PackBf16(p0 * v0, p1 * v0));
    const uint32_t b1 = Transpose8x8(PackBf16(p2 * v8, p3 * v8));

    const char* vrow = stage + (kSub + 2 * tq) * Tile::kRowBytes + g * Tile::kVBytes;
    uint32_t r0[kVWords], r1[kVWords], r8[kVWords], r9[kVWords];
    Tile::template LoadBytes<Tile::kVBytes>(r0, vrow);
    Tile::template LoadBytes<Tile::kVBytes>(r1, vrow + Tile::kRowBytes);
    Tile::template LoadBytes<Tile::kVBytes>(r8, vrow + 8 * Tile::kRowBytes);
    Tile::template LoadBytes<Tile::kVBytes>(r9, vrow + 9 * Tile::kRowBytes);
#pragma unroll
    for (int mt = 0; mt < kMTiles; ++mt) {
      const int wi = mt / 2, i = (mt % 2) * 2;  // bytes 2mt and 2mt + 1 of the slice
      // Byte i (then i + 1) of two tokens' words into bytes 1 and 3.
      const uint32_t sel = (4 + i) * 0x1100u + i * 0x11u, sel1 = (5 + i) * 0x1100u + (i + 1) * 0x11u;
      uint32_t a[4];
      a[0] = E4M3HighBytesToBf16Scaled(__byte_perm(r0[wi], r1[wi], sel));
      a[1] = E4M3HighBytesToBf16Scaled(__byte_perm(r0[wi], r1[wi], sel1));
      a[2] = E4M3HighBytesToBf16Scaled(__byte_perm(r8[wi], r9[wi], sel));
      a[3] = E4M3HighBytesToBf16Scaled(__byte_perm(r8[wi], r9[wi], sel1));
      Mma(st.o[mt], a, b0, b1);
    }
  }

  template <int kStride>
  __device__ static void WriteMerge(State& st, float* mo, float* mm, float* ml, int lane) {
    const int g = lane / 4, tq = lane % 4;
#pragma unroll
    for (int x = 4; x < 32; x *= 2) {
      st.l[0] += __shfl_xor_sync(0xffffffffu, st.l[0], x);
      st.l[1] += __shfl_xor_sync(0xffffffffu, st.l[1], x);
    }
    float* q0 = mo + 2 * tq * kStride;
    float* q1 = q0 + kStride;
#pragma unroll
    for (int mt = 0; mt < kMTiles; ++mt) {
      const int d0 = g * (D / 8) + 2 * mt;  // row g; row g + 8 is the next dim
      q0[d0] = st.o[mt][0];
      q1[d0] = st.o[mt][1];
      q0[d0 + 1] = st.o[mt][2];
      q1[d0 + 1] = st.o[mt][3];
    }
    if (g == 0) {
      mm[2 * tq] = st.m[0];
      mm[2 * tq + 1] = st.m[1];
      ml[2 * tq] = st.l[0];
      ml[2 * tq + 1] = st.l[1];
    }
  }
};

}  // namespace tessera::cuda::decode
