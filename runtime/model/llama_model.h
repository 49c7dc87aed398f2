// The Llama forward pass over one flattened batch (prefill chunks and decodes mixed),
// written against the Backend op table. Knows nothing about requests.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/backend.h"
#include "runtime/model/config.h"
#include "runtime/model/gptq_loader.h"
#include "runtime/model/weights.h"

namespace tessera {

struct ModelLoadOptions {
  // auto: CPU keeps the checkpoint's float dtype; CUDA uses bfloat16.
  std::string dtype = "auto";  // auto | bfloat16 | float16 | float32
  // q, k and v as one product against their stacked weight (false: three products, the
  // layout the checkpoint has; same results).
  bool stack_qkv = true;
  absl::Status Validate() const;
};

// Device memory for the paged KV cache of every layer.
class PagedKvStorage {
 public:
  // dtype: the backend's activation dtype when unset; kF8E4M3 adds a scale per (slot,
  // kv head) (Backend::CheckKvCacheDType says which the backend takes).
  static absl::StatusOr<std::unique_ptr<PagedKvStorage>> Create(Backend& backend, const ModelConfig& config,
                                                                int32_t num_blocks, int32_t block_size,
                                                                std::optional<DType> dtype = std::nullopt);
  const KvLayerView& layer(int i) const { return layers_[i]; }
  int32_t num_blocks() const { return num_blocks_; }
  int32_t block_size() const { return block_size_; }
  DType dtype() const { return dtype_; }
  // Bytes one block takes over all layers (K and V, and their scales for kF8E4M3).
  static size_t BytesPerBlock(const ModelConfig& config, int32_t block_size, DType dtype);

 private:
  std::vector<DeviceBuffer> buffers_;
  std::vector<KvLayerView> layers_;
  int32_t num_blocks_ = 0;
  int32_t block_size_ = 16;
  DType dtype_ = DType::kF32;
};

class LlamaModel {
 public:
  // Loads config.json and the safetensors weights of a Hugging Face directory onto `backend`.
  static absl::StatusOr<std::unique_ptr<LlamaModel>> Load(const std::string& dir, Backend* backend,
                                                          const ModelLoadOptions& options = {});
  ~LlamaModel();

  const ModelConfig& config() const { return config_; }
  Backend& backend() { return *backend_; }
  DType weight_dtype() const { return weight_dtype_; }
  // Whether layer i runs q, k and v as one product (ModelLoadOptions::stack_qkv).
  bool layer_uses_stacked_qkv(size_t i) const { return layers_.at(i).fused_qkv; }
  size_t weight_bytes() const { return weight_bytes_; }

  // Runs the batch, writing this step's K/V into `kv`, and returns float logits
  // [layout.logits_rows.size(), vocab] on the host.
  absl::StatusOr<std::vector<float>> Forward(const BatchLayout& layout, PagedKvStorage& kv);
  // LoRA slot tables used for batches with lora_slots (owned by the adapter registry;
  // null detaches).
  void SetLoraTables(const LoraSlotTables* tables) { lora_tables_ = tables; }
  const LoraSlotTables* lora_tables() const { return lora_tables_; }
  bool has_lora_tables() const { return lora_tables_ != nullptr; }
  // The same forward, leaving the f32 logits [layout.logits_rows.size(), vocab] on the
  // device (valid until the next forward).
  absl::StatusOr<TensorView> ForwardLogits(const BatchLayout& layout, PagedKvStorage& kv);

  // The pieces of a forward, for callers that replay it as a captured graph:
  // Reserve sizes the workspace for up to `tokens` tokens and `logits` logits rows and
  // readies the rotary table for contexts up to `max_context_len`; EnqueueForward then
  // only enqueues ops on an uploaded batch (no allocation, no copy, no synchronisation)
  // and returns the device logits view. Errors surface at the backend's Synchronize.
  absl::Status Reserve(int64_t tokens, int64_t logits, int64_t max_context_len);
  TensorView EnqueueForward(const DeviceBatch& db, PagedKvStorage& kv);
  // Changes whenever Reserve reallocates the workspace (graphs captured before are stale).
  int64_t workspace_generation() const { return workspace_generation_; }
  // Dynamic RoPE scaling recomputes the rotary table per batch, so no graph can hold it.
  bool rope_depends_on_batch() const { return config_.rope_scaling.type == RopeScaling::Type::kDynamic; }

  struct Layer {
    TensorView input_norm, post_norm;  // F32 [hidden]
    // q, k and v stacked into one product (qkv) when possible; else the three apart.
    LinearWeight qkv, q, k, v, o, gate_up, down;
    bool fused_qkv = false;
  };

 private:
  LlamaModel() = default;
  absl::Status LoadWeights(const WeightStore& store, bool stack_qkv);
  // GPTQ checkpoints: q/k/v stacked into qkv (when their input orders agree), o and down
  // as they are, gate and up stacked into gate_up.
  absl::Status LoadGptqLayer(const WeightStore& store, const std::string& prefix, bool stack_qkv, Layer& layer);
  LinearWeight AddQuantized(std::unique_ptr<GptqDeviceWeight> w);
  absl::StatusOr<TensorView> Upload(const TensorInfo& t, DType dtype);
  // The tensors stacked along their rows (output features), converted to dtype.
  absl::StatusOr<TensorView> UploadConcatRows(const std::vector<const TensorInfo*>& parts, DType dtype);
  absl::Status EnsureWorkspace(int64_t tokens, int64_t logits);

  ModelConfig config_;
  Backend* backend_ = nullptr;
  DType weight_dtype_ = DType::kF32;
  size_t weight_bytes_ = 0;
  std::vector<DeviceBuffer> owned_;
  std::optional<GptqConfig> gptq_;  // set when the directory holds a GPTQ checkpoint
  std::vector<std::unique_ptr<GptqDeviceWeight>> quantized_;
  std::vector<const QuantizedWeight*> quantized_views_;  // quantized_'s weights, for Reserve
  std::unique_ptr<WeightStore> store_;  // kept alive: CPU weights may point into its mmap
  TensorView embed_, final_norm_, lm_head_;
  std::vector<Layer> layers_;
  DeviceBuffer inv_freq_;
  int64_t inv_freq_len_ = -1;
  const LoraSlotTables* lora_tables_ = nullptr;

  // Activation workspace, grown on demand.
  int64_t ws_tokens_ = 0, ws_logits_ = 0;
  int64_t workspace_generation_ = 0;
  DeviceBuffer x_, residual_, h_, qkv_, q_, k_, v_, attn_, gate_up_, act_, hidden_last_, logits_;
};

}  // namespace tessera
