// Device helpers shared by the CUDA kernels: dtype-generic scalar loads/stores,
// bf16 vector unpacking and cp.async wrappers (16-byte, zero-filling).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "runtime/common/dtype.h"

namespace tessera::cuda {

// Scalar element access for the dtypes an op may see (activations, weights).
__device__ __forceinline__ float LoadAsFloat(const void* p, DType t, int64_t i) {
  switch (t) {
    case DType::kBF16: return __bfloat162float(static_cast<const __nv_bfloat16*>(p)[i]);
    case DType::kF16: return __half2float(static_cast<const __half*>(p)[i]);
    default: return static_cast<const float*>(p)[i];
  }
}

__device__ __forceinline__ void StoreFromFloat(void* p, DType t, int64_t i, float v) {
  switch (t) {
    case DType::kBF16: static_cast<__nv_bfloat16*>(p)[i] = __float2bfloat16(v); break;
    case DType::kF16: static_cast<__half*>(p)[i] = __float2half(v); break;
    default: static_cast<float*>(p)[i] = v; break;
  }
}

// v rounded to dtype t and back (what a store then a load would give).
__device__ __forceinline__ float RoundTo(DType t, float v) {
  switch (t) {
    case DType::kBF16: return __bfloat162float(__float2bfloat16(v));
    case DType::kF16: return __half2float(__float2half(v));
    default: return v;
  }
}

// SiluMul's activation silu(g) * u in f32, shared by the SiluMul kernel and the kernels
// that form it while staging their inputs, so that both round the same value. The explicit
// roundings keep the compiler from contracting differently in each caller.
__device__ __forceinline__ float SiluMulF32(float g, float u) {
  return __fmul_rn(__fdiv_rn(g, __fadd_rn(1.0f, expf(-g))), u);
}

// Eight bf16 packed in 16 bytes -> eight floats.
__device__ __forceinline__ void Bf16x8ToFloat(const uint4& v, float* f) {
  const __nv_bfloat162* h = reinterpret_cast<const __nv_bfloat162*>(&v);
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    float2 x = __bfloat1622float2(h[i]);
    f[2 * i] = x.x;
    f[2 * i + 1] = x.y;
  }
}

__device__ __forceinline__ uint4 FloatToBf16x8(const float* f) {
  uint4 v;
  __nv_bfloat162* h = reinterpret_cast<__nv_bfloat162*>(&v);
#pragma unroll
  for (int i = 0; i < 4; ++i) h[i] = __floats2bfloat162_rn(f[2 * i], f[2 * i + 1]);
  return v;
}

// 16-byte global->shared copy; copies zeros instead when !valid (src is then not read).
__device__ __forceinline__ void CpAsync16(void* smem_dst, const void* gmem_src, bool valid) {
  unsigned dst = static_cast<unsigned>(__cvta_generic_to_shared(smem_dst));
  int src_bytes = valid ? 16 : 0;
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(gmem_src), "r"(src_bytes));
}

// CpAsync16 issued only where `issue` (a predicated instruction: no branch, so lanes that
// skip it do not diverge).
__device__ __forceinline__ void CpAsync16If(void* smem_dst, const void* gmem_src, bool valid, bool issue) {
  unsigned dst = static_cast<unsigned>(__cvta_generic_to_shared(smem_dst));
  int src_bytes = valid ? 16 : 0;
  asm volatile(
      "{\n .reg .pred p;\n setp.ne.b32 p, %3, 0;\n @p cp.async.cg.shared.global [%0], [%1], 16, %2;\n}\n" ::"r"(dst),
      "l"(gmem_src), "r"(src_bytes), "r"(static_cast<int>(issue)));
}

// 4-byte global->shared copy (through L1); zeros when !valid.
__device__ __forceinline__ void CpAsync4(void* smem_dst, const void* gmem_src, bool valid) {
  unsigned dst = static_cast<unsigned>(__cvta_generic_to_shared(smem_dst));
  int src_bytes = valid ? 4 : 0;
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(dst), "l"(gmem_src), "r"(src_bytes));
}

// CpAsync4 issued only where `issue` (predicated, as CpAsync16If).
__device__ __forceinline__ void CpAsync4If(void* smem_dst, const void* gmem_src, bool valid, bool issue) {
  unsigned dst = static_cast<unsigned>(__cvta_generic_to_shared(smem_dst));
  int src_bytes = valid ? 4 : 0;
  asm volatile(
      "{\n .reg .pred p;\n setp.ne.b32 p, %3, 0;\n @p cp.async.ca.shared.global [%0], [%1], 4, %2;\n}\n" ::"r"(dst),
      "l"(gmem_src), "r"(src_bytes), "r"(static_cast<int>(issue)));
}

__device__ __forceinline__ void CpAsyncCommit() { asm volatile("cp.async.commit_group;\n" ::); }

template <int N>
__device__ __forceinline__ void CpAsyncWait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

// Device-scope acquire-release fetch-and-add: one thread's arrival at a counter after a
// barrier (bar.sync or __syncwarp) of the threads whose writes it publishes. The release is
// cumulative over what the barrier ordered, so those writes are visible at device scope
// before the count; the acquire, passed on by a barrier after it, lets the threads of the
// last to arrive read the others' writes (no __threadfence in every thread).
__device__ __forceinline__ unsigned AtomicAddAcqRel(unsigned* p, unsigned v) {
  unsigned old;
  asm volatile("atom.acq_rel.gpu.global.add.u32 %0, [%1], %2;\n" : "=r"(old) : "l"(p), "r"(v) : "memory");
  return old;
}

// Programmatic dependent launch (sm_90, see cuda_pdl.h). A kernel launched with LaunchPdl
// calls PdlStart() before it reads or writes anything an earlier kernel of the stream may
// still touch; weights and other constant inputs may be read before it.
__device__ __forceinline__ void PdlLaunchDependents() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
#endif
}

__device__ __forceinline__ void PdlWait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;\n" ::: "memory");
#endif
}

// Lets the next kernel of the stream be scheduled now (it waits for this one to finish
// before touching its results), then waits for the previous kernel to finish.
__device__ __forceinline__ void PdlStart() {
  PdlLaunchDependents();
  PdlWait();
}

}  // namespace tessera::cuda
