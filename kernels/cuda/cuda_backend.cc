// CudaBackend: memory, per-step index upload, argument checks and dispatch of every op
// to the kernels in the .cu files and to cuBLASLt.
#include "kernels/cuda/cuda_backend.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <string>

#include "absl/strings/str_cat.h"
#include "kernels/cuda/cuda_attention_args.h"
#include "kernels/cuda/cuda_backend_impl.h"
#include "kernels/cuda/cuda_launch.h"
#include "kernels/sample_tokens_args.h"
#include "runtime/common/status_macros.h"

namespace tessera {
namespace {

absl::Status CudaError(const char* what, cudaError_t e) {
  return absl::InternalError(std::string("cuda: ") + what + ": " + cudaGetErrorString(e));
}

#define CUDA_RETURN_IF_ERROR(what, expr)           \
  do {                                             \
    cudaError_t _e = (expr);                       \
    if (_e != cudaSuccess) return CudaError(what, _e); \
  } while (0)

bool IsFloat(DType t) { return t == DType::kF32 || t == DType::kF16 || t == DType::kBF16; }
bool IsActivation(DType t) { return t == DType::kF32 || t == DType::kBF16; }
bool Aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }
void FreeDevice(void* p) { cudaFree(p); }
size_t Pad16(size_t bytes) { return (bytes + 15) / 16 * 16; }

}  // namespace

int CudaDeviceCount() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // no driver or no device: clear the error, report none
    return 0;
  }
  return n;
}

absl::StatusOr<std::unique_ptr<Backend>> CreateCudaBackend(int device_index) {
  CudaBackendOptions options;
  options.device_index = device_index;
  ASSIGN_OR_RETURN(std::unique_ptr<CudaBackend> backend, CudaBackend::Create(options));
  return std::unique_ptr<Backend>(std::move(backend));
}

absl::Status CudaBackendOptions::Validate() const {
  const int count = CudaDeviceCount();
  if (device_index < 0 || device_index >= count) {
    return absl::InvalidArgumentError("cuda device " + std::to_string(device_index) + " does not exist (" +
                                      std::to_string(count) + " visible)");
  }
  if (gemm_workspace_bytes < (size_t{1} << 20)) {
    return absl::InvalidArgumentError("cuda gemm workspace must be at least 1 MiB");
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<CudaBackend>> CudaBackend::Create(const CudaBackendOptions& options) {
  RETURN_IF_ERROR(options.Validate());
  std::unique_ptr<CudaBackend> b(new CudaBackend());
  b->options_ = options;
  // For same-process comparisons (benches): TESSERA_FUSE_SILU_DOWN=0 runs SiluMul then Matmul.
  if (const char* v = std::getenv("TESSERA_FUSE_SILU_DOWN"); v != nullptr && std::string(v) == "0") {
    b->options_.fuse_silu_down = false;
  }
  if (const char* v = std::getenv("TESSERA_OVERLAP_PREFILL_ATTENTION"); v != nullptr && std::string(v) == "0") {
    b->options_.overlap_prefill_attention = false;
  }
  if (const char* v = std::getenv("TESSERA_INT4_DENSE_ROWS"); v != nullptr && *v != '\0') {
    const int64_t rows = std::atoll(v);
    b->options_.int4_dense_min_rows = rows > 0 ? rows : std::numeric_limits<int64_t>::max();
  }
  CUDA_RETURN_IF_ERROR("set device", cudaSetDevice(options.device_index));
  CUDA_RETURN_IF_ERROR("stream", cudaStreamCreateWithFlags(&b->stream_, cudaStreamNonBlocking));
  CUDA_RETURN_IF_ERROR("sm count",
                       cudaDeviceGetAttribute(&b->num_sms_, cudaDevAttrMultiProcessorCount, options.device_index));
  for (cudaEvent_t& e : b->staging_done_) {
    CUDA_RETURN_IF_ERROR("event", cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
  }
  if (b->options_.overlap_prefill_attention) {
    CUDA_RETURN_IF_ERROR("stream", cudaStreamCreateWithFlags(&b->side_stream_, cudaStreamNonBlocking));
    CUDA_RETURN_IF_ERROR("event", cudaEventCreateWithFlags(&b->attention_fork_, cudaEventDisableTiming));
    CUDA_RETURN_IF_ERROR("event", cudaEventCreateWithFlags(&b->attention_join_, cudaEventDisableTiming));
  }
  CUDA_RETURN_IF_ERROR("event", cudaEventCreate(&b->step_start_));
  CUDA_RETURN_IF_ERROR("event", cudaEventCreate(&b->step_end_));
  const int device = options.device_index;
  b->pinned_pool_ = PinnedPool::Create(
      [device](size_t bytes) -> absl::StatusOr<char*> {
        void* p = nullptr;
        cudaSetDevice(device);  // admin threads allocate too
        const cudaError_t e = cudaMallocHost(&p, bytes);
        if (e != cudaSuccess) {
          cudaGetLastError();
          return absl::ResourceExhaustedError(std::string("cuda: cannot allocate ") + std::to_string(bytes) +
                                              " bytes of page-locked memory: " + cudaGetErrorString(e));
        }
        return static_cast<char*>(p);
      },
      [](char* p) { cudaFreeHost(p); }, kMaxIdlePinnedBytes);
  ASSIGN_OR_RETURN(b->gemm_workspace_, b->Allocate(options.gemm_workspace_bytes));
  ASSIGN_OR_RETURN(b->gemm_, cuda::CublasLtMatmul::Create(b->gemm_workspace_.data(), options.gemm_workspace_bytes));
  return b;
}

CudaBackend::~CudaBackend() {
  if (stream_) cudaStreamSynchronize(stream_);
  ClearGraphs();
  gemm_.reset();
  for (int i = 0; i < 2; ++i) {
    if (staging_[i]) cudaFreeHost(staging_[i]);
    if (staging_done_[i]) cudaEventDestroy(staging_done_[i]);
  }
  if (side_stream_) cudaStreamSynchronize(side_stream_);
  if (attention_fork_) cudaEventDestroy(attention_fork_);
  if (attention_join_) cudaEventDestroy(attention_join_);
  if (side_stream_) cudaStreamDestroy(side_stream_);
  if (step_start_) cudaEventDestroy(step_start_);
  if (step_end_) cudaEventDestroy(step_end_);
  pinned_pool_.reset();
  attention_workspace_.Reset();
  batch_buffer_.Reset();
  gemm_workspace_.Reset();
  if (stream_) cudaStreamDestroy(stream_);
}

void CudaBackend::MarkStepStart() { step_marked_ = cudaEventRecord(step_start_, stream_) == cudaSuccess; }

std::optional<double> CudaBackend::DeviceStepSeconds() {
  if (!step_marked_) return std::nullopt;
  step_marked_ = false;
  float ms = 0.0f;
  if (cudaEventRecord(step_end_, stream_) != cudaSuccess || cudaEventSynchronize(step_end_) != cudaSuccess ||
      cudaEventElapsedTime(&ms, step_start_, step_end_) != cudaSuccess) {
    cudaGetLastError();
    return std::nullopt;
  }
  return ms * 1e-3;
}

void CudaBackend::Fail(absl::Status status) {
  if (sticky_.ok()) sticky_ = std::move(status);
}

bool CudaBackend::Check(bool ok, const char* op, const char* what) {
  if (!ok) Fail(absl::InvalidArgumentError(std::string("cuda ") + op + ": " + what));
  return ok;
}

void CudaBackend::CheckLaunch(const char* op) {
  cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) Fail(CudaError(op, e));
}

// ---- memory -------------------------------------------------------------------------

absl::StatusOr<DeviceBuffer> CudaBackend::Allocate(size_t bytes) {
  void* p = nullptr;
  cudaError_t e = cudaMalloc(&p, std::max<size_t>(bytes, 256));
  if (e != cudaSuccess) {
    cudaGetLastError();
    return absl::ResourceExhaustedError("cuda: cannot allocate " + std::to_string(bytes) +
                                        " bytes: " + cudaGetErrorString(e));
  }
  return DeviceBuffer(p, bytes, &FreeDevice);
}

absl::Status CudaBackend::CopyToDevice(void* dst, const void* host_src, size_t bytes) {
  if (bytes == 0) return absl::OkStatus();
  CUDA_RETURN_IF_ERROR("copy to device", cudaMemcpyAsync(dst, host_src, bytes, cudaMemcpyHostToDevice, stream_));
  CUDA_RETURN_IF_ERROR("copy to device", cudaStreamSynchronize(stream_));
  pinned_pool_->OnSynchronized();
  return absl::OkStatus();
}

absl::StatusOr<std::shared_ptr<char>> CudaBackend::AllocateHostStaging(size_t bytes) {
  // Pooled: cudaMallocHost and cudaFreeHost (which waits for the whole device) on every
  // adapter load would stall the steps running meanwhile.
  return pinned_pool_->Acquire(bytes);
}

absl::Status CudaBackend::CopyToDeviceAsync(void* dst, const void* host_src, size_t bytes) {
  if (bytes == 0) return absl::OkStatus();
  CUDA_RETURN_IF_ERROR("copy to device", cudaMemcpyAsync(dst, host_src, bytes, cudaMemcpyHostToDevice, stream_));
  return absl::OkStatus();
}

absl::Status CudaBackend::CopyToHost(void* host_dst, const void* src, size_t bytes) {
  if (bytes == 0) return absl::OkStatus();
  CUDA_RETURN_IF_ERROR("copy to host", cudaMemcpyAsync(host_dst, src, bytes, cudaMemcpyDeviceToHost, stream_));
  CUDA_RETURN_IF_ERROR("copy to host", cudaStreamSynchronize(stream_));
  pinned_pool_->OnSynchronized();
  return absl::OkStatus();
}

absl::Status CudaBackend::Synchronize() {
  cudaError_t e = cudaStreamSynchronize(stream_);
  if (e != cudaSuccess) Fail(CudaError("synchronize", e));
  if (e == cudaSuccess) pinned_pool_->OnSynchronized();
  CheckLaunch("asynchronous error");
  absl::Status st = std::move(sticky_);
  sticky_ = absl::OkStatus();
  return st;
}

absl::Status CudaBackend::CheckKvCacheDType(DType dtype, int32_t head_dim) const {
  if (dtype == DType::kBF16) return absl::OkStatus();
  if (dtype == DType::kF8E4M3) {
    if (cuda::Fp8AttentionHeadDimSupported(head_dim)) return absl::OkStatus();
    return absl::UnimplementedError(
        absl::StrCat("an fp8 KV cache on CUDA needs head_dim 32, 64 or 128; this model's is ", head_dim));
  }
  return absl::UnimplementedError(absl::StrCat("the CUDA backend keeps its KV cache in bfloat16 or float8_e4m3, not ",
                                               std::string(DTypeName(dtype))));
}

size_t CudaBackend::FreeMemoryBytes() const {
  size_t free_bytes = 0, total = 0;
  if (cudaMemGetInfo(&free_bytes, &total) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return free_bytes;
}

absl::Status CudaBackend::EnsureDevice(DeviceBuffer& buf, size_t bytes, bool exact) {
  if (buf.data() != nullptr && buf.bytes() >= bytes) return absl::OkStatus();
  if (capturing_) {
    return absl::FailedPreconditionError("cuda: a workspace must grow during graph capture (warm up at this shape first)");
  }
  // Work already queued may still read the old buffer.
  CUDA_RETURN_IF_ERROR("synchronize", cudaStreamSynchronize(stream_));
  if (buf.data() != nullptr) retired_.push_back(std::move(buf));
  ASSIGN_OR_RETURN(buf, Allocate(exact ? bytes : bytes + bytes / 2));
  return absl::OkStatus();
}

absl::StatusOr<DeviceBatch> CudaBackend::UploadBatch(const BatchLayout& layout) {
  if (!layout.lora_slots.empty() && layout.lora_slots.size() != layout.token_ids.size())
    return absl::InvalidArgumentError("batch layout: lora_slots must have one entry per token");
  // Prefill attention runs over the sequences of more than one query token alone.
  std::vector<int32_t>& prefill_seqs = prefill_seqs_scratch_;
  prefill_seqs.clear();
  for (size_t q = 0; q + 1 < layout.query_start.size(); ++q) {
    if (layout.query_start[q + 1] - layout.query_start[q] > 1) prefill_seqs.push_back(static_cast<int32_t>(q));
  }
  const std::vector<int32_t>* arrays[] = {&layout.token_ids,    &layout.positions,    &layout.slot_mapping,
                                          &layout.query_start,  &layout.context_lens, &layout.block_tables,
                                          &layout.logits_rows,  &layout.lora_slots, &prefill_seqs};
  constexpr int kArrays = 9;
  size_t offsets[kArrays];
  size_t total = 0;
  for (int i = 0; i < kArrays; ++i) {
    offsets[i] = total;
    total += Pad16(arrays[i]->size() * sizeof(int32_t));
  }
  total = std::max<size_t>(total, 16);

  // The staging buffer written now was last copied from two uploads ago.
  const int s = staging_next_;
  staging_next_ ^= 1;
  CUDA_RETURN_IF_ERROR("staging wait", cudaEventSynchronize(staging_done_[s]));
  if (staging_bytes_[s] < total) {
    if (staging_[s]) cudaFreeHost(staging_[s]);
    staging_[s] = nullptr;
    staging_bytes_[s] = 0;
    CUDA_RETURN_IF_ERROR("pinned staging", cudaMallocHost(&staging_[s], total * 2));
    staging_bytes_[s] = total * 2;
  }
  char* host = static_cast<char*>(staging_[s]);
  for (int i = 0; i < kArrays; ++i) {
    if (!arrays[i]->empty()) std::memcpy(host + offsets[i], arrays[i]->data(), arrays[i]->size() * sizeof(int32_t));
  }
  RETURN_IF_ERROR(EnsureDevice(batch_buffer_, total));
  char* dev = static_cast<char*>(batch_buffer_.data());
  CUDA_RETURN_IF_ERROR("batch upload", cudaMemcpyAsync(dev, host, total, cudaMemcpyHostToDevice, stream_));
  CUDA_RETURN_IF_ERROR("batch upload", cudaEventRecord(staging_done_[s], stream_));

  auto at = [&](int i) { return reinterpret_cast<const int32_t*>(dev + offsets[i]); };
  DeviceBatch b;
  b.token_ids = at(0);
  b.positions = at(1);
  b.slot_mapping = at(2);
  b.query_start = at(3);
  b.context_lens = at(4);
  b.block_tables = at(5);
  b.logits_rows = at(6);
  b.lora_slots = layout.lora_slots.empty() ? nullptr : at(7);
  b.num_tokens = layout.num_tokens();
  b.num_seqs = layout.num_seqs();
  b.num_logits = static_cast<int32_t>(layout.logits_rows.size());
  b.max_blocks_per_seq = layout.max_blocks_per_seq;
  b.block_size = layout.block_size;
  b.max_query_len = layout.max_query_len();
  b.num_single_token_seqs = layout.num_single_token_seqs();
  b.max_context_len = layout.max_context_len();
  b.prefill_seqs = at(8);
  b.num_prefill_seqs = static_cast<int32_t>(prefill_seqs.size());
  return b;
}

// ---- ops ----------------------------------------------------------------------------

void CudaBackend::Embedding(const TensorView& table, const int32_t* ids, int32_t n, TensorView out) {
  if (!Check(IsFloat(table.dtype) && IsActivation(out.dtype), "embedding", "unsupported dtype") ||
      !Check(out.cols == table.cols && out.rows >= n, "embedding", "shape mismatch")) {
    return;
  }
  cuda::LaunchEmbedding(table.data, table.dtype, table.cols, ids, n, out.data, out.dtype, stream_);
  CheckLaunch("embedding");
}

void CudaBackend::RmsNorm(const TensorView& x, const TensorView& weight, float eps, TensorView out) {
  if (!Check(IsActivation(x.dtype) && IsActivation(out.dtype) && IsFloat(weight.dtype), "rmsnorm", "unsupported dtype") ||
      !Check(out.cols == x.cols && out.rows == x.rows && weight.numel() == x.cols, "rmsnorm", "shape mismatch")) {
    return;
  }
  cuda::LaunchRmsNorm(x.data, x.dtype, nullptr, x.dtype, weight.data, weight.dtype, eps, x.rows, x.cols, out.data,
                      out.dtype, stream_);
  CheckLaunch("rmsnorm");
}

void CudaBackend::AddRmsNorm(const TensorView& x, TensorView residual, const TensorView& weight, float eps,
                             TensorView out) {
  if (!Check(IsActivation(x.dtype) && IsActivation(residual.dtype) && IsActivation(out.dtype) && IsFloat(weight.dtype),
             "add_rmsnorm", "unsupported dtype") ||
      !Check(residual.numel() == x.numel() && out.numel() == x.numel() && weight.numel() == x.cols, "add_rmsnorm",
             "shape mismatch")) {
    return;
  }
  cuda::LaunchRmsNorm(x.data, x.dtype, residual.data, residual.dtype, weight.data, weight.dtype, eps, x.rows, x.cols,
                      out.data, out.dtype, stream_);
  CheckLaunch("add_rmsnorm");
}

void CudaBackend::Matmul(const TensorView& x, const LinearWeight& w, TensorView out) {
  if (w.quant != nullptr) return QuantizedMatmul(x, *w.quant, out);
  if (!Check(x.dtype == DType::kBF16 && w.dense.dtype == DType::kBF16, "matmul",
             "x and W must be bf16 (upload weights converted to bf16)") ||
      !Check(out.dtype == DType::kBF16 || out.dtype == DType::kF32, "matmul", "output must be bf16 or f32") ||
      !Check(w.dense.cols == x.cols && out.rows == x.rows && out.cols == w.dense.rows, "matmul", "shape mismatch")) {
    return;
  }
  if (x.rows == 0) return;
  if (options_.skinny_gemv && cuda::GemvSupported(x.rows, x.cols, x.data, w.dense.data)) {
    cuda::LaunchGemv(x.data, w.dense.data, out.data, out.dtype, x.rows, x.cols, w.dense.rows, stream_);
    CheckLaunch("gemv");
    return;
  }
  absl::Status st = gemm_->Run(x.data, w.dense.data, out.data, out.dtype, x.rows, x.cols, w.dense.rows, stream_);
  if (!st.ok()) Fail(std::move(st));
}

void CudaBackend::Rope(TensorView q, TensorView k, const int32_t* positions, const float* inv_freq,
                       int32_t head_dim) {
  if (!Check(head_dim > 0 && head_dim % 2 == 0 && q.cols % head_dim == 0 && k.cols % head_dim == 0, "rope",
             "head_dim must be even and divide the row") ||
      !Check(q.dtype == k.dtype && IsActivation(q.dtype), "rope", "unsupported dtype") ||
      !Check(q.rows == k.rows, "rope", "q and k rows differ")) {
    return;
  }
  cuda::LaunchRope(q.data, q.cols, k.data, k.cols, q.dtype, q.rows, positions, inv_freq, head_dim, stream_);
  CheckLaunch("rope");
}

void CudaBackend::SiluMul(const TensorView& gate_up, TensorView out) {
  if (!Check(IsActivation(gate_up.dtype) && IsActivation(out.dtype), "silu_mul", "unsupported dtype") ||
      !Check(gate_up.cols == 2 * out.cols && gate_up.rows == out.rows, "silu_mul", "shape mismatch")) {
    return;
  }
  cuda::LaunchSiluMul(gate_up.data, gate_up.dtype, out.data, out.dtype, out.rows, out.cols, stream_);
  CheckLaunch("silu_mul");
}

void CudaBackend::Add(const TensorView& x, TensorView out) {
  if (!Check(IsActivation(x.dtype) && IsActivation(out.dtype), "add", "unsupported dtype") ||
      !Check(x.numel() == out.numel(), "add", "shape mismatch")) {
    return;
  }
  cuda::LaunchAdd(x.data, x.dtype, out.data, out.dtype, out.numel(), stream_);
  CheckLaunch("add");
}

void CudaBackend::RopeStoreKv(const TensorView& qkv, TensorView q_out, const int32_t* positions,
                              const float* inv_freq, int32_t head_dim, const DeviceBatch& batch,
                              const KvLayerView& cache) {
  const int64_t width = static_cast<int64_t>(cache.num_kv_heads) * cache.head_dim;
  const bool fp8 = cache.dtype == DType::kF8E4M3;
  if (!Check(head_dim > 0 && head_dim % 2 == 0 && q_out.cols % head_dim == 0 && cache.head_dim == head_dim,
             "rope_store_kv", "head_dim must be even and divide the rows") ||
      !Check(head_dim <= 2 * cuda::kRopeMaxHalf, "rope_store_kv", "head_dim must be at most 256") ||
      !Check(qkv.dtype == q_out.dtype && IsActivation(qkv.dtype) && (IsActivation(cache.dtype) || fp8),
             "rope_store_kv", "unsupported dtype") ||
      !Check(!fp8 || (cache.k_scale != nullptr && cache.v_scale != nullptr), "rope_store_kv",
             "an fp8 cache needs its scales") ||
      !Check(qkv.cols == q_out.cols + 2 * width && qkv.rows == q_out.rows && batch.num_tokens <= qkv.rows,
             "rope_store_kv", "qkv must hold q, k and v of each token")) {
    return;
  }
  if (fp8) {
    cuda::LaunchRopeStoreKvFp8(qkv.data, qkv.dtype, q_out.data, q_out.cols / head_dim, cache.num_kv_heads, qkv.rows,
                               positions, inv_freq, head_dim, batch.slot_mapping, batch.num_tokens,
                               static_cast<uint8_t*>(cache.k), static_cast<uint8_t*>(cache.v), cache.k_scale,
                               cache.v_scale, stream_);
  } else {
    cuda::LaunchRopeStoreKv(qkv.data, qkv.dtype, q_out.data, q_out.cols / head_dim, cache.num_kv_heads, qkv.rows,
                            positions, inv_freq, head_dim, batch.slot_mapping, batch.num_tokens, cache.k, cache.v,
                            cache.dtype, stream_);
  }
  CheckLaunch("rope_store_kv");
}

void CudaBackend::StoreKv(const TensorView& k, const TensorView& v, const DeviceBatch& batch,
                          const KvLayerView& cache) {
  const int64_t width = static_cast<int64_t>(cache.num_kv_heads) * cache.head_dim;
  const bool fp8 = cache.dtype == DType::kF8E4M3;
  if (!Check(k.dtype == v.dtype && IsActivation(k.dtype) && (IsActivation(cache.dtype) || fp8), "store_kv",
             "unsupported dtype") ||
      !Check(!fp8 || (cache.head_dim % 2 == 0 && cache.head_dim <= 256 && cache.k_scale != nullptr &&
                      cache.v_scale != nullptr),
             "store_kv", "an fp8 cache needs an even head_dim <= 256 and its scales") ||
      !Check(k.cols == width && v.cols == width && k.rows >= batch.num_tokens && v.rows >= batch.num_tokens,
             "store_kv", "shape mismatch")) {
    return;
  }
  if (fp8) {
    cuda::LaunchStoreKvFp8(k.data, v.data, k.dtype, batch.slot_mapping, batch.num_tokens, cache.num_kv_heads,
                           cache.head_dim, static_cast<uint8_t*>(cache.k), static_cast<uint8_t*>(cache.v),
                           cache.k_scale, cache.v_scale, stream_);
  } else {
    cuda::LaunchStoreKv(k.data, v.data, k.dtype, batch.slot_mapping, batch.num_tokens, cache.k, cache.v, cache.dtype,
                        width, stream_);
  }
  CheckLaunch("store_kv");
}

void CudaBackend::PagedAttention(const TensorView& q, const DeviceBatch& batch, const KvLayerView& cache,
                                 const AttentionParams& p, TensorView out) {
  const bool fp8 = cache.dtype == DType::kF8E4M3;
  if (!Check(q.dtype == DType::kBF16 && out.dtype == DType::kBF16 && (cache.dtype == DType::kBF16 || fp8), "attention",
             "q and out must be bf16, the KV cache bf16 or float8_e4m3") ||
      !Check(!fp8 || (cuda::Fp8AttentionHeadDimSupported(p.head_dim) && cache.k_scale != nullptr &&
                      cache.v_scale != nullptr),
             "attention", "an fp8 KV cache needs head_dim 32, 64 or 128 and its scales") ||
      !Check(cuda::AttentionHeadDimSupported(p.head_dim), "attention", "head_dim must be 8, 16, 32, 64, 128 or 256") ||
      !Check(p.num_kv_heads > 0 && p.num_heads % p.num_kv_heads == 0 &&
                 p.num_heads / p.num_kv_heads <= cuda::kMaxAttentionGroup,
             "attention", "num_heads / num_kv_heads must be an integer of at most 16") ||
      !Check(p.num_kv_heads == cache.num_kv_heads && p.head_dim == cache.head_dim, "attention",
             "cache shape differs from the attention params") ||
      !Check(q.cols >= static_cast<int64_t>(p.num_heads) * p.head_dim && out.cols >= static_cast<int64_t>(p.num_heads) * p.head_dim &&
                 q.cols % 8 == 0 && out.cols % 8 == 0 && Aligned16(q.data) && Aligned16(out.data) &&
                 Aligned16(cache.k) && Aligned16(cache.v),
             "attention", "q/out rows must hold all heads and be 16-byte aligned")) {
    return;
  }
  if (batch.num_tokens == 0) return;
  cuda::AttentionArgs a = cuda::AttentionArgsOf(q, batch, cache, p, out);
  const bool decodes = batch.max_query_len <= 1 || batch.num_single_token_seqs > 0;
  const bool prefills = batch.max_query_len > 1;
  // A mixed step's prefill chunks go first, on the side stream (both kernels wait for what
  // the main stream enqueued before; the main stream waits for both before going on).
  const bool fork = decodes && prefills && side_stream_ != nullptr;
  if (fork) {
    cudaError_t e = cudaEventRecord(attention_fork_, stream_);
    if (e == cudaSuccess) e = cudaStreamWaitEvent(side_stream_, attention_fork_, 0);
    if (e != cudaSuccess) return Fail(CudaError("attention fork", e));
    LaunchPrefillPart(a, batch, side_stream_);
    e = cudaEventRecord(attention_join_, side_stream_);
    if (e != cudaSuccess) return Fail(CudaError("attention fork", e));
  }
  // Decodes take the split-K decode kernel, also beside prefill chunks in a mixed batch.
  if (decodes) {
    const PlanKey key{a.num_seqs, a.max_context_len, a.num_heads, a.num_kv_heads, a.head_dim, a.kv_fp8};
    if (!(key == plan_key_)) {
      plan_ = cuda::PlanDecodeAttention(a, num_sms_);
      plan_key_ = key;
    }
    const cuda::DecodePlan& plan = plan_;
    if (plan.workspace_bytes > 0) {
      const void* before = attention_workspace_.data();
      absl::Status st = EnsureDevice(attention_workspace_, plan.workspace_bytes);
      if (!st.ok()) return Fail(std::move(st));
      // The merge counters start at zero; every launch leaves them at zero.
      if (attention_workspace_.data() != before) {
        const cudaError_t e = cudaMemsetAsync(attention_workspace_.data(), 0, cuda::kDecodeCounterBytes, stream_);
        if (e != cudaSuccess) return Fail(CudaError("attention workspace", e));
      }
    }
    cuda::LaunchDecodeAttention(a, plan, static_cast<float*>(attention_workspace_.data()), stream_);
  }
  if (fork) {
    const cudaError_t e = cudaStreamWaitEvent(stream_, attention_join_, 0);
    if (e != cudaSuccess) return Fail(CudaError("attention join", e));
  } else if (prefills) {
    LaunchPrefillPart(a, batch, stream_);
  }
  CheckLaunch("attention");
}

void CudaBackend::LaunchPrefillPart(cuda::AttentionArgs a, const DeviceBatch& batch, cudaStream_t stream) {
  a.single_token_seqs_elsewhere = batch.num_single_token_seqs > 0;
  if (a.single_token_seqs_elsewhere && batch.prefill_seqs != nullptr) {
    a.prefill_seqs = batch.prefill_seqs;  // its grid covers the prefill chunks alone
    a.num_prefill_seqs = batch.num_prefill_seqs;
  }
  cuda::LaunchPrefillAttention(a, stream);
}

void CudaBackend::GatherRows(const TensorView& x, const int32_t* rows, int32_t count, TensorView out) {
  if (!Check(x.dtype == out.dtype && x.cols == out.cols && out.rows >= count, "gather_rows", "shape mismatch")) {
    return;
  }
  cuda::LaunchGatherRows(x.data, static_cast<size_t>(x.cols) * DTypeSize(x.dtype), rows, count, out.data, stream_);
  CheckLaunch("gather_rows");
}

// ---- sampling -----------------------------------------------------------------------

absl::Status CudaBackend::SampleTokens(const TensorView& logits, const std::vector<SamplingRow>& rows,
                                       std::vector<int32_t>* ids, std::vector<float>* logprobs,
                                       std::vector<RowStats>* stats) {
  RETURN_IF_ERROR(ValidateSampleTokensArgs(logits, rows));
  const size_t n = rows.size();
  ids->resize(n);
  logprobs->resize(n);
  if (n == 0) return absl::OkStatus();
  std::vector<cuda::SampleRowArgs> args(n);
  for (size_t i = 0; i < n; ++i) {
    const SamplingRow& r = rows[i];
    args[i] = {r.temperature, r.top_p, r.min_p, r.top_k, r.seed, r.step};
  }
  const size_t param_bytes = Pad16(n * sizeof(cuda::SampleRowArgs));
  RETURN_IF_ERROR(EnsureDevice(sample_buffer_, param_bytes + 2 * Pad16(n * 4) + Pad16(n * sizeof(RowStats))));
  char* dev = static_cast<char*>(sample_buffer_.data());
  auto* d_params = reinterpret_cast<cuda::SampleRowArgs*>(dev);
  auto* d_ids = reinterpret_cast<int32_t*>(dev + param_bytes);
  auto* d_lp = reinterpret_cast<float*>(dev + param_bytes + Pad16(n * 4));
  auto* d_stats = stats != nullptr ? reinterpret_cast<float*>(dev + param_bytes + 2 * Pad16(n * 4)) : nullptr;
  CUDA_RETURN_IF_ERROR("sample params",
                       cudaMemcpyAsync(d_params, args.data(), n * sizeof(args[0]), cudaMemcpyHostToDevice, stream_));
  cuda::LaunchSampleTokens(static_cast<const float*>(logits.data), logits.cols, static_cast<int32_t>(n),
                           static_cast<int32_t>(logits.cols), d_params, d_ids, d_lp, d_stats, stream_);
  CheckLaunch("sample_tokens");
  CUDA_RETURN_IF_ERROR("sample ids", cudaMemcpyAsync(ids->data(), d_ids, n * 4, cudaMemcpyDeviceToHost, stream_));
  CUDA_RETURN_IF_ERROR("sample logprobs",
                       cudaMemcpyAsync(logprobs->data(), d_lp, n * 4, cudaMemcpyDeviceToHost, stream_));
  if (stats != nullptr) {
    static_assert(sizeof(RowStats) == 2 * sizeof(float), "the kernel writes (entropy, top-1) float pairs");
    stats->resize(n);
    CUDA_RETURN_IF_ERROR("sample stats", cudaMemcpyAsync(stats->data(), d_stats, n * sizeof(RowStats),
                                                         cudaMemcpyDeviceToHost, stream_));
  }
  return Synchronize();
}

// ---- graphs -------------------------------------------------------------------------

absl::Status CudaBackend::BeginCapture() {
  if (capturing_) return absl::FailedPreconditionError("cuda: a graph capture is already open");
  RETURN_IF_ERROR(Synchronize());  // a capture must start from a clean error state
  // Thread-local: CUDA calls of other threads (none expected) do not join or break it.
  CUDA_RETURN_IF_ERROR("begin capture", cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal));
  capturing_ = true;
  return absl::OkStatus();
}

absl::StatusOr<int> CudaBackend::EndCapture() {
  if (!capturing_) return absl::FailedPreconditionError("cuda: no graph capture is open");
  capturing_ = false;
  cudaGraph_t graph = nullptr;
  const cudaError_t end = cudaStreamEndCapture(stream_, &graph);
  CheckLaunch("capture");
  absl::Status st = std::move(sticky_);
  sticky_ = absl::OkStatus();
  if (end != cudaSuccess && st.ok()) st = CudaError("end capture", end);
  if (!st.ok()) {
    if (graph) cudaGraphDestroy(graph);
    return st;
  }
  cudaGraphExec_t exec = nullptr;
  const cudaError_t inst = cudaGraphInstantiate(&exec, graph, 0);
  cudaGraphDestroy(graph);
  CUDA_RETURN_IF_ERROR("instantiate graph", inst);
  graphs_.push_back(exec);
  return static_cast<int>(graphs_.size()) - 1;
}

absl::Status CudaBackend::Replay(int graph) {
  if (graph < 0 || graph >= static_cast<int>(graphs_.size()) || graphs_[graph] == nullptr)
    return absl::InvalidArgumentError("cuda: no graph " + std::to_string(graph));
  CUDA_RETURN_IF_ERROR("graph launch", cudaGraphLaunch(graphs_[graph], stream_));
  return absl::OkStatus();
}

void CudaBackend::ClearGraphs() {
  if (graphs_.empty()) return;
  cudaStreamSynchronize(stream_);
  for (cudaGraphExec_t g : graphs_) {
    if (g) cudaGraphExecDestroy(g);
  }
  graphs_.clear();
}

}  // namespace tessera
