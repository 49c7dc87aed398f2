// Paged KV-cache bookkeeping: per-sequence block tables over a BlockPool, with prefix
// caching. Hands out block ids only; the engine owns the device memory they index.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "runtime/kv/block_hash.h"
#include "runtime/kv/block_pool.h"

namespace tessera {

using SeqId = uint64_t;

struct KvCacheOptions {
  int num_blocks = 0;
  int block_size = 16;  // tokens per block
  bool enable_prefix_caching = true;
  // Key of the block hash; a fresh random key per manager when unset.
  std::optional<SipKey> hash_key;
  // Replaces the keyed hash; for tests that force name collisions. Null in production.
  BlockHashFn block_hasher;

  absl::Status Validate() const;
};

// Blocks that hold `bytes` of K and V for every layer, where one token's K (or V) of one
// kv head takes head_bytes (head_dim * dtype bytes, plus its scale in an FP8 cache):
// bytes / (2 * num_layers * num_kv_heads * head_bytes * block_size).
// Fails on non-positive shapes or a budget too small for one block.
absl::StatusOr<int> NumBlocksForBudget(int64_t bytes, int block_size, int num_layers,
                                       int num_kv_heads, int head_bytes);

// The longest cached prefix of a token list, from GetComputedBlocks. Holds no references:
// pass it to AllocateSlots before any other allocation, or look it up again.
struct ComputedPrefix {
  std::vector<int32_t> blocks;
  int num_tokens = 0;  // blocks.size() * block_size
  // Internal: lets AllocateSlots detect blocks evicted since the lookup and continue the
  // hash chain after the last block. Callers do not touch these.
  std::vector<uint64_t> serials;
  BlockHash last_name;
  int num_query_tokens = 0;
};

struct KvUsage {
  int total_blocks = 0;
  int used_blocks = 0;    // referenced by at least one sequence
  int free_blocks = 0;    // unreferenced (includes cached_free)
  int cached_blocks = 0;  // indexed in the prefix cache, referenced or not
  int64_t evictions = 0;  // cached blocks whose contents were dropped for reuse
  // Counted once per sequence admitted with a prefix lookup, in tokens.
  int64_t prefix_queries = 0;
  int64_t prefix_query_tokens = 0;
  int64_t prefix_hit_tokens = 0;
  double prefix_hit_rate = 0.0;  // hit tokens / query tokens
  double usage() const { return total_blocks ? double(used_blocks) / total_blocks : 0.0; }
};

// The KV manager's contract with the scheduler, three verbs plus caching:
//   GetComputedBlocks -> AllocateSlots (per step) -> MarkComputed (after the step runs)
//   -> Free (finished, aborted or preempted).
// A block table only grows while its sequence lives: AllocateSlots appends blocks, never
// reorders or drops them, so a table seen by the runner stays valid until Free. Blocks are
// cached only once MarkComputed reports their KV written, so a prefix hit never points at
// a block still being computed. Not thread-safe: call from the engine's step thread.
class KvCacheManager {
 public:
  static absl::StatusOr<std::unique_ptr<KvCacheManager>> Create(KvCacheOptions options);

  int block_size() const { return pool_.block_size(); }
  int num_blocks() const { return pool_.num_blocks(); }
  int NumFreeBlocks() const { return pool_.NumFree(); }
  int BlocksForTokens(int64_t num_tokens) const;

  // Longest run of cached full blocks that prefix `tokens` under `salt`. The block holding
  // the last token is never included, so at least one token is left to compute (the model
  // needs it to produce logits). Empty when prefix caching is off.
  ComputedPrefix GetComputedBlocks(std::span<const int32_t> tokens, uint64_t salt) const;

  // Makes sequence `id` hold num_computed_tokens + num_new_tokens tokens. On the first
  // call for `id`, `prefix` (from GetComputedBlocks) becomes the head of its table with a
  // reference on each block, and `salt` is remembered; later calls pass no prefix.
  // Returns false and changes nothing when the free blocks do not suffice or a prefix
  // block was evicted since the lookup.
  bool AllocateSlots(SeqId id, uint64_t salt, int num_computed_tokens, int num_new_tokens,
                     const ComputedPrefix* prefix = nullptr);

  // Reports that the KV of tokens[0, num_computed_tokens) of `id` is written. Full blocks
  // among them enter the prefix cache. `tokens` is the sequence's token list.
  void MarkComputed(SeqId id, std::span<const int32_t> tokens, int num_computed_tokens);

  // Drops the sequence's references, tail blocks first so that shared prefix heads are
  // the last to be evicted. Unknown ids are ignored.
  void Free(SeqId id);

  bool Contains(SeqId id) const { return seqs_.contains(id); }
  // Empty for an unknown id. The reference is invalidated by the next AllocateSlots or Free.
  const std::vector<int32_t>& BlockTable(SeqId id) const;
  int RefCount(int32_t block) const { return pool_.RefCount(block); }

  KvUsage Usage() const;

 private:
  struct SeqBlocks {
    std::vector<int32_t> table;
    uint64_t salt = 0;
    // Hash chain over the cached head of the table.
    int num_cached_blocks = 0;
    BlockHash chain_name;
    uint64_t chain_serial = 0;
    bool caching_stopped = false;  // a name collision ended the chain for this sequence
  };

  KvCacheManager(KvCacheOptions options, BlockHashFn hasher);

  KvCacheOptions options_;
  BlockHashFn hasher_;
  BlockPool pool_;
  absl::flat_hash_map<SeqId, SeqBlocks> seqs_;
  int64_t prefix_queries_ = 0;
  int64_t prefix_query_tokens_ = 0;
  int64_t prefix_hit_tokens_ = 0;
};

}  // namespace tessera
