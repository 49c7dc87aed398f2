// The backend contract: a small table of ops that the Llama forward is written against.
// kernels/cpu is the reference implementation; kernels/cuda must match its semantics.
//
// Conventions
// - Activations are 2-D row-major [rows, cols] in the backend's activation dtype
//   (float32 on CPU, bfloat16 on CUDA). Weights may be F32/F16/BF16 (or quantized).
// - Linear layers follow PyTorch: W is [out_features, in_features], y = x · Wᵀ.
// - The KV cache of one layer is two arrays [num_blocks, block_size, num_kv_heads,
//   head_dim]; a token's slot is block_id * block_size + offset.
// - Per-step index arrays (token ids, positions, slots, block tables) are uploaded once
//   per step with UploadBatch and shared by every layer (plan once, run per layer).
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "runtime/common/dtype.h"

namespace tessera {

enum class DeviceKind { kCpu, kCuda };

// A non-owning 2-D view of memory that lives on a backend's device.
struct TensorView {
  void* data = nullptr;
  DType dtype = DType::kF32;
  int64_t rows = 0;
  int64_t cols = 0;

  int64_t numel() const { return rows * cols; }
  size_t bytes() const { return static_cast<size_t>(numel()) * DTypeSize(dtype); }
  // Rows [begin, begin + count) of this view.
  TensorView RowSlice(int64_t begin, int64_t count) const {
    TensorView v = *this;
    v.data = static_cast<char*>(data) + begin * cols * DTypeSize(dtype);
    v.rows = count;
    return v;
  }
};

// GPTQ/AutoGPTQ-layout int4 (or 2/3/8-bit) weight, already on the device. Each qweight
// column is a little-endian bit stream of `bits`-wide fields down the input features (32/bits
// per int32; 3-bit fields straddle words), each qzeros row one along the output features;
// word counts round up (quant/gptq/FORMAT.md). Groups are contiguous runs of group_size
// inputs (load-time reordering of act-order checkpoints); `perm` then holds the input
// permutation (reordered row j is input feature perm[j]), or is null when none was needed.
struct QuantizedWeight {
  int bits = 4;
  int group_size = 128;
  int64_t in_features = 0;
  int64_t out_features = 0;
  const int32_t* qweight = nullptr;  // [ceil(in_features * bits / 32), out_features]
  const int32_t* qzeros = nullptr;   // [num_groups, ceil(out_features * bits / 32)], stored zero
  const uint16_t* scales = nullptr;  // [num_groups, out_features], fp16
  const int32_t* perm = nullptr;     // [in_features] or null
  bool zeros_minus_one = false;      // AutoGPTQ v1 convention: stored zero = zero - 1
  // The same weight in a backend's own layout (Backend::PackQuantizedWeight), which its
  // kernels read instead of the arrays above; those may then be null. Null: none.
  const void* packed = nullptr;
};

// A linear layer's weight: dense, or quantized.
struct LinearWeight {
  TensorView dense;              // [out_features, in_features] when not quantized
  const QuantizedWeight* quant = nullptr;
  int64_t out_features() const { return quant ? quant->out_features : dense.rows; }
  int64_t in_features() const { return quant ? quant->in_features : dense.cols; }
};

// Host-side description of one step's flattened batch: prefill chunks and decodes mixed.
// Sequences are contiguous runs of tokens: sequence s owns token rows
// [query_start[s], query_start[s+1]).
struct BatchLayout {
  std::vector<int32_t> token_ids;     // [num_tokens]
  std::vector<int32_t> positions;     // [num_tokens] absolute position in its sequence
  std::vector<int32_t> slot_mapping;  // [num_tokens] where the token's K/V is stored
  std::vector<int32_t> query_start;   // [num_seqs + 1]
  std::vector<int32_t> context_lens;  // [num_seqs] KV length after this step
  std::vector<int32_t> block_tables;  // [num_seqs * max_blocks_per_seq], row-major
  int32_t max_blocks_per_seq = 0;
  int32_t block_size = 16;
  std::vector<int32_t> logits_rows;   // token rows whose logits are wanted
  // LoRA adapter slot of each token (-1: base model); empty when no token uses an adapter.
  std::vector<int32_t> lora_slots;

  int32_t num_tokens() const { return static_cast<int32_t>(token_ids.size()); }
  int32_t num_seqs() const { return static_cast<int32_t>(context_lens.size()); }
  int32_t num_single_token_seqs() const {
    int32_t n = 0;
    for (size_t s = 0; s + 1 < query_start.size(); ++s) n += query_start[s + 1] - query_start[s] == 1;
    return n;
  }
  int32_t max_query_len() const {
    int32_t m = 0;
    for (size_t s = 0; s + 1 < query_start.size(); ++s) m = std::max(m, query_start[s + 1] - query_start[s]);
    return m;
  }
  int32_t max_context_len() const {
    int32_t m = 0;
    for (int32_t c : context_lens) m = std::max(m, c);
    return m;
  }
};

// Device-side pointers to a BatchLayout's arrays (valid until the next UploadBatch).
struct DeviceBatch {
  const int32_t* token_ids = nullptr;
  const int32_t* positions = nullptr;
  const int32_t* slot_mapping = nullptr;
  const int32_t* query_start = nullptr;
  const int32_t* context_lens = nullptr;
  const int32_t* block_tables = nullptr;
  const int32_t* logits_rows = nullptr;
  const int32_t* lora_slots = nullptr;  // null when the layout has no lora_slots
  int32_t num_tokens = 0;
  int32_t num_seqs = 0;
  int32_t num_logits = 0;
  int32_t max_blocks_per_seq = 0;
  int32_t block_size = 16;
  int32_t max_query_len = 0;
  int32_t max_context_len = 0;
  int32_t num_single_token_seqs = 0;  // sequences with one query token (decodes)
  // The sequences of more than one query token (prefill chunks), in batch order: set by
  // backends that launch prefill attention over them alone (null otherwise).
  const int32_t* prefill_seqs = nullptr;
  int32_t num_prefill_seqs = 0;
};

// One layer's paged KV cache.
struct KvLayerView {
  void* k = nullptr;  // [num_blocks, block_size, num_kv_heads, head_dim]
  void* v = nullptr;
  DType dtype = DType::kF32;
  int32_t num_blocks = 0;
  int32_t block_size = 16;
  int32_t num_kv_heads = 0;
  int32_t head_dim = 0;
  // kF8E4M3 caches only: the scale of each (slot, kv head), [num_blocks * block_size,
  // num_kv_heads] f32; element d of a head is E4M3ToF32(q[d]) * scale (QuantizeKvHeadE4M3).
  float* k_scale = nullptr;
  float* v_scale = nullptr;
};

struct AttentionParams {
  int32_t num_heads = 0;
  int32_t num_kv_heads = 0;
  int32_t head_dim = 0;
  float scale = 1.0f;  // usually 1/sqrt(head_dim)
};

// The projections a LoRA adapter may modify (gate and up share the fused gate_up matmul).
enum LoraTarget : int { kLoraQ, kLoraK, kLoraV, kLoraO, kLoraGate, kLoraUp, kLoraDown, kNumLoraTargets };

// Device slot tables of one (layer, target): the A and B of every adapter slot. Rank r of a
// slot occupies the first r rows of its A and Bᵀ blocks, so a slot upload is one contiguous
// copy per matrix; the adapter's scale is already folded into Bᵀ.
struct LoraModuleSlots {
  const void* a = nullptr;         // [num_slots, max_rank, in_features]
  const void* b_t = nullptr;       // [num_slots, max_rank, out_features] = (scale · B)ᵀ
  const int32_t* ranks = nullptr;  // [num_slots] on the device; 0: the slot leaves this module alone
  int64_t in_features = 0;
  int64_t out_features = 0;
  // Host flag kept by the tables' owner: nonzero once some slot has had rank > 0 here.
  // Backends may skip a module whose flag is zero (null: always run it).
  const uint8_t* active = nullptr;
};

// Every slot table of a model, owned by the adapter registry.
struct LoraSlotTables {
  const LoraModuleSlots* modules = nullptr;  // host array [num_layers * kNumLoraTargets]
  int32_t num_layers = 0;
  int32_t num_slots = 0;
  int32_t max_rank = 0;
  DType dtype = DType::kF32;  // the backend's activation dtype
  // Host counter bumped whenever a module's `active` flag changes: a captured graph that
  // skipped a module's LoRA op is stale after it changes (null: never changes).
  const uint64_t* active_generation = nullptr;
  const LoraModuleSlots& module(int layer, int target) const { return modules[layer * kNumLoraTargets + target]; }
};

// One step's LoRA inputs: the slot of each token and the tables.
struct LoraBatch {
  const int32_t* token_slots = nullptr;  // [num_tokens] on the device (DeviceBatch::lora_slots)
  int32_t num_tokens = 0;
  const LoraSlotTables* tables = nullptr;
};

// One row's parameters for Backend::SampleTokens (a subset of SamplingParams: the
// features that need only the row's logits). The draw is a function of (seed, step)
// alone, so a request replayed after preemption samples the same tokens.
struct SamplingRow {
  float temperature = 0.0f;  // < 1e-5: greedy (argmax, first index on ties)
  int32_t top_k = 0;         // <= 0 or >= vocab: off
  float top_p = 1.0f;        // (0, 1]
  float min_p = 0.0f;        // [0, 1]
  uint64_t seed = 0;
  uint64_t step = 0;         // index of the token being sampled in its sequence
};

// Statistics of one row's distribution softmax(logits) (before temperature and cuts), as
// drift monitoring reads them: entropy in nats and the top-1 probability.
struct RowStats {
  float entropy = 0.0f;
  float top1_prob = 0.0f;
};

// Memory owned by a backend. Movable, frees on destruction.
class DeviceBuffer {
 public:
  using Deleter = void (*)(void*);
  DeviceBuffer() = default;
  DeviceBuffer(void* data, size_t bytes, Deleter deleter) : data_(data), bytes_(bytes), deleter_(deleter) {}
  DeviceBuffer(DeviceBuffer&& o) noexcept { *this = std::move(o); }
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept {
    if (this != &o) {
      Reset();
      data_ = o.data_;
      bytes_ = o.bytes_;
      deleter_ = o.deleter_;
      o.data_ = nullptr;
      o.bytes_ = 0;
    }
    return *this;
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  ~DeviceBuffer() { Reset(); }

  void* data() const { return data_; }
  size_t bytes() const { return bytes_; }
  TensorView View(DType dtype, int64_t rows, int64_t cols) const { return {data_, dtype, rows, cols}; }
  void Reset() {
    if (data_ && deleter_) deleter_(data_);
    data_ = nullptr;
    bytes_ = 0;
  }

 private:
  void* data_ = nullptr;
  size_t bytes_ = 0;
  Deleter deleter_ = nullptr;
};

class Backend {
 public:
  virtual ~Backend() = default;

  virtual DeviceKind kind() const = 0;
  virtual std::string name() const = 0;
  virtual DType activation_dtype() const = 0;
  // Whether StoreKv/RopeStoreKv/PagedAttention take a KV cache of `dtype` for heads of
  // `head_dim`: the activation dtype always does where attention runs at all; kF8E4M3
  // where the backend has the kernels. The base version accepts the activation dtype only.
  virtual absl::Status CheckKvCacheDType(DType dtype, int32_t head_dim) const;

  // ---- memory -------------------------------------------------------------------
  virtual absl::StatusOr<DeviceBuffer> Allocate(size_t bytes) = 0;
  virtual absl::Status CopyToDevice(void* dst, const void* host_src, size_t bytes) = 0;
  virtual absl::Status CopyToHost(void* host_dst, const void* src, size_t bytes) = 0;
  // Host memory that uploads read fastest and asynchronously (page-locked on CUDA, plain
  // heap memory elsewhere), freed when the last reference goes. Callable from any thread.
  virtual absl::StatusOr<std::shared_ptr<char>> AllocateHostStaging(size_t bytes);
  // Enqueues a copy from AllocateHostStaging memory behind the work already enqueued and
  // returns without waiting: the memory must stay unchanged until the next Synchronize.
  // The default copies synchronously.
  virtual absl::Status CopyToDeviceAsync(void* dst, const void* host_src, size_t bytes) {
    return CopyToDevice(dst, host_src, bytes);
  }
  virtual absl::Status Synchronize() = 0;
  // Bytes of device memory still free (CPU: a large number).
  virtual size_t FreeMemoryBytes() const = 0;
  // Uploads a per-step index layout; the returned pointers stay valid until the next call.
  virtual absl::StatusOr<DeviceBatch> UploadBatch(const BatchLayout& layout) = 0;
  // Builds, once at load, this backend's own layout of a quantized weight from `host` (whose
  // pointers refer to host memory) and sets dev->packed to it. Returns the buffer holding it,
  // or an empty buffer when the backend reads the AutoGPTQ arrays for this weight (the
  // default; also for shapes its fast kernels do not take), which must then be uploaded.
  virtual absl::StatusOr<DeviceBuffer> PackQuantizedWeight(const QuantizedWeight& host, QuantizedWeight* dev) {
    (void)host;
    (void)dev;
    return DeviceBuffer();
  }

  // Takes now (before the KV cache is sized from the memory left) whatever workspace
  // products of these quantized weights with up to `rows` rows will need.
  virtual absl::Status ReserveQuantizedMatmul(const std::vector<const QuantizedWeight*>& weights, int64_t rows) {
    (void)weights;
    (void)rows;
    return absl::OkStatus();
  }

  // ---- step timing -----------------------------------------------------------------
  // Devices that queue work time an engine step on the device: MarkStepStart before the
  // step's first command, DeviceStepSeconds after its last (it waits for that command) gives
  // the device time between the two, gaps in the queue included. Backends that run each op
  // before returning answer nullopt.
  virtual void MarkStepStart() {}
  virtual std::optional<double> DeviceStepSeconds() { return std::nullopt; }

  // ---- sampling and graph capture ------------------------------------------------
  // Samples one token per row of f32 `logits` [rows, vocab] on the device and returns
  // the ids and each chosen token's log-probability under the raw logits (log-softmax,
  // before temperature), copying only those back. Keeps the tokens whose logit ranks in
  // the top_k, then the smallest set of highest-probability tokens (at temperature T,
  // renormalised over the top-k) holding top_p of the mass, then those with probability
  // >= min_p * the highest; ties at a cut are all kept. The draw is Gumbel-max with
  // noise from Philox keyed by (seed, step, token id). With `stats`, also each row's
  // RowStats. Synchronises.
  virtual absl::Status SampleTokens(const TensorView& logits, const std::vector<SamplingRow>& rows,
                                    std::vector<int32_t>* ids, std::vector<float>* logprobs,
                                    std::vector<RowStats>* stats = nullptr) = 0;
  // Graph capture: the ops enqueued between BeginCapture and EndCapture are recorded,
  // not run, and Replay runs them again with the same arguments (pointers included).
  // Backends without graphs answer false / Unimplemented and are run eagerly.
  virtual bool SupportsGraphs() const { return false; }
  virtual absl::Status BeginCapture() { return absl::UnimplementedError(name() + " has no graph capture"); }
  // Returns a handle for Replay.
  virtual absl::StatusOr<int> EndCapture() { return absl::UnimplementedError(name() + " has no graph capture"); }
  virtual absl::Status Replay(int graph) { return absl::UnimplementedError(name() + " has no graph capture"); }
  // Frees every captured graph.
  virtual void ClearGraphs() {}

  // ---- ops (asynchronous on devices that queue work; errors surface at Synchronize) --
  // out[i] = table[ids[i]]; table [vocab, d] in any float dtype.
  virtual void Embedding(const TensorView& table, const int32_t* ids, int32_t n, TensorView out) = 0;
  // out = x / rms(x) * weight, per row.
  virtual void RmsNorm(const TensorView& x, const TensorView& weight, float eps, TensorView out) = 0;
  // residual += x; out = RmsNorm(residual).
  virtual void AddRmsNorm(const TensorView& x, TensorView residual, const TensorView& weight,
                          float eps, TensorView out) = 0;
  // out = x · Wᵀ with f32 accumulation. out may be F32 whatever the activation dtype
  // (the logits head asks for F32).
  virtual void Matmul(const TensorView& x, const LinearWeight& w, TensorView out) = 0;
  // Rotary embedding in place (rotate_half / NeoX layout) over q [n, Hq*D] and k [n, Hk*D];
  // angle of pair i at position p is p * inv_freq[i]; inv_freq is [D/2] f32 on the device.
  virtual void Rope(TensorView q, TensorView k, const int32_t* positions, const float* inv_freq,
                    int32_t head_dim) = 0;
  // gate_up [n, 2F] holds gate then up; out [n, F] = silu(gate) * up.
  virtual void SiluMul(const TensorView& gate_up, TensorView out) = 0;
  // The MLP's down projection on SiluMul's output: out = (silu(gate) * up) · Wᵀ, gate_up as
  // SiluMul takes it, with the activations rounded to the activation dtype as SiluMul
  // rounds them (a backend that fuses the two gives the same result). act [n, F] is scratch
  // whose contents are unspecified afterwards (a fused backend may not write it). The base
  // version is SiluMul(gate_up, act) then Matmul(act, w, out).
  virtual void SiluMulMatmul(const TensorView& gate_up, TensorView act, const LinearWeight& w, TensorView out);
  // out += x (same shape).
  virtual void Add(const TensorView& x, TensorView out) = 0;
  // Writes this step's k, v [n, Hk*D] into the cache at batch.slot_mapping.
  virtual void StoreKv(const TensorView& k, const TensorView& v, const DeviceBatch& batch,
                       const KvLayerView& cache) = 0;
  // The fused-projection form of Rope + StoreKv: qkv [n, (Hq + 2·Hk)·D] holds each token's
  // q, k and v side by side (one matmul against the stacked weight). Writes rotated q into
  // q_out [n, Hq·D] and stores rotated k and v into the cache at batch.slot_mapping; qkv is
  // left as it was. Same rounding as Rope then StoreKv.
  virtual void RopeStoreKv(const TensorView& qkv, TensorView q_out, const int32_t* positions,
                           const float* inv_freq, int32_t head_dim, const DeviceBatch& batch,
                           const KvLayerView& cache) = 0;
  // Causal attention of each query token over its sequence's cached keys at positions
  // 0..positions[t] (GQA: head h reads kv head h / (Hq/Hk)). q, out: [n, Hq*D].
  virtual void PagedAttention(const TensorView& q, const DeviceBatch& batch, const KvLayerView& cache,
                              const AttentionParams& params, TensorView out) = 0;
  // out[j] = x[rows[j]] for j < count (gathers rows for the logits head).
  virtual void GatherRows(const TensorView& x, const int32_t* rows, int32_t count, TensorView out) = 0;
  // Multi-adapter LoRA: for each token t with slot s = lora.token_slots[t] >= 0,
  //   out[t, col_offset + j] += ((x[t] · A_sᵀ) · (scale_s · B_s)ᵀ)[j]   for j < out_features
  // over the (layer, target) tables; tokens with slot -1 are left untouched. col_offset
  // lets gate and up update their halves of the fused gate_up output. The base version
  // records Unimplemented (backends without a LoRA kernel).
  virtual void LoraApply(const TensorView& x, const LoraBatch& lora, int layer, int target, TensorView out,
                         int64_t col_offset);
  // LoraApply for several targets that read the same x (q/k/v, or gate/up) at once: a
  // backend may run them in one launch. The base version applies them one by one.
  struct LoraTarget {
    int target;
    TensorView out;
    int64_t col_offset;
  };
  virtual void LoraApplyGroup(const TensorView& x, const LoraBatch& lora, int layer,
                              std::span<const LoraTarget> targets);

  // The first error recorded by an op since the last call (ops return void); every
  // backend's Synchronize reports it too.
  absl::Status TakeOpError();

 protected:
  void RecordOpError(absl::Status status);

 private:
  std::mutex op_error_mu_;
  absl::Status op_error_;
};

// Backend factory: "cpu", "cuda" or "auto" (CUDA when a device is present).
absl::StatusOr<std::unique_ptr<Backend>> CreateBackend(const std::string& device);
bool CudaBackendAvailable();

}  // namespace tessera
