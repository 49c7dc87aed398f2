// Fixed pool of KV blocks: reference counts, an LRU queue of unreferenced blocks, and the
// prefix-cache index (block name -> block) whose entries die when their block is evicted.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "runtime/kv/block_hash.h"

namespace tessera {

// Not thread-safe; owned and driven by KvCacheManager.
class BlockPool {
 public:
  BlockPool(int num_blocks, int block_size);

  int num_blocks() const { return num_blocks_; }
  int block_size() const { return block_size_; }
  // Blocks with no reference, including cached ones that are kept for reuse until evicted.
  int NumFree() const { return num_free_; }
  // Blocks whose contents are indexed in the prefix cache (referenced or not).
  int NumCached() const { return static_cast<int>(index_.size()); }
  int64_t NumEvictions() const { return num_evictions_; }
  int RefCount(int32_t block) const { return blocks_[block].ref_count; }

  // Takes `n` blocks from the least recently used end of the free queue, evicting any
  // cached contents, and appends them to `out` with one reference each. Returns false and
  // changes nothing when fewer than `n` blocks are free.
  bool Allocate(int n, std::vector<int32_t>* out);
  // Adds a reference; an unreferenced block leaves the free queue so it cannot be evicted.
  void Ref(int32_t block);
  // Drops a reference; at zero the block joins the most recently used end of the free
  // queue, keeping its cached contents until it is evicted.
  void Unref(int32_t block);

  // Prefix-cache index. A block's identity is (salt, the identity of its parent, its tokens);
  // the parent's identity is its registration serial, unique for the life of the process,
  // so a match found by name is exact even when two names collide.
  int32_t Lookup(const BlockHash& name) const;
  bool Matches(int32_t block, uint64_t salt, uint64_t parent_serial,
               std::span<const int32_t> tokens) const;
  // Indexes a referenced, uncached block under `name`; the name must be unused. Returns the
  // block's serial (never 0).
  uint64_t Register(int32_t block, const BlockHash& name, uint64_t salt, uint64_t parent_serial,
                    std::span<const int32_t> tokens);
  uint64_t Serial(int32_t block) const { return blocks_[block].serial; }

 private:
  struct Block {
    int32_t ref_count = 0;
    uint64_t serial = 0;  // 0: not cached
    uint64_t parent_serial = 0;
    uint64_t salt = 0;
    BlockHash name;
  };

  void PushBack(int32_t block);
  void Remove(int32_t block);
  void Evict(int32_t block);

  int num_blocks_;
  int block_size_;
  std::vector<Block> blocks_;
  std::vector<int32_t> tokens_;  // block_size_ token ids per cached block
  // Free-queue links, one slot per block plus a sentinel at index num_blocks_:
  // next_[sentinel] is the least recently used free block, prev_[sentinel] the most recent.
  std::vector<int32_t> prev_;
  std::vector<int32_t> next_;
  int num_free_ = 0;
  uint64_t next_serial_ = 1;
  int64_t num_evictions_ = 0;
  absl::flat_hash_map<BlockHash, int32_t> index_;
};

}  // namespace tessera
