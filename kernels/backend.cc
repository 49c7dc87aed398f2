#include "kernels/backend.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "kernels/cpu/cpu_backend.h"

#ifdef TESSERA_CUDA_BACKEND
#include "kernels/cuda/cuda_backend.h"
#endif

namespace tessera {

absl::StatusOr<std::shared_ptr<char>> Backend::AllocateHostStaging(size_t bytes) {
  return std::shared_ptr<char>(new char[bytes > 0 ? bytes : 1], std::default_delete<char[]>());
}

void Backend::LoraApply(const TensorView&, const LoraBatch&, int, int, TensorView, int64_t) {
  RecordOpError(absl::UnimplementedError("the " + name() + " backend has no LoRA kernel; LoRA adapters need the cpu backend"));
}

void Backend::LoraApplyGroup(const TensorView& x, const LoraBatch& lora, int layer,
                             std::span<const LoraTarget> targets) {
  for (const LoraTarget& t : targets) LoraApply(x, lora, layer, t.target, t.out, t.col_offset);
}

void Backend::SiluMulMatmul(const TensorView& gate_up, TensorView act, const LinearWeight& w, TensorView out) {
  SiluMul(gate_up, act);
  Matmul(act, w, out);
}

absl::Status Backend::CheckKvCacheDType(DType dtype, int32_t) const {
  if (dtype == activation_dtype()) return absl::OkStatus();
  return absl::UnimplementedError(absl::StrCat("this backend keeps its KV cache in ", std::string(DTypeName(activation_dtype())),
                                               ", not ", std::string(DTypeName(dtype))));
}

absl::Status Backend::TakeOpError() {
  std::lock_guard<std::mutex> lock(op_error_mu_);
  absl::Status s = std::move(op_error_);
  op_error_ = absl::OkStatus();
  return s;
}

void Backend::RecordOpError(absl::Status status) {
  std::lock_guard<std::mutex> lock(op_error_mu_);
  if (op_error_.ok()) op_error_ = std::move(status);
}

bool CudaBackendAvailable() {
#ifdef TESSERA_CUDA_BACKEND
  return CudaDeviceCount() > 0;
#else
  return false;
#endif
}

absl::StatusOr<std::unique_ptr<Backend>> CreateBackend(const std::string& device) {
  if (device == "cpu") return std::unique_ptr<Backend>(new CpuBackend());
  if (device == "cuda" || device == "auto") {
#ifdef TESSERA_CUDA_BACKEND
    if (CudaDeviceCount() > 0) return CreateCudaBackend(0);
    if (device == "cuda") return absl::FailedPreconditionError("--device cuda: no CUDA device is visible");
#else
    if (device == "cuda")
      return absl::FailedPreconditionError("--device cuda: this build of tessera has no CUDA backend");
#endif
    return std::unique_ptr<Backend>(new CpuBackend());
  }
  return absl::InvalidArgumentError("unknown device '" + device + "' (expected auto, cpu or cuda)");
}

}  // namespace tessera
