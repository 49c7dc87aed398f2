// DecodeGraphRunner: bucket buffers, padding, lazy capture and replay of decode steps.
#include "runtime/model/decode_graph_runner.h"

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "runtime/common/status_macros.h"

namespace tessera {
namespace {

// Offsets (in int32 elements) of the arrays in a bucket's index buffer; each starts
// on a 16-byte boundary.
struct IndexLayout {
  int64_t tokens, positions, slots, query_start, context_lens, tables, logits_rows, lora_slots, total;
  IndexLayout(int64_t b, int64_t max_blocks) {
    auto pad = [](int64_t n) { return (n + 3) / 4 * 4; };
    tokens = 0;
    positions = tokens + pad(b);
    slots = positions + pad(b);
    query_start = slots + pad(b);
    context_lens = query_start + pad(b + 1);
    tables = context_lens + pad(b);
    logits_rows = tables + pad(b * max_blocks);
    lora_slots = logits_rows + pad(b);
    total = lora_slots + pad(b);
  }
};

}  // namespace

absl::Status DecodeGraphOptions::Validate() const {
  if (buckets.empty()) return absl::InvalidArgumentError("decode graphs need at least one batch-size bucket");
  for (size_t i = 0; i < buckets.size(); ++i) {
    if (buckets[i] <= 0 || (i > 0 && buckets[i] <= buckets[i - 1]))
      return absl::InvalidArgumentError("decode graph buckets must be positive and ascending");
  }
  if (max_model_len <= 0) return absl::InvalidArgumentError("decode graphs need a positive max_model_len");
  if (block_size <= 0) return absl::InvalidArgumentError("decode graphs need a positive block size");
  if (reserve_tokens < buckets.back() || reserve_logits < buckets.back())
    return absl::InvalidArgumentError("decode graphs: the reserved workspace must hold the largest bucket");
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<DecodeGraphRunner>> DecodeGraphRunner::Create(LlamaModel* model, PagedKvStorage* kv,
                                                                             const DecodeGraphOptions& options) {
  RETURN_IF_ERROR(options.Validate());
  Backend& b = model->backend();
  if (!b.SupportsGraphs()) return absl::FailedPreconditionError(absl::StrCat(b.name(), " has no graph capture"));
  if (model->rope_depends_on_batch())
    return absl::FailedPreconditionError("dynamic RoPE scaling depends on each batch: decode runs eagerly");
  auto r = std::unique_ptr<DecodeGraphRunner>(new DecodeGraphRunner());
  r->model_ = model;
  r->kv_ = kv;
  r->backend_ = &b;
  r->options_ = options;
  r->max_blocks_ = (options.max_model_len + options.block_size - 1) / options.block_size;
  RETURN_IF_ERROR(model->Reserve(options.reserve_tokens, options.reserve_logits, options.max_model_len));
  r->generation_ = model->workspace_generation();
  for (int32_t size : options.buckets) {
    Bucket bucket;
    bucket.size = size;
    const IndexLayout il(size, r->max_blocks_);
    ASSIGN_OR_RETURN(bucket.indices, b.Allocate(il.total * sizeof(int32_t)));
    const int32_t* base = static_cast<const int32_t*>(bucket.indices.data());
    DeviceBatch& db = bucket.batch;
    db.token_ids = base + il.tokens;
    db.positions = base + il.positions;
    db.slot_mapping = base + il.slots;
    db.query_start = base + il.query_start;
    db.context_lens = base + il.context_lens;
    db.block_tables = base + il.tables;
    db.logits_rows = base + il.logits_rows;
    db.num_tokens = db.num_seqs = db.num_logits = size;
    db.max_blocks_per_seq = r->max_blocks_;
    db.block_size = options.block_size;
    db.max_query_len = 1;
    db.num_single_token_seqs = size;
    db.max_context_len = options.max_model_len;  // the attention plan fits every context
    r->buckets_.push_back(std::move(bucket));
  }
  return r;
}

DecodeGraphRunner::~DecodeGraphRunner() { backend_->ClearGraphs(); }

int DecodeGraphRunner::num_graphs() const {
  int n = 0;
  for (const Bucket& b : buckets_) n += (b.graph >= 0) + (b.lora_graph >= 0);
  return n;
}

bool DecodeGraphRunner::Accepts(const BatchLayout& layout) const {
  const int32_t n = layout.num_seqs();
  if (n == 0 || n > buckets_.back().size || layout.num_tokens() != n) return false;
  if (layout.block_size != options_.block_size || layout.max_blocks_per_seq > max_blocks_) return false;
  if (layout.max_context_len() > options_.max_model_len) return false;
  if (!layout.lora_slots.empty() && (!model_->has_lora_tables() || static_cast<int32_t>(layout.lora_slots.size()) != n))
    return false;
  if (static_cast<int32_t>(layout.logits_rows.size()) != n) return false;
  for (int32_t i = 0; i < n; ++i) {
    if (layout.logits_rows[i] != i) return false;
  }
  return true;
}

void DecodeGraphRunner::Pack(const BatchLayout* layout, const Bucket& bucket, std::vector<int32_t>& host) const {
  const int32_t b = bucket.size;
  const IndexLayout il(b, max_blocks_);
  host.assign(il.total, 0);
  const int32_t n = layout ? layout->num_seqs() : 0;
  for (int32_t i = 0; i < b; ++i) {
    const bool real = i < n;
    host[il.tokens + i] = real ? layout->token_ids[i] : 0;
    host[il.positions + i] = real ? layout->positions[i] : 0;
    host[il.slots + i] = real ? layout->slot_mapping[i] : -1;  // padding writes no KV
    host[il.query_start + i] = i;
    host[il.context_lens + i] = real ? layout->context_lens[i] : 1;
    host[il.logits_rows + i] = i;
    host[il.lora_slots + i] = real && !layout->lora_slots.empty() ? layout->lora_slots[i] : -1;  // -1: base model
    if (real) {
      const int32_t* src = layout->block_tables.data() + static_cast<int64_t>(i) * layout->max_blocks_per_seq;
      std::copy(src, src + layout->max_blocks_per_seq, host.begin() + il.tables + static_cast<int64_t>(i) * max_blocks_);
    }
  }
  host[il.query_start + b] = b;
}

uint64_t DecodeGraphRunner::LoraGeneration() const {
  const LoraSlotTables* t = model_->lora_tables();
  return t != nullptr && t->active_generation != nullptr ? *t->active_generation : 0;
}

absl::Status DecodeGraphRunner::Capture(Bucket& bucket, bool lora) {
  // A padding-only batch: reads block 0, writes nothing, applies no adapter.
  Pack(nullptr, bucket, host_);
  RETURN_IF_ERROR(backend_->CopyToDevice(bucket.indices.data(), host_.data(), host_.size() * sizeof(int32_t)));
  DeviceBatch db = bucket.batch;
  if (lora) db.lora_slots = static_cast<const int32_t*>(bucket.indices.data()) + IndexLayout(bucket.size, max_blocks_).lora_slots;
  // The eager run sizes every workspace the forward needs at this shape, so that the
  // capture below allocates nothing.
  model_->EnqueueForward(db, *kv_);
  RETURN_IF_ERROR(backend_->Synchronize());
  RETURN_IF_ERROR(backend_->BeginCapture());
  bucket.logits = model_->EnqueueForward(db, *kv_);
  ASSIGN_OR_RETURN(const int graph, backend_->EndCapture());
  (lora ? bucket.lora_graph : bucket.graph) = graph;
  return absl::OkStatus();
}

absl::StatusOr<TensorView> DecodeGraphRunner::Run(const BatchLayout& layout) {
  if (!Accepts(layout)) return absl::InvalidArgumentError("decode graphs: the step is not a decode step that fits a bucket");
  const bool lora = !layout.lora_slots.empty();
  // The workspace moved (every graph points at freed memory), or the LoRA graphs skip a
  // projection that an adapter now adapts.
  if (model_->workspace_generation() != generation_ || (lora && LoraGeneration() != lora_generation_)) {
    backend_->ClearGraphs();
    for (Bucket& b : buckets_) b.graph = b.lora_graph = -1;
    generation_ = model_->workspace_generation();
    lora_generation_ = LoraGeneration();
  }
  const int32_t n = layout.num_seqs();
  Bucket& bucket = *std::find_if(buckets_.begin(), buckets_.end(), [n](const Bucket& b) { return b.size >= n; });
  if ((lora ? bucket.lora_graph : bucket.graph) < 0) RETURN_IF_ERROR(Capture(bucket, lora));
  Pack(&layout, bucket, host_);
  RETURN_IF_ERROR(backend_->CopyToDevice(bucket.indices.data(), host_.data(), host_.size() * sizeof(int32_t)));
  RETURN_IF_ERROR(backend_->Replay(lora ? bucket.lora_graph : bucket.graph));
  return bucket.logits;
}

}  // namespace tessera
