// Names of full KV blocks for the prefix cache: a keyed 128-bit hash (SipHash-2-4-128)
// chained from the parent block's name, so one name stands for the whole prefix.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <utility>

namespace tessera {

struct BlockHash {
  uint64_t lo = 0;
  uint64_t hi = 0;

  friend bool operator==(const BlockHash&, const BlockHash&) = default;
  template <typename H>
  friend H AbslHashValue(H h, const BlockHash& b) {
    return H::combine(std::move(h), b.lo, b.hi);
  }
};

// 128-bit SipHash key. A per-process random key keeps clients from crafting prompts
// whose block names collide with someone else's prefix.
struct SipKey {
  uint64_t k0 = 0;
  uint64_t k1 = 0;

  static SipKey Random();
};

// SipHash-2-4 with 128-bit output (the reference algorithm; `lo` holds output bytes 0..7
// little-endian, `hi` bytes 8..15).
BlockHash SipHash128(const SipKey& key, const uint8_t* data, size_t len);

// Names one full block given its parent's name (zero for the first block), the cache salt
// (model + adapter identity) and the block's token ids.
using BlockHashFn = std::function<BlockHash(const BlockHash& parent, uint64_t salt,
                                            std::span<const int32_t> tokens)>;

// The production hasher: SipHash128 over (parent.lo, parent.hi, salt, tokens...).
BlockHashFn KeyedBlockHasher(const SipKey& key);

}  // namespace tessera
