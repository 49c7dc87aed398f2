// SipHash-2-4-128 (Aumasson & Bernstein) and the chained block hasher built on it.
#include "runtime/kv/block_hash.h"

#include <bit>
#include <cstring>
#include <random>

#include "absl/container/inlined_vector.h"

namespace tessera {
namespace {

static_assert(std::endian::native == std::endian::little,
              "SipHash word loads assume a little-endian host");

struct SipState {
  uint64_t v0, v1, v2, v3;

  void Round() {
    v0 += v1;
    v1 = std::rotl(v1, 13);
    v1 ^= v0;
    v0 = std::rotl(v0, 32);
    v2 += v3;
    v3 = std::rotl(v3, 16);
    v3 ^= v2;
    v0 += v3;
    v3 = std::rotl(v3, 21);
    v3 ^= v0;
    v2 += v1;
    v1 = std::rotl(v1, 17);
    v1 ^= v2;
    v2 = std::rotl(v2, 32);
  }

  void Compress(uint64_t m) {
    v3 ^= m;
    Round();
    Round();
    v0 ^= m;
  }
};

}  // namespace

SipKey SipKey::Random() {
  std::random_device rd;
  auto next64 = [&rd] {
    return (static_cast<uint64_t>(rd()) << 32) ^ static_cast<uint64_t>(rd());
  };
  SipKey key;
  key.k0 = next64();
  key.k1 = next64();
  return key;
}

BlockHash SipHash128(const SipKey& key, const uint8_t* data, size_t len) {
  SipState s{0x736f6d6570736575ULL ^ key.k0, 0x646f72616e646f6dULL ^ key.k1,
             0x6c7967656e657261ULL ^ key.k0, 0x7465646279746573ULL ^ key.k1};
  s.v1 ^= 0xee;  // 128-bit output variant
  const size_t full = len - len % 8;
  for (size_t i = 0; i < full; i += 8) {
    uint64_t m;
    std::memcpy(&m, data + i, 8);
    s.Compress(m);
  }
  uint64_t last = static_cast<uint64_t>(len) << 56;
  for (size_t i = full; i < len; ++i) last |= static_cast<uint64_t>(data[i]) << (8 * (i - full));
  s.Compress(last);

  s.v2 ^= 0xee;
  for (int i = 0; i < 4; ++i) s.Round();
  BlockHash out;
  out.lo = s.v0 ^ s.v1 ^ s.v2 ^ s.v3;
  s.v1 ^= 0xdd;
  for (int i = 0; i < 4; ++i) s.Round();
  out.hi = s.v0 ^ s.v1 ^ s.v2 ^ s.v3;
  return out;
}

BlockHashFn KeyedBlockHasher(const SipKey& key) {
  return [key](const BlockHash& parent, uint64_t salt, std::span<const int32_t> tokens) {
    // Blocks of up to 64 tokens hash without touching the heap.
    absl::InlinedVector<uint8_t, 24 + 4 * 64> buf(24 + 4 * tokens.size());
    std::memcpy(buf.data(), &parent.lo, 8);
    std::memcpy(buf.data() + 8, &parent.hi, 8);
    std::memcpy(buf.data() + 16, &salt, 8);
    if (!tokens.empty()) std::memcpy(buf.data() + 24, tokens.data(), 4 * tokens.size());
    return SipHash128(key, buf.data(), buf.size());
  };
}

}  // namespace tessera
