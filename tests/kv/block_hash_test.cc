// Block names: SipHash-2-4-128 against the reference vectors, and what a name depends on.
#include "runtime/kv/block_hash.h"

#include <array>
#include <cstring>
#include <vector>

#include "gtest/gtest.h"

namespace tessera {
namespace {

// Key 00 01 .. 0f, as in the reference implementation's vectors_sip128.
SipKey ReferenceKey() { return SipKey{0x0706050403020100ULL, 0x0f0e0d0c0b0a0908ULL}; }

std::array<uint8_t, 16> Bytes(const BlockHash& h) {
  std::array<uint8_t, 16> out;
  std::memcpy(out.data(), &h.lo, 8);
  std::memcpy(out.data() + 8, &h.hi, 8);
  return out;
}

TEST(SipHash128, MatchesReferenceVectors) {
  struct Vector {
    size_t len;
    std::array<uint8_t, 16> want;
  };
  // From vectors_sip128 in github.com/veorq/SipHash; the message is 00 01 .. (len-1).
  const Vector vectors[] = {
      {0, {0xa3, 0x81, 0x7f, 0x04, 0xba, 0x25, 0xa8, 0xe6, 0x6d, 0xf6, 0x72, 0x14, 0xc7, 0x55,
           0x02, 0x93}},
      {1, {0xda, 0x87, 0xc1, 0xd8, 0x6b, 0x99, 0xaf, 0x44, 0x34, 0x76, 0x59, 0x11, 0x9b, 0x22,
           0xfc, 0x45}},
      {15, {0x54, 0x93, 0xe9, 0x99, 0x33, 0xb0, 0xa8, 0x11, 0x7e, 0x08, 0xec, 0x0f, 0x97, 0xcf,
            0xc3, 0xd9}},
      {63, {0x51, 0x50, 0xd1, 0x77, 0x2f, 0x50, 0x83, 0x4a, 0x50, 0x3e, 0x06, 0x9a, 0x97, 0x3f,
            0xbd, 0x7c}},
  };
  std::vector<uint8_t> msg(64);
  for (size_t i = 0; i < msg.size(); ++i) msg[i] = static_cast<uint8_t>(i);
  for (const Vector& v : vectors) {
    EXPECT_EQ(Bytes(SipHash128(ReferenceKey(), msg.data(), v.len)), v.want) << "len " << v.len;
  }
}

TEST(KeyedBlockHasher, NameDependsOnParentSaltAndTokens) {
  BlockHashFn hash = KeyedBlockHasher(ReferenceKey());
  const std::vector<int32_t> tokens = {1, 2, 3, 4};
  const BlockHash base = hash(BlockHash{}, 7, tokens);
  EXPECT_EQ(hash(BlockHash{}, 7, tokens), base);
  EXPECT_NE(hash(BlockHash{1, 0}, 7, tokens), base);
  EXPECT_NE(hash(BlockHash{}, 8, tokens), base);
  EXPECT_NE(hash(BlockHash{}, 7, std::vector<int32_t>{1, 2, 3, 5}), base);
  EXPECT_NE(hash(BlockHash{}, 7, std::vector<int32_t>{2, 1, 3, 4}), base);
}

TEST(KeyedBlockHasher, DifferentKeysNameTheSameBlockDifferently) {
  const std::vector<int32_t> tokens = {10, 20, 30};
  const BlockHash a = KeyedBlockHasher(SipKey{1, 2})(BlockHash{}, 0, tokens);
  const BlockHash b = KeyedBlockHasher(SipKey{1, 3})(BlockHash{}, 0, tokens);
  EXPECT_NE(a, b);
}

}  // namespace
}  // namespace tessera
