// BlockPool: the free queue is an intrusive doubly linked list over block ids, so taking a
// cached block back out of it on a prefix hit is O(1).
#include "runtime/kv/block_pool.h"

#include <algorithm>
#include <cassert>

namespace tessera {

BlockPool::BlockPool(int num_blocks, int block_size)
    : num_blocks_(num_blocks),
      block_size_(block_size),
      blocks_(num_blocks),
      tokens_(static_cast<size_t>(num_blocks) * block_size),
      prev_(num_blocks + 1, num_blocks),
      next_(num_blocks + 1, num_blocks) {
  for (int32_t b = 0; b < num_blocks; ++b) PushBack(b);
}

void BlockPool::PushBack(int32_t block) {
  const int32_t last = prev_[num_blocks_];
  prev_[block] = last;
  next_[block] = num_blocks_;
  next_[last] = block;
  prev_[num_blocks_] = block;
  ++num_free_;
}

void BlockPool::Remove(int32_t block) {
  next_[prev_[block]] = next_[block];
  prev_[next_[block]] = prev_[block];
  --num_free_;
}

void BlockPool::Evict(int32_t block) {
  Block& b = blocks_[block];
  if (b.serial == 0) return;
  index_.erase(b.name);
  b.serial = 0;
  ++num_evictions_;
}

bool BlockPool::Allocate(int n, std::vector<int32_t>* out) {
  if (n > num_free_) return false;
  for (int i = 0; i < n; ++i) {
    const int32_t block = next_[num_blocks_];
    Remove(block);
    Evict(block);
    blocks_[block].ref_count = 1;
    out->push_back(block);
  }
  return true;
}

void BlockPool::Ref(int32_t block) {
  Block& b = blocks_[block];
  if (b.ref_count == 0) Remove(block);
  ++b.ref_count;
}

void BlockPool::Unref(int32_t block) {
  Block& b = blocks_[block];
  assert(b.ref_count > 0);
  if (--b.ref_count == 0) PushBack(block);
}

int32_t BlockPool::Lookup(const BlockHash& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? -1 : it->second;
}

bool BlockPool::Matches(int32_t block, uint64_t salt, uint64_t parent_serial,
                        std::span<const int32_t> tokens) const {
  const Block& b = blocks_[block];
  if (b.serial == 0 || b.salt != salt || b.parent_serial != parent_serial) return false;
  if (tokens.size() != static_cast<size_t>(block_size_)) return false;
  const int32_t* stored = tokens_.data() + static_cast<size_t>(block) * block_size_;
  return std::equal(tokens.begin(), tokens.end(), stored);
}

uint64_t BlockPool::Register(int32_t block, const BlockHash& name, uint64_t salt,
                             uint64_t parent_serial, std::span<const int32_t> tokens) {
  Block& b = blocks_[block];
  assert(b.serial == 0 && b.ref_count > 0);
  assert(tokens.size() == static_cast<size_t>(block_size_));
  b.serial = next_serial_++;
  b.parent_serial = parent_serial;
  b.salt = salt;
  b.name = name;
  std::copy(tokens.begin(), tokens.end(),
            tokens_.begin() + static_cast<ptrdiff_t>(block) * block_size_);
  index_.emplace(name, block);
  return b.serial;
}

}  // namespace tessera
