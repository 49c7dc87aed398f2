// cuBLASLt GEMM plans. Row-major y[n,m] = x[n,k]·W[m,k]ᵀ is the column-major product
// Yc[m,n] = Wcᵀ · Xc where Wc = [k,m] and Xc = [k,n]: A = W (transposed), B = x.
#include "kernels/cuda/cuda_matmul.h"

#include <algorithm>
#include <string>

namespace tessera::cuda {

CublasLtMatmul::Plan::~Plan() {
  if (a) cublasLtMatrixLayoutDestroy(a);
  if (b) cublasLtMatrixLayoutDestroy(b);
  if (c) cublasLtMatrixLayoutDestroy(c);
  if (op) cublasLtMatmulDescDestroy(op);
}

namespace {

absl::Status LtError(const char* what, cublasStatus_t st) {
  return absl::InternalError(std::string("cuBLASLt ") + what + ": " + cublasLtGetStatusString(st));
}

#define LT_RETURN_IF_ERROR(what, expr)              \
  do {                                              \
    cublasStatus_t _st = (expr);                    \
    if (_st != CUBLAS_STATUS_SUCCESS) return LtError(what, _st); \
  } while (0)

// Largest power of two (up to 256) dividing the address: cuBLASLt picks kernels by it.
int Alignment(const void* p) {
  uintptr_t v = reinterpret_cast<uintptr_t>(p);
  int a = 256;
  while (a > 1 && v % a != 0) a /= 2;
  return a;
}

}  // namespace

absl::StatusOr<std::unique_ptr<CublasLtMatmul>> CublasLtMatmul::Create(void* workspace, size_t workspace_bytes) {
  cublasLtHandle_t handle = nullptr;
  LT_RETURN_IF_ERROR("create", cublasLtCreate(&handle));
  return std::unique_ptr<CublasLtMatmul>(new CublasLtMatmul(handle, workspace, workspace_bytes));
}

CublasLtMatmul::~CublasLtMatmul() {
  plans_.clear();
  if (handle_) cublasLtDestroy(handle_);
}

absl::StatusOr<CublasLtMatmul::Plan*> CublasLtMatmul::GetPlan(const Key& key) {
  auto it = plans_.find(key);
  if (it != plans_.end()) return it->second.get();
  const auto [n, k, m, out_dtype, align] = key;
  auto plan = std::make_unique<Plan>();
  const cudaDataType_t c_type = static_cast<DType>(out_dtype) == DType::kF32 ? CUDA_R_32F : CUDA_R_16BF;
  LT_RETURN_IF_ERROR("desc", cublasLtMatmulDescCreate(&plan->op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  const cublasOperation_t trans_a = CUBLAS_OP_T, trans_b = CUBLAS_OP_N;
  LT_RETURN_IF_ERROR("transa", cublasLtMatmulDescSetAttribute(plan->op, CUBLASLT_MATMUL_DESC_TRANSA, &trans_a,
                                                              sizeof(trans_a)));
  LT_RETURN_IF_ERROR("transb", cublasLtMatmulDescSetAttribute(plan->op, CUBLASLT_MATMUL_DESC_TRANSB, &trans_b,
                                                              sizeof(trans_b)));
  LT_RETURN_IF_ERROR("layout a", cublasLtMatrixLayoutCreate(&plan->a, CUDA_R_16BF, k, m, k));
  LT_RETURN_IF_ERROR("layout b", cublasLtMatrixLayoutCreate(&plan->b, CUDA_R_16BF, k, n, k));
  LT_RETURN_IF_ERROR("layout c", cublasLtMatrixLayoutCreate(&plan->c, c_type, m, n, m));

  cublasLtMatmulPreference_t pref = nullptr;
  LT_RETURN_IF_ERROR("preference", cublasLtMatmulPreferenceCreate(&pref));
  const uint32_t al = static_cast<uint32_t>(align);
  cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &workspace_bytes_,
                                       sizeof(workspace_bytes_));
  for (auto attr : {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
                    CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES}) {
    cublasLtMatmulPreferenceSetAttribute(pref, attr, &al, sizeof(al));
  }
  cublasLtMatmulHeuristicResult_t result{};
  int found = 0;
  cublasStatus_t st = cublasLtMatmulAlgoGetHeuristic(handle_, plan->op, plan->a, plan->b, plan->c, plan->c, pref, 1,
                                                     &result, &found);
  cublasLtMatmulPreferenceDestroy(pref);
  if (st != CUBLAS_STATUS_SUCCESS) return LtError("heuristic", st);
  if (found == 0) {
    return absl::UnimplementedError("cuBLASLt has no algorithm for matmul n=" + std::to_string(n) +
                                    " k=" + std::to_string(k) + " m=" + std::to_string(m));
  }
  plan->algo = result.algo;
  Plan* raw = plan.get();
  plans_.emplace(key, std::move(plan));
  return raw;
}

absl::Status CublasLtMatmul::Run(const void* x, const void* w, void* out, DType out_dtype, int64_t n, int64_t k,
                                 int64_t m, cudaStream_t stream) {
  if (n == 0 || m == 0) return absl::OkStatus();
  const int align = std::min({Alignment(x), Alignment(w), Alignment(out)});
  auto plan = GetPlan(Key{n, k, m, static_cast<int>(out_dtype), align});
  if (!plan.ok()) return plan.status();
  const float alpha = 1.0f, beta = 0.0f;
  Plan* p = *plan;
  LT_RETURN_IF_ERROR("matmul", cublasLtMatmul(handle_, p->op, &alpha, w, p->a, x, p->b, &beta, out, p->c, out, p->c,
                                              &p->algo, workspace_, workspace_bytes_, stream));
  return absl::OkStatus();
}

}  // namespace tessera::cuda
