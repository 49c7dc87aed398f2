// Decode steps (one query token per sequence) replayed as captured device graphs, one
// per batch-size bucket: the batch is padded to the bucket (padding tokens write no KV:
// slot -1), its index arrays are copied into the bucket's fixed buffer, and the graph
// of the whole forward is replayed. The attention plan is sized for max_model_len, so a
// graph serves every context length. Steps with LoRA adapters replay a second graph per
// bucket that also reads each token's adapter slot from the bucket's buffer (the slot
// tables never move, so uploads between replays are seen; the graphs are captured again
// when a projection gets its first adapter, since they skip projections no adapter
// touches). Prefill and mixed steps stay eager.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/backend.h"
#include "runtime/model/llama_model.h"

namespace tessera {

struct DecodeGraphOptions {
  std::vector<int32_t> buckets = {1, 2, 4, 8, 16, 32, 64, 128, 256};  // ascending
  int32_t max_model_len = 0;
  int32_t block_size = 16;
  // Workspace reserved up front so that eager steps never reallocate under the graphs.
  int64_t reserve_tokens = 2048;
  int64_t reserve_logits = 256;
  absl::Status Validate() const;
};

class DecodeGraphRunner {
 public:
  // Fails when the backend cannot capture graphs or the model's forward depends on the
  // batch beyond its index arrays (dynamic RoPE).
  static absl::StatusOr<std::unique_ptr<DecodeGraphRunner>> Create(LlamaModel* model, PagedKvStorage* kv,
                                                                   const DecodeGraphOptions& options);
  ~DecodeGraphRunner();

  // True for a decode step that fits a bucket and wants the logits of every sequence
  // (and, when it has adapter slots, the model has LoRA slot tables).
  bool Accepts(const BatchLayout& layout) const;
  // Runs an accepted step (capturing its bucket's graph on first use) and returns the
  // device logits: row i belongs to sequence i; rows past the batch are padding.
  absl::StatusOr<TensorView> Run(const BatchLayout& layout);
  int num_graphs() const;

 private:
  struct Bucket {
    int32_t size = 0;
    DeviceBuffer indices;  // token ids, positions, slots, query_start, context lens, block tables, logits
                           // rows, LoRA slots
    DeviceBatch batch;     // points into `indices`; lora_slots is null (base-model graph)
    int graph = -1;        // base model only
    int lora_graph = -1;   // with the LoRA ops
    TensorView logits;
  };
  DecodeGraphRunner() = default;
  // Index arrays of `layout` padded to the bucket, in the bucket buffer's order.
  void Pack(const BatchLayout* layout, const Bucket& bucket, std::vector<int32_t>& host) const;
  absl::Status Capture(Bucket& bucket, bool lora);
  uint64_t LoraGeneration() const;

  LlamaModel* model_ = nullptr;
  PagedKvStorage* kv_ = nullptr;
  Backend* backend_ = nullptr;
  DecodeGraphOptions options_;
  int32_t max_blocks_ = 0;
  int64_t generation_ = 0;
  uint64_t lora_generation_ = 0;  // the slot tables' active_generation the LoRA graphs saw
  std::vector<Bucket> buckets_;
  std::vector<int32_t> host_;
};

}  // namespace tessera
