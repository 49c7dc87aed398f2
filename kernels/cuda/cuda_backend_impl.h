// The concrete CUDA backend: owns one stream, the cuBLASLt plans, the per-step index
// buffer and the decode-attention workspace. Ops only enqueue work on stream();
// argument errors and launch failures are kept as a sticky status that Synchronize()
// returns. The decode split-K workspace and the index buffer grow (with a synchronise)
// the first time a larger shape is seen: warm up at the largest shape before capturing
// a CUDA graph. Grown-out buffers are kept, not freed, because a captured graph may
// still point into them.
#pragma once

#include <cuda_runtime.h>

#include <memory>
#include <span>
#include <vector>

#include "kernels/backend.h"
#include "kernels/pinned_pool.h"
#include "kernels/cuda/cuda_launch.h"
#include "kernels/cuda/cuda_matmul.h"
#include "kernels/cuda/cuda_quant_launch.h"

namespace tessera {

struct CudaBackendOptions {
  int device_index = 0;
  size_t gemm_workspace_bytes = size_t{32} << 20;
  // Batches of at most cuda::kMaxGemvRows rows use the skinny GEMM kernel, not cuBLASLt.
  bool skinny_gemv = true;
  // SiluMulMatmul forms the activations inside the int4 decode kernel where it applies
  // (else SiluMul then Matmul). Create turns it off when TESSERA_FUSE_SILU_DOWN=0.
  bool fuse_silu_down = true;
  // Products of a packed int4 weight with at least this many rows dequantise it to bf16 and
  // run the dense GEMM (cuBLASLt); fewer take the int4 kernels. The dequantisation costs
  // about one pass over the bf16 matrix (4096x4096: 12 us, 11008x4096: 46 us on an H100);
  // at 128 rows the pair beats the int4 tile kernel on the 7B shapes by 1.1-1.8x, at 512 by
  // 2.9-3.6x, at 64 it loses on the MLP shapes (cuda_quant_bench). Create takes
  // TESSERA_INT4_DENSE_ROWS for same-process comparisons (0: never).
  int64_t int4_dense_min_rows = 128;
  // In a mixed step (decodes beside prefill chunks) the prefill attention kernel runs on a
  // second stream beside the decode attention kernel, which reads different sequences; the
  // two meet before the output projection. Create turns it off when
  // TESSERA_OVERLAP_PREFILL_ATTENTION=0.
  bool overlap_prefill_attention = true;
  absl::Status Validate() const;
};

class CudaBackend final : public Backend {
 public:
  static absl::StatusOr<std::unique_ptr<CudaBackend>> Create(const CudaBackendOptions& options);
  ~CudaBackend() override;

  DeviceKind kind() const override { return DeviceKind::kCuda; }
  std::string name() const override { return "cuda"; }
  DType activation_dtype() const override { return DType::kBF16; }
  absl::Status CheckKvCacheDType(DType dtype, int32_t head_dim) const override;
  cudaStream_t stream() const { return stream_; }
  int num_sms() const { return num_sms_; }

  absl::StatusOr<DeviceBuffer> Allocate(size_t bytes) override;
  absl::StatusOr<std::shared_ptr<char>> AllocateHostStaging(size_t bytes) override;
  absl::Status CopyToDeviceAsync(void* dst, const void* host_src, size_t bytes) override;
  absl::Status CopyToDevice(void* dst, const void* host_src, size_t bytes) override;
  absl::Status CopyToHost(void* host_dst, const void* src, size_t bytes) override;
  absl::Status Synchronize() override;
  size_t FreeMemoryBytes() const override;
  absl::StatusOr<DeviceBatch> UploadBatch(const BatchLayout& layout) override;
  // 4-bit GPTQ weights get the int4 tensor-core layout (cuda_quant_ops.cc).
  absl::StatusOr<DeviceBuffer> PackQuantizedWeight(const QuantizedWeight& host, QuantizedWeight* dev) override;
  // Whether a product of packed q with `rows` rows dequantises q and runs the dense GEMM.
  bool Int4TakesDenseGemm(const QuantizedWeight& q, int64_t rows) const;
  // The dequantised-weight buffer of the dense int4 path, for the largest weight that takes it.
  absl::Status ReserveQuantizedMatmul(const std::vector<const QuantizedWeight*>& weights, int64_t rows) override;

  absl::Status SampleTokens(const TensorView& logits, const std::vector<SamplingRow>& rows,
                            std::vector<int32_t>* ids, std::vector<float>* logprobs,
                            std::vector<RowStats>* stats = nullptr) override;
  void MarkStepStart() override;
  std::optional<double> DeviceStepSeconds() override;
  bool SupportsGraphs() const override { return true; }
  absl::Status BeginCapture() override;
  absl::StatusOr<int> EndCapture() override;
  absl::Status Replay(int graph) override;
  void ClearGraphs() override;

  void Embedding(const TensorView& table, const int32_t* ids, int32_t n, TensorView out) override;
  void RmsNorm(const TensorView& x, const TensorView& weight, float eps, TensorView out) override;
  void AddRmsNorm(const TensorView& x, TensorView residual, const TensorView& weight, float eps,
                  TensorView out) override;
  void Matmul(const TensorView& x, const LinearWeight& w, TensorView out) override;
  void Rope(TensorView q, TensorView k, const int32_t* positions, const float* inv_freq,
            int32_t head_dim) override;
  void SiluMul(const TensorView& gate_up, TensorView out) override;
  void SiluMulMatmul(const TensorView& gate_up, TensorView act, const LinearWeight& w,
                     TensorView out) override;  // cuda_quant_ops.cc
  void Add(const TensorView& x, TensorView out) override;
  void RopeStoreKv(const TensorView& qkv, TensorView q_out, const int32_t* positions, const float* inv_freq,
                   int32_t head_dim, const DeviceBatch& batch, const KvLayerView& cache) override;
  void StoreKv(const TensorView& k, const TensorView& v, const DeviceBatch& batch,
               const KvLayerView& cache) override;
  void PagedAttention(const TensorView& q, const DeviceBatch& batch, const KvLayerView& cache,
                      const AttentionParams& params, TensorView out) override;
  void GatherRows(const TensorView& x, const int32_t* rows, int32_t count, TensorView out) override;
  void LoraApply(const TensorView& x, const LoraBatch& lora, int layer, int target, TensorView out,
                 int64_t col_offset) override;  // cuda_quant_ops.cc
  void LoraApplyGroup(const TensorView& x, const LoraBatch& lora, int layer,
                      std::span<const LoraTarget> targets) override;

 private:
  CudaBackend() = default;
  // Records the first error; later ones are dropped (the first is the cause).
  void Fail(absl::Status status);
  bool Check(bool ok, const char* op, const char* what);
  void CheckLaunch(const char* op);
  // Grows a device buffer that only ever grows (by half again, unless `exact`);
  // synchronises when it must reallocate.
  absl::Status EnsureDevice(DeviceBuffer& buf, size_t bytes, bool exact = false);
  // The prefill chunks' part of PagedAttention, on `stream`.
  void LaunchPrefillPart(cuda::AttentionArgs a, const DeviceBatch& batch, cudaStream_t stream);
  // GPTQ matmul (cuda_quant_ops.cc).
  void QuantizedMatmul(const TensorView& x, const QuantizedWeight& q, TensorView out);
  void PackedInt4Matmul(const TensorView& x, const QuantizedWeight& q, TensorView out);
  // SiluMulMatmul in the int4 decode kernel; false (nothing enqueued) where it does not apply.
  bool FusedSiluInt4Matmul(const TensorView& gate_up, const QuantizedWeight& q, TensorView out);
  // LoRA (cuda_quant_ops.cc): one target's kernel arguments (false: nothing to do), and one
  // launch for a group of them.
  bool LoraArgsFor(const TensorView& x, const LoraBatch& lora, int layer, int target, TensorView out,
                   int64_t col_offset, cuda::LoraArgs* a);
  void LaunchLoraGroup(const cuda::LoraGroupArgs& g);
  // Grows gptq_workspace_, zeroing it (the split-K arrival counters) when it moves.
  absl::Status EnsureGptqWorkspace(size_t bytes);

  CudaBackendOptions options_;
  cudaStream_t stream_ = nullptr;
  std::vector<int32_t> prefill_seqs_scratch_;  // UploadBatch's list of prefill sequences
  int num_sms_ = 0;
  DeviceBuffer gemm_workspace_;
  std::unique_ptr<cuda::CublasLtMatmul> gemm_;
  // UploadBatch: two pinned staging buffers (one may still be copying) and one device buffer.
  void* staging_[2] = {nullptr, nullptr};
  // Page-locked upload staging (AllocateHostStaging), reused across adapter loads.
  static constexpr size_t kMaxIdlePinnedBytes = size_t{2} << 30;
  std::shared_ptr<PinnedPool> pinned_pool_;
  size_t staging_bytes_[2] = {0, 0};
  cudaEvent_t staging_done_[2] = {nullptr, nullptr};
  cudaEvent_t step_start_ = nullptr, step_end_ = nullptr;  // MarkStepStart / DeviceStepSeconds
  // Mixed-step attention: the prefill kernel's stream, and the fork and join events.
  cudaStream_t side_stream_ = nullptr;
  cudaEvent_t attention_fork_ = nullptr, attention_join_ = nullptr;
  bool step_marked_ = false;
  DeviceBuffer int4_dense_;  // a packed int4 weight dequantised for the dense GEMM
  int staging_next_ = 0;
  DeviceBuffer batch_buffer_;
  DeviceBuffer attention_workspace_;
  std::vector<DeviceBuffer> retired_;  // outgrown buffers that captured graphs may still use
  // The decode plan depends only on the step's shape: computed by the first layer, reused.
  struct PlanKey {
    int32_t num_seqs = -1, max_context_len = -1, num_heads = -1, num_kv_heads = -1, head_dim = -1;
    bool kv_fp8 = false;
    bool operator==(const PlanKey&) const = default;
  };
  PlanKey plan_key_;
  cuda::DecodePlan plan_;
  // SampleTokens: parameters in, ids and logprobs out.
  DeviceBuffer sample_buffer_;
  std::vector<cudaGraphExec_t> graphs_;
  bool capturing_ = false;
  DeviceBuffer gptq_workspace_;  // split-K partial sums and arrival counters
  DeviceBuffer lora_workspace_;  // BGMV arrival counters, then the shrunk activations
  absl::Status sticky_;
};

}  // namespace tessera
