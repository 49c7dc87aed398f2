// KvCacheManager: block tables, prefix lookups with exact verification, and usage figures.
#include "runtime/kv/kv_cache_manager.h"

#include <algorithm>
#include <cassert>
#include <limits>
#include <utility>

#include "absl/strings/str_cat.h"

namespace tessera {

absl::Status KvCacheOptions::Validate() const {
  if (num_blocks <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("kv num_blocks must be > 0, got ", num_blocks));
  }
  if (block_size <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("kv block_size must be > 0, got ", block_size));
  }
  return absl::OkStatus();
}

absl::StatusOr<int> NumBlocksForBudget(int64_t bytes, int block_size, int num_layers,
                                       int num_kv_heads, int head_bytes) {
  if (bytes < 0 || block_size <= 0 || num_layers <= 0 || num_kv_heads <= 0 || head_bytes <= 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "kv budget needs positive shapes: bytes=", bytes, " block_size=", block_size,
        " num_layers=", num_layers, " num_kv_heads=", num_kv_heads, " head_bytes=", head_bytes));
  }
  const int64_t per_block = int64_t{2} * num_layers * num_kv_heads * head_bytes * block_size;
  const int64_t blocks = bytes / per_block;
  if (blocks < 1) {
    return absl::InvalidArgumentError(absl::StrCat("kv budget of ", bytes,
                                                   " bytes holds no block of ", per_block,
                                                   " bytes"));
  }
  return static_cast<int>(std::min<int64_t>(blocks, std::numeric_limits<int>::max()));
}

absl::StatusOr<std::unique_ptr<KvCacheManager>> KvCacheManager::Create(KvCacheOptions options) {
  if (absl::Status st = options.Validate(); !st.ok()) return st;
  BlockHashFn hasher = options.block_hasher;
  if (!hasher) hasher = KeyedBlockHasher(options.hash_key.value_or(SipKey::Random()));
  return std::unique_ptr<KvCacheManager>(new KvCacheManager(std::move(options), std::move(hasher)));
}

KvCacheManager::KvCacheManager(KvCacheOptions options, BlockHashFn hasher)
    : options_(std::move(options)),
      hasher_(std::move(hasher)),
      pool_(options_.num_blocks, options_.block_size) {}

int KvCacheManager::BlocksForTokens(int64_t num_tokens) const {
  return static_cast<int>((num_tokens + block_size() - 1) / block_size());
}

ComputedPrefix KvCacheManager::GetComputedBlocks(std::span<const int32_t> tokens,
                                                 uint64_t salt) const {
  ComputedPrefix prefix;
  prefix.num_query_tokens = static_cast<int>(tokens.size());
  if (!options_.enable_prefix_caching || tokens.empty()) return prefix;
  const int bs = block_size();
  const size_t max_blocks = (tokens.size() - 1) / bs;
  BlockHash parent;
  uint64_t parent_serial = 0;
  for (size_t i = 0; i < max_blocks; ++i) {
    std::span<const int32_t> block_tokens = tokens.subspan(i * bs, bs);
    const BlockHash name = hasher_(parent, salt, block_tokens);
    const int32_t block = pool_.Lookup(name);
    // The name only finds a candidate; identity is checked exactly so that a collision,
    // provoked or not, is a miss and never wrong KV.
    if (block < 0 || !pool_.Matches(block, salt, parent_serial, block_tokens)) break;
    parent = name;
    parent_serial = pool_.Serial(block);
    prefix.blocks.push_back(block);
    prefix.serials.push_back(parent_serial);
  }
  prefix.num_tokens = static_cast<int>(prefix.blocks.size()) * bs;
  prefix.last_name = parent;
  return prefix;
}

bool KvCacheManager::AllocateSlots(SeqId id, uint64_t salt, int num_computed_tokens,
                                   int num_new_tokens, const ComputedPrefix* prefix) {
  auto it = seqs_.find(id);
  const bool is_new = it == seqs_.end();
  const bool has_prefix = is_new && prefix != nullptr && !prefix->blocks.empty();
  int held = is_new ? 0 : static_cast<int>(it->second.table.size());
  int evictable_prefix = 0;
  if (has_prefix) {
    for (size_t i = 0; i < prefix->blocks.size(); ++i) {
      if (pool_.Serial(prefix->blocks[i]) != prefix->serials[i]) return false;
      if (pool_.RefCount(prefix->blocks[i]) == 0) ++evictable_prefix;
    }
    held += static_cast<int>(prefix->blocks.size());
  }
  const int needed =
      std::max(0, BlocksForTokens(int64_t{num_computed_tokens} + num_new_tokens) - held);
  // Free prefix blocks count as free until referenced; they must not pay for new ones.
  if (needed > pool_.NumFree() - evictable_prefix) return false;

  if (is_new) it = seqs_.emplace(id, SeqBlocks{}).first;
  SeqBlocks& seq = it->second;
  if (is_new) {
    seq.salt = salt;
    if (prefix != nullptr && options_.enable_prefix_caching) {
      ++prefix_queries_;
      prefix_query_tokens_ += prefix->num_query_tokens;
      prefix_hit_tokens_ += prefix->num_tokens;
    }
  }
  if (has_prefix) {
    for (size_t i = 0; i < prefix->blocks.size(); ++i) {
      pool_.Ref(prefix->blocks[i]);
      seq.table.push_back(prefix->blocks[i]);
    }
    seq.num_cached_blocks = static_cast<int>(prefix->blocks.size());
    seq.chain_name = prefix->last_name;
    seq.chain_serial = prefix->serials.back();
  }
  // Cannot fail: the prefix references above took exactly evictable_prefix free blocks.
  [[maybe_unused]] const bool allocated = pool_.Allocate(needed, &seq.table);
  assert(allocated);
  return true;
}

void KvCacheManager::MarkComputed(SeqId id, std::span<const int32_t> tokens,
                                  int num_computed_tokens) {
  if (!options_.enable_prefix_caching) return;
  auto it = seqs_.find(id);
  if (it == seqs_.end()) return;
  SeqBlocks& seq = it->second;
  const int bs = block_size();
  const int64_t computed = std::min<int64_t>(num_computed_tokens, tokens.size());
  const int full = static_cast<int>(
      std::min<int64_t>(computed / bs, static_cast<int64_t>(seq.table.size())));
  while (!seq.caching_stopped && seq.num_cached_blocks < full) {
    const int i = seq.num_cached_blocks;
    std::span<const int32_t> block_tokens = tokens.subspan(static_cast<size_t>(i) * bs, bs);
    const BlockHash name = hasher_(seq.chain_name, seq.salt, block_tokens);
    const int32_t existing = pool_.Lookup(name);
    if (existing < 0) {
      seq.chain_serial =
          pool_.Register(seq.table[i], name, seq.salt, seq.chain_serial, block_tokens);
    } else if (pool_.Matches(existing, seq.salt, seq.chain_serial, block_tokens)) {
      // Another sequence cached the same prefix first; continue its chain so that our
      // later blocks extend the shared prefix.
      seq.chain_serial = pool_.Serial(existing);
    } else {
      seq.caching_stopped = true;  // a different block owns this name
      break;
    }
    seq.chain_name = name;
    ++seq.num_cached_blocks;
  }
}

void KvCacheManager::Free(SeqId id) {
  auto it = seqs_.find(id);
  if (it == seqs_.end()) return;
  const std::vector<int32_t>& table = it->second.table;
  for (auto b = table.rbegin(); b != table.rend(); ++b) pool_.Unref(*b);
  seqs_.erase(it);
}

const std::vector<int32_t>& KvCacheManager::BlockTable(SeqId id) const {
  static const std::vector<int32_t> kEmpty;
  auto it = seqs_.find(id);
  return it == seqs_.end() ? kEmpty : it->second.table;
}

KvUsage KvCacheManager::Usage() const {
  KvUsage u;
  u.total_blocks = pool_.num_blocks();
  u.free_blocks = pool_.NumFree();
  u.used_blocks = u.total_blocks - u.free_blocks;
  u.cached_blocks = pool_.NumCached();
  u.evictions = pool_.NumEvictions();
  u.prefix_queries = prefix_queries_;
  u.prefix_query_tokens = prefix_query_tokens_;
  u.prefix_hit_tokens = prefix_hit_tokens_;
  u.prefix_hit_rate =
      prefix_query_tokens_ ? double(prefix_hit_tokens_) / double(prefix_query_tokens_) : 0.0;
  return u;
}

}  // namespace tessera
