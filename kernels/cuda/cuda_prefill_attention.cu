// Paged causal attention for batches with prefill chunks (decodes may be mixed in) on CUDA
// cores, for the head dims the tensor-core kernel (cuda_prefill_mma.cu) does not take:
// FlashAttention-style tiles over the block table with an online softmax in f32.
// One CTA per (64 query rows, sequence, kv head); a row is (query token, head of the
// GQA group), so the K/V tiles in shared memory serve the whole group.
#include <cuda_bf16.h>

#include <cmath>

#include "kernels/cuda/cuda_common.cuh"
#include "kernels/cuda/cuda_launch.h"
#include "kernels/cuda/cuda_pdl.h"
#include "kernels/cuda/cuda_prefill_internal.h"

namespace tessera::cuda {
namespace {

constexpr int kRows = 64;
constexpr int kKeys = 32;  // keys per tile
constexpr float kLog2e = 1.4426950408889634f;

template <int D>
struct PrefillShape {
  static constexpr int kChunks = D / 8;
  static constexpr int kTpr = D < 16 ? 1 : (D <= 128 ? 2 : 4);  // threads per query row
  static constexpr int kThreads = kRows * kTpr;
  static constexpr int kSlice = D / kTpr;  // output features per thread (a multiple of 8)
  static constexpr int kQStride = D + 4;   // floats; the pad keeps row reads conflict-free
  static constexpr int kKvRowBytes = D * 2 + 16;
  static constexpr int kSStride = kKeys + 1;
  static constexpr size_t kSmemBytes = sizeof(float) * (kRows * kQStride + kRows * kSStride) +
                                       2 * static_cast<size_t>(kKeys) * kKvRowBytes;
};

template <int D>
__global__ void __launch_bounds__(PrefillShape<D>::kThreads) PrefillKernel(AttentionArgs a) {
  using S = PrefillShape<D>;
  const int q_tile = blockIdx.x, kvh = blockIdx.z;
  const int tid = threadIdx.x;
  const int G = a.num_heads / a.num_kv_heads;
  const int tokens_per_tile = kRows / G;
  PdlStart();
  const int seq = a.prefill_seqs != nullptr ? a.prefill_seqs[blockIdx.y] : static_cast<int>(blockIdx.y);
  const int q_begin = a.query_start[seq];
  const int q_len = a.query_start[seq + 1] - q_begin;
  if (q_tile * tokens_per_tile >= q_len || (a.single_token_seqs_elsewhere && q_len == 1)) return;

  extern __shared__ uint4 smem_raw[];
  float* qs = reinterpret_cast<float*>(smem_raw);
  float* ss = qs + kRows * S::kQStride;
  char* ks = reinterpret_cast<char*>(ss + kRows * S::kSStride);
  char* vs = ks + kKeys * S::kKvRowBytes;
  __shared__ int kv_end;

  const int r = tid / S::kTpr, part = tid % S::kTpr;
  const int tq = q_tile * tokens_per_tile + r / G;
  const int g = r % G;
  const bool row_valid = r < tokens_per_tile * G && tq < q_len;
  const int token = q_begin + tq;
  const int h = kvh * G + g;
  const int pos = row_valid ? a.positions[token] : -1;

  if (tid == 0) kv_end = 0;
  // Each thread stages its slice of the row's q (pre-scaled for a base-2 softmax).
  const __nv_bfloat16* qrow = static_cast<const __nv_bfloat16*>(a.q) + static_cast<int64_t>(token) * a.q_stride + h * D;
  for (int d = part * S::kSlice; d < (part + 1) * S::kSlice; ++d) {
    qs[r * S::kQStride + d] = row_valid ? __bfloat162float(qrow[d]) * a.scale * kLog2e : 0.0f;
  }
  __syncthreads();
  if (part == 0 && row_valid) atomicMax(&kv_end, pos + 1);
  __syncthreads();
  const int keys_end = kv_end;

  const int32_t* table = a.block_tables + static_cast<int64_t>(seq) * a.max_blocks_per_seq;
  const char* kc = static_cast<const char*>(a.k_cache);
  const char* vc = static_cast<const char*>(a.v_cache);
  const int64_t slot_bytes = static_cast<int64_t>(a.num_kv_heads) * D * 2;
  const int bs = a.block_size;

  float acc[S::kSlice];
#pragma unroll
  for (int i = 0; i < S::kSlice; ++i) acc[i] = 0.0f;
  float m = -INFINITY, l = 0.0f;
  float* srow = ss + r * S::kSStride;
  const float* qrow_s = qs + r * S::kQStride;

  for (int k0 = 0; k0 < keys_end; k0 += kKeys) {
    for (int idx = tid; idx < kKeys * S::kChunks; idx += S::kThreads) {
      const int key = idx / S::kChunks, c = idx % S::kChunks;
      const int j = k0 + key;
      const bool valid = j < keys_end;
      int64_t off = 0;
      if (valid) off = (static_cast<int64_t>(table[j / bs]) * bs + j % bs) * slot_bytes + (kvh * D + c * 8) * 2;
      CpAsync16(ks + key * S::kKvRowBytes + c * 16, kc + off, valid);
      CpAsync16(vs + key * S::kKvRowBytes + c * 16, vc + off, valid);
    }
    CpAsyncCommit();
    CpAsyncWait<0>();
    __syncthreads();

    // Scores of this row's keys part, part + kTpr, ...; masked keys get -inf.
    float tile_max = -INFINITY;
    for (int key = part; key < kKeys; key += S::kTpr) {
      float dot = 0.0f;
#pragma unroll 4
      for (int c = 0; c < S::kChunks; ++c) {
        float kf[8];
        Bf16x8ToFloat(*reinterpret_cast<const uint4*>(ks + key * S::kKvRowBytes + c * 16), kf);
        const float4 q0 = *reinterpret_cast<const float4*>(qrow_s + c * 8);
        const float4 q1 = *reinterpret_cast<const float4*>(qrow_s + c * 8 + 4);
        dot += q0.x * kf[0] + q0.y * kf[1] + q0.z * kf[2] + q0.w * kf[3] + q1.x * kf[4] + q1.y * kf[5] +
               q1.z * kf[6] + q1.w * kf[7];
      }
      const float s = k0 + key <= pos ? dot : -INFINITY;
      srow[key] = s;
      tile_max = fmaxf(tile_max, s);
    }
#pragma unroll
    for (int o = 1; o < S::kTpr; o <<= 1) tile_max = fmaxf(tile_max, __shfl_xor_sync(0xffffffffu, tile_max, o));
    const float m_new = fmaxf(m, tile_max);
    // A row with no visible key yet keeps everything at zero.
    const float alpha = m_new == -INFINITY ? 1.0f : exp2f(m - m_new);
    float psum = 0.0f;
    for (int key = part; key < kKeys; key += S::kTpr) {
      const float p = m_new == -INFINITY ? 0.0f : exp2f(srow[key] - m_new);
      srow[key] = p;
      psum += p;
    }
#pragma unroll
    for (int o = 1; o < S::kTpr; o <<= 1) psum += __shfl_xor_sync(0xffffffffu, psum, o);
    l = l * alpha + psum;
    m = m_new;
    __syncwarp();  // the row's other threads wrote half of srow

#pragma unroll
    for (int i = 0; i < S::kSlice; ++i) acc[i] *= alpha;
    for (int key = 0; key < kKeys; ++key) {
      const float p = srow[key];
#pragma unroll
      for (int c = 0; c < S::kSlice / 8; ++c) {
        float vf[8];
        Bf16x8ToFloat(*reinterpret_cast<const uint4*>(vs + key * S::kKvRowBytes + (part * S::kSlice + c * 8) * 2), vf);
#pragma unroll
        for (int e = 0; e < 8; ++e) acc[c * 8 + e] += p * vf[e];
      }
    }
    __syncthreads();  // K/V tiles are refilled next
  }

  if (!row_valid) return;
  const float inv = l > 0.0f ? 1.0f / l : 0.0f;
  __nv_bfloat16* orow = static_cast<__nv_bfloat16*>(a.out) + static_cast<int64_t>(token) * a.out_stride + h * D +
                        part * S::kSlice;
#pragma unroll
  for (int c = 0; c < S::kSlice / 8; ++c) {
    float o[8];
#pragma unroll
    for (int e = 0; e < 8; ++e) o[e] = acc[c * 8 + e] * inv;
    *reinterpret_cast<uint4*>(orow + c * 8) = FloatToBf16x8(o);
  }
}

template <int D>
void LaunchPrefill(const AttentionArgs& a, cudaStream_t stream) {
  using S = PrefillShape<D>;
  static const cudaError_t attr = cudaFuncSetAttribute(PrefillKernel<D>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                                       static_cast<int>(S::kSmemBytes));
  (void)attr;
  const int group = a.num_heads / a.num_kv_heads;
  const int tokens_per_tile = kRows / group;
  dim3 grid((a.max_query_len + tokens_per_tile - 1) / tokens_per_tile,
                  a.prefill_seqs != nullptr ? a.num_prefill_seqs : a.num_seqs, a.num_kv_heads);
  LaunchPdl(PrefillKernel<D>, grid, S::kThreads, S::kSmemBytes, stream, a);
}

}  // namespace

void LaunchPrefillAttention(const AttentionArgs& a, cudaStream_t stream) {
  if (a.num_seqs <= 0 || a.max_query_len <= 0 || (a.prefill_seqs != nullptr && a.num_prefill_seqs <= 0)) return;
  if (MmaPrefillSupported(a.head_dim)) return LaunchMmaPrefill(a, stream);
  switch (a.head_dim) {
    case 8: return LaunchPrefill<8>(a, stream);
    case 16: return LaunchPrefill<16>(a, stream);
    case 256: return LaunchPrefill<256>(a, stream);
    default: return;
  }
}

}  // namespace tessera::cuda
