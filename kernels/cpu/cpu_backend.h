// The CPU backend: the reference implementation of every op (float32 activations,
// f32/f16/bf16 weights, f32 accumulation), multithreaded over a ThreadPool.
#pragma once

#include "kernels/backend.h"

namespace tessera {

class ThreadPool;

class CpuBackend final : public Backend {
 public:
  explicit CpuBackend(ThreadPool* pool = nullptr);

  DeviceKind kind() const override { return DeviceKind::kCpu; }
  std::string name() const override { return "cpu"; }
  DType activation_dtype() const override { return DType::kF32; }
  absl::Status CheckKvCacheDType(DType dtype, int32_t head_dim) const override;

  absl::StatusOr<DeviceBuffer> Allocate(size_t bytes) override;
  absl::Status CopyToDevice(void* dst, const void* host_src, size_t bytes) override;
  absl::Status CopyToHost(void* host_dst, const void* src, size_t bytes) override;
  absl::Status Synchronize() override { return TakeOpError(); }
  size_t FreeMemoryBytes() const override;
  absl::StatusOr<DeviceBatch> UploadBatch(const BatchLayout& layout) override;
  absl::Status SampleTokens(const TensorView& logits, const std::vector<SamplingRow>& rows,
                            std::vector<int32_t>* ids, std::vector<float>* logprobs,
                            std::vector<RowStats>* stats = nullptr) override;

  void Embedding(const TensorView& table, const int32_t* ids, int32_t n, TensorView out) override;
  void RmsNorm(const TensorView& x, const TensorView& weight, float eps, TensorView out) override;
  void AddRmsNorm(const TensorView& x, TensorView residual, const TensorView& weight, float eps,
                  TensorView out) override;
  void Matmul(const TensorView& x, const LinearWeight& w, TensorView out) override;
  void Rope(TensorView q, TensorView k, const int32_t* positions, const float* inv_freq,
            int32_t head_dim) override;
  void SiluMul(const TensorView& gate_up, TensorView out) override;
  void Add(const TensorView& x, TensorView out) override;
  void RopeStoreKv(const TensorView& qkv, TensorView q_out, const int32_t* positions, const float* inv_freq,
                   int32_t head_dim, const DeviceBatch& batch, const KvLayerView& cache) override;
  void StoreKv(const TensorView& k, const TensorView& v, const DeviceBatch& batch,
               const KvLayerView& cache) override;
  void PagedAttention(const TensorView& q, const DeviceBatch& batch, const KvLayerView& cache,
                      const AttentionParams& params, TensorView out) override;
  void GatherRows(const TensorView& x, const int32_t* rows, int32_t count, TensorView out) override;
  void LoraApply(const TensorView& x, const LoraBatch& lora, int layer, int target, TensorView out,
                 int64_t col_offset) override;

 private:
  ThreadPool* pool_;
  BatchLayout uploaded_;  // keeps the arrays DeviceBatch points into alive
};

// out[n, m] = x[n, k] · Wᵀ for a dense W [m, k] of any float dtype (CPU reference kernel).
void CpuMatmulDense(ThreadPool& pool, const float* x, int64_t n, int64_t k, const void* w,
                    DType w_dtype, int64_t m, float* out);
// Dequantizes a GPTQ weight into a dense float [out_features, in_features] matrix.
void CpuDequantizeGptq(const QuantizedWeight& q, float* out);

}  // namespace tessera
