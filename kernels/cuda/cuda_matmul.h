// Dense GEMM y = x · Wᵀ through cuBLASLt (bf16 operands, f32 accumulation, bf16 or f32
// output). Descriptors and the chosen algorithm are cached per shape, so a step pays
// the heuristic query only the first time it sees a shape.
#pragma once

#include <cublasLt.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <map>
#include <memory>
#include <tuple>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "runtime/common/dtype.h"

namespace tessera::cuda {

class CublasLtMatmul {
 public:
  // `workspace` (device memory of `workspace_bytes`) must outlive this object.
  static absl::StatusOr<std::unique_ptr<CublasLtMatmul>> Create(void* workspace, size_t workspace_bytes);
  ~CublasLtMatmul();
  CublasLtMatmul(const CublasLtMatmul&) = delete;
  CublasLtMatmul& operator=(const CublasLtMatmul&) = delete;

  // out[n, m] = x[n, k] · w[m, k]ᵀ; x and w bf16, out bf16 or f32, all row-major.
  absl::Status Run(const void* x, const void* w, void* out, DType out_dtype, int64_t n, int64_t k, int64_t m,
                   cudaStream_t stream);

 private:
  // Descriptors and algorithm of one (shape, output dtype, alignment).
  struct Plan {
    cublasLtMatmulDesc_t op = nullptr;
    cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
    cublasLtMatmulAlgo_t algo{};
    Plan() = default;
    Plan(const Plan&) = delete;
    Plan& operator=(const Plan&) = delete;
    ~Plan();
  };
  using Key = std::tuple<int64_t, int64_t, int64_t, int, int>;  // n, k, m, out dtype, alignment

  CublasLtMatmul(cublasLtHandle_t handle, void* workspace, size_t workspace_bytes)
      : handle_(handle), workspace_(workspace), workspace_bytes_(workspace_bytes) {}
  absl::StatusOr<Plan*> GetPlan(const Key& key);

  cublasLtHandle_t handle_;
  void* workspace_;
  size_t workspace_bytes_;
  std::map<Key, std::unique_ptr<Plan>> plans_;
};

}  // namespace tessera::cuda
