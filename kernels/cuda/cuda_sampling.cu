// Token sampling on the device, one CTA per row of logits. Greedy is an argmax; the
// top-k and top-p cuts are found by bisection over the order-preserving 32-bit key of
// the logits (32 counting or mass-summing passes at most, exact in key space, no sort);
// min-p is a direct threshold; the draw is Gumbel-max with Philox noise, so only the
// chosen ids and logprobs leave the device. Semantics: kernels/cpu/cpu_sampling.cc.
#include <cuda_runtime.h>

#include <cfloat>
#include <cmath>

#include "kernels/cuda/cuda_launch.h"
#include "kernels/sampling_math.h"

namespace tessera::cuda {
namespace {

constexpr int kThreads = 512;
constexpr int kWarps = kThreads / 32;

struct ArgMaxPair {
  float score;
  int32_t index;
};

// Larger score wins; the smaller index on ties (the CPU reference scans upwards).
__device__ __forceinline__ ArgMaxPair Better(ArgMaxPair a, ArgMaxPair b) {
  if (b.score > a.score || (b.score == a.score && b.index < a.index)) return b;
  return a;
}

__device__ ArgMaxPair BlockArgMax(ArgMaxPair v, ArgMaxPair* red) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    ArgMaxPair other{__shfl_xor_sync(0xffffffffu, v.score, o), __shfl_xor_sync(0xffffffffu, v.index, o)};
    v = Better(v, other);
  }
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) red[warp] = v;
  __syncthreads();
  ArgMaxPair r = red[0];
  for (int w = 1; w < kWarps; ++w) r = Better(r, red[w]);
  __syncthreads();  // red is reused by the next reduction
  return r;
}

template <typename T>
__device__ T BlockSum(T v, T* red) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) red[warp] = v;
  __syncthreads();
  T r = 0;
  for (int w = 0; w < kWarps; ++w) r += red[w];
  __syncthreads();
  return r;
}

__global__ void __launch_bounds__(kThreads) SampleKernel(const float* logits, int64_t stride, int32_t vocab,
                                                         const SampleRowArgs* params, int32_t* ids,
                                                         float* logprobs, float* stats) {
  using sampling::OrderedKey;
  __shared__ ArgMaxPair red_pair[kWarps];
  __shared__ float red_f[kWarps];
  __shared__ unsigned red_u[kWarps];
  const int row = blockIdx.x, tid = threadIdx.x;
  const float* l = logits + row * stride;
  const SampleRowArgs p = params[row];

  ArgMaxPair best{-INFINITY, 0};
  for (int i = tid; i < vocab; i += kThreads) best = Better(best, ArgMaxPair{l[i], i});
  best = BlockArgMax(best, red_pair);
  const float mx = best.score;
  float z = 0.0f, weighted = 0.0f;
  for (int i = tid; i < vocab; i += kThreads) {
    const float d = l[i] - mx, e = expf(d);
    z += e;
    weighted += e * d;
  }
  z = BlockSum(z, red_f);
  const float log_z = mx + logf(z);
  if (stats != nullptr) {
    // Entropy H = log Z - Σ p (l - m), p = e^(l - m) / Z; the top-1 probability is 1 / Z.
    weighted = BlockSum(weighted, red_f);
    if (tid == 0) {
      stats[2 * row] = logf(z) - weighted / z;
      stats[2 * row + 1] = 1.0f / z;
    }
  }
  if (p.temperature < 1e-5f) {
    if (tid == 0) {
      ids[row] = best.index;
      logprobs[row] = mx - log_z;
    }
    return;
  }

  const float inv_t = 1.0f / p.temperature;
  const uint32_t top_key = OrderedKey(mx);
  uint32_t threshold = 0;
  if (p.top_k > 0 && p.top_k < vocab) {
    // Largest key K with at least top_k logits at or above it.
    uint32_t lo = 0, hi = top_key;
    while (lo < hi) {
      const uint32_t mid = lo + static_cast<uint32_t>((static_cast<uint64_t>(hi) - lo + 1) / 2);
      unsigned count = 0;
      for (int i = tid; i < vocab; i += kThreads) count += OrderedKey(l[i]) >= mid;
      count = BlockSum(count, red_u);
      if (count >= static_cast<unsigned>(p.top_k)) lo = mid;
      else hi = mid - 1;
    }
    threshold = lo;
  }
  if (p.top_p < 1.0f) {
    float mass = 0.0f;
    for (int i = tid; i < vocab; i += kThreads) {
      if (OrderedKey(l[i]) >= threshold) mass += expf((l[i] - mx) * inv_t);
    }
    const float target = p.top_p * BlockSum(mass, red_f);
    // Largest key K whose tokens at or above it hold at least top_p of the mass.
    uint32_t lo = threshold, hi = top_key;
    while (lo < hi) {
      const uint32_t mid = lo + static_cast<uint32_t>((static_cast<uint64_t>(hi) - lo + 1) / 2);
      float m = 0.0f;
      for (int i = tid; i < vocab; i += kThreads) {
        if (OrderedKey(l[i]) >= mid) m += expf((l[i] - mx) * inv_t);
      }
      m = BlockSum(m, red_f);
      if (m >= target) lo = mid;
      else hi = mid - 1;
    }
    threshold = lo;
  }
  ArgMaxPair pick{-INFINITY, best.index};
  for (int i = tid; i < vocab; i += kThreads) {
    const float li = l[i];
    if (OrderedKey(li) < threshold) continue;
    if (p.min_p > 0.0f && expf((li - mx) * inv_t) < p.min_p) continue;
    // Unfused, rounded like the host reference.
    const float score = __fadd_rn(__fmul_rn(li, inv_t), sampling::Gumbel(p.seed, p.step, static_cast<uint32_t>(i)));
    pick = Better(pick, ArgMaxPair{score, i});
  }
  pick = BlockArgMax(pick, red_pair);
  if (tid == 0) {
    ids[row] = pick.index;
    logprobs[row] = l[pick.index] - log_z;
  }
}

}  // namespace

void LaunchSampleTokens(const float* logits, int64_t stride, int32_t rows, int32_t vocab, const SampleRowArgs* params,
                        int32_t* ids, float* logprobs, float* stats, cudaStream_t stream) {
  if (rows <= 0) return;
  SampleKernel<<<rows, kThreads, 0, stream>>>(logits, stride, vocab, params, ids, logprobs, stats);
}

}  // namespace tessera::cuda
