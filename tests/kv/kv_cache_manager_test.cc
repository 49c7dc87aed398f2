// KvCacheManager: block accounting, prefix reuse, salts, eviction order, collision safety.
#include "runtime/kv/kv_cache_manager.h"

#include <memory>
#include <numeric>
#include <vector>

#include "gtest/gtest.h"

namespace tessera {
namespace {

constexpr int kBlockSize = 4;

std::unique_ptr<KvCacheManager> Make(int num_blocks, BlockHashFn hasher = nullptr) {
  KvCacheOptions o;
  o.num_blocks = num_blocks;
  o.block_size = kBlockSize;
  o.block_hasher = std::move(hasher);
  auto kv = KvCacheManager::Create(o);
  EXPECT_TRUE(kv.ok()) << kv.status();
  return std::move(kv).value();
}

std::vector<int32_t> Range(int n, int32_t first = 100) {
  std::vector<int32_t> t(n);
  std::iota(t.begin(), t.end(), first);
  return t;
}

// Admits `tokens` as sequence `id` with a prefix lookup and marks the whole list computed,
// as the scheduler does when a prompt's prefill completes. Returns the prefix hit.
ComputedPrefix Prefill(KvCacheManager& kv, SeqId id, const std::vector<int32_t>& tokens,
                       uint64_t salt = 0) {
  ComputedPrefix prefix = kv.GetComputedBlocks(tokens, salt);
  const int n = static_cast<int>(tokens.size());
  EXPECT_TRUE(kv.AllocateSlots(id, salt, prefix.num_tokens, n - prefix.num_tokens, &prefix));
  kv.MarkComputed(id, tokens, n);
  return prefix;
}

TEST(KvCacheManager, AllocateAndFreeReturnAllBlocks) {
  auto kv = Make(10);
  ASSERT_TRUE(kv->AllocateSlots(1, 0, 0, 9));   // 3 blocks
  ASSERT_TRUE(kv->AllocateSlots(2, 0, 0, 16));  // 4 blocks
  EXPECT_EQ(kv->BlockTable(1).size(), 3u);
  EXPECT_EQ(kv->BlockTable(2).size(), 4u);
  EXPECT_EQ(kv->Usage().used_blocks, 7);
  kv->Free(1);
  kv->Free(2);
  const KvUsage u = kv->Usage();
  EXPECT_EQ(u.used_blocks, 0);
  EXPECT_EQ(u.free_blocks, 10);
  EXPECT_TRUE(kv->BlockTable(1).empty());
}

TEST(KvCacheManager, TableGrowsOnlyWhenTheLastBlockFills) {
  auto kv = Make(10);
  ASSERT_TRUE(kv->AllocateSlots(1, 0, 0, 5));  // 2 blocks, 3 free slots left
  const std::vector<int32_t> before = kv->BlockTable(1);
  for (int computed = 5; computed < 8; ++computed) {
    ASSERT_TRUE(kv->AllocateSlots(1, 0, computed, 1));
    EXPECT_EQ(kv->BlockTable(1), before);
  }
  ASSERT_TRUE(kv->AllocateSlots(1, 0, 8, 1));
  ASSERT_EQ(kv->BlockTable(1).size(), 3u);
  // Existing entries never move: the runner may hold the old table.
  EXPECT_EQ(kv->BlockTable(1)[0], before[0]);
  EXPECT_EQ(kv->BlockTable(1)[1], before[1]);
}

TEST(KvCacheManager, AllocateSlotsFailureChangesNothing) {
  auto kv = Make(4);
  ASSERT_TRUE(kv->AllocateSlots(1, 0, 0, 8));  // 2 blocks
  const std::vector<int32_t> table = kv->BlockTable(1);
  EXPECT_FALSE(kv->AllocateSlots(1, 0, 8, 9));  // needs 3 more, 2 free
  EXPECT_EQ(kv->BlockTable(1), table);
  EXPECT_FALSE(kv->AllocateSlots(2, 0, 0, 12));  // new sequence, 3 blocks
  EXPECT_FALSE(kv->Contains(2));
  EXPECT_EQ(kv->Usage().free_blocks, 2);
}

TEST(KvCacheManager, PrefixHitReusesBlocksAndCountsHits) {
  auto kv = Make(16);
  const std::vector<int32_t> prompt = Range(10);  // 2 full blocks + 2 tokens
  Prefill(*kv, 1, prompt);
  std::vector<int32_t> other = Range(8);
  other.push_back(7);
  other.push_back(7);
  other.push_back(7);  // same first 2 blocks, different tail
  const ComputedPrefix hit = Prefill(*kv, 2, other);
  EXPECT_EQ(hit.num_tokens, 8);
  ASSERT_EQ(kv->BlockTable(2).size(), 3u);
  EXPECT_EQ(kv->BlockTable(2)[0], kv->BlockTable(1)[0]);
  EXPECT_EQ(kv->BlockTable(2)[1], kv->BlockTable(1)[1]);
  EXPECT_NE(kv->BlockTable(2)[2], kv->BlockTable(1)[2]);
  EXPECT_EQ(kv->RefCount(kv->BlockTable(1)[0]), 2);
  EXPECT_EQ(kv->RefCount(kv->BlockTable(1)[2]), 1);

  const KvUsage u = kv->Usage();
  EXPECT_EQ(u.prefix_queries, 2);
  EXPECT_EQ(u.prefix_query_tokens, 10 + 11);
  EXPECT_EQ(u.prefix_hit_tokens, 8);
  EXPECT_DOUBLE_EQ(u.prefix_hit_rate, 8.0 / 21.0);
  EXPECT_EQ(u.used_blocks, 3 + 1);
}

TEST(KvCacheManager, SharedBlocksStayInUseUntilTheLastSharerFrees) {
  auto kv = Make(8);
  const std::vector<int32_t> prompt = Range(9);
  Prefill(*kv, 1, prompt);
  Prefill(*kv, 2, prompt);
  const int32_t shared = kv->BlockTable(1)[0];
  ASSERT_EQ(kv->BlockTable(2)[0], shared);
  kv->Free(1);
  EXPECT_EQ(kv->RefCount(shared), 1);
  kv->Free(2);
  EXPECT_EQ(kv->RefCount(shared), 0);
  EXPECT_EQ(kv->Usage().used_blocks, 0);
}

TEST(KvCacheManager, BlockHoldingTheLastPromptTokenIsNeverComputed) {
  auto kv = Make(8);
  const std::vector<int32_t> prompt = Range(8);  // exactly 2 full blocks
  Prefill(*kv, 1, prompt);
  const ComputedPrefix hit = kv->GetComputedBlocks(prompt, 0);
  EXPECT_EQ(hit.num_tokens, 4);  // the second block would leave nothing to compute
  std::vector<int32_t> longer = prompt;
  longer.push_back(1);
  EXPECT_EQ(kv->GetComputedBlocks(longer, 0).num_tokens, 8);
}

TEST(KvCacheManager, DifferentSaltNeverShares) {
  auto kv = Make(8);
  const std::vector<int32_t> prompt = Range(9);
  Prefill(*kv, 1, prompt, /*salt=*/11);
  EXPECT_EQ(kv->GetComputedBlocks(prompt, 12).num_tokens, 0);
  EXPECT_EQ(kv->GetComputedBlocks(prompt, 11).num_tokens, 8);
}

TEST(KvCacheManager, FreedCachedBlocksStayReusableUntilEvicted) {
  auto kv = Make(4);
  const std::vector<int32_t> prompt = Range(9);  // 3 blocks, 2 of them cacheable
  Prefill(*kv, 1, prompt);
  kv->Free(1);
  EXPECT_EQ(kv->Usage().cached_blocks, 2);
  EXPECT_EQ(kv->Usage().free_blocks, 4);
  EXPECT_EQ(kv->GetComputedBlocks(prompt, 0).num_tokens, 8);

  // Taking every block evicts the cached contents.
  ASSERT_TRUE(kv->AllocateSlots(2, 0, 0, 16));
  EXPECT_EQ(kv->Usage().cached_blocks, 0);
  EXPECT_EQ(kv->GetComputedBlocks(prompt, 0).num_tokens, 0);
}

TEST(KvCacheManager, EvictsTheLeastRecentlyFreedPrefixFirst) {
  auto kv = Make(4);
  const std::vector<int32_t> a = Range(5, 100);  // 1 cacheable block each
  const std::vector<int32_t> b = Range(5, 200);
  Prefill(*kv, 1, a);
  Prefill(*kv, 2, b);
  kv->Free(1);  // a's blocks are older in the free queue
  kv->Free(2);
  ASSERT_TRUE(kv->AllocateSlots(3, 0, 0, 8));  // takes 2 blocks: a's tail and a's head
  EXPECT_EQ(kv->GetComputedBlocks(a, 0).num_tokens, 0);
  EXPECT_EQ(kv->GetComputedBlocks(b, 0).num_tokens, 4);
}

TEST(KvCacheManager, FreeingTailFirstKeepsTheSharedHeadLongest) {
  auto kv = Make(3);
  const std::vector<int32_t> prompt = Range(9);  // blocks: head, middle, tail (partial)
  Prefill(*kv, 1, prompt);
  kv->Free(1);
  ASSERT_TRUE(kv->AllocateSlots(2, 0, 0, 4));  // evicts exactly one block
  EXPECT_EQ(kv->GetComputedBlocks(prompt, 0).num_tokens, 8);
  ASSERT_TRUE(kv->AllocateSlots(3, 0, 0, 4));  // then the middle
  EXPECT_EQ(kv->GetComputedBlocks(prompt, 0).num_tokens, 4);
}

TEST(KvCacheManager, PrefixBlocksInTheFreeQueueDoNotPayForNewBlocks) {
  auto kv = Make(3);
  const std::vector<int32_t> prompt = Range(9);
  Prefill(*kv, 1, prompt);
  kv->Free(1);  // 3 free, 2 of them hold the prefix
  std::vector<int32_t> longer = Range(13);  // 4 blocks needed; 2 cached + 2 new > 3 total
  ComputedPrefix hit = kv->GetComputedBlocks(longer, 0);
  ASSERT_EQ(hit.num_tokens, 8);
  EXPECT_FALSE(kv->AllocateSlots(2, 0, 8, 5, &hit));
  EXPECT_EQ(kv->Usage().cached_blocks, 2);  // the failed call evicted nothing
  EXPECT_EQ(kv->GetComputedBlocks(prompt, 0).num_tokens, 8);
}

TEST(KvCacheManager, PrefixEvictedAfterLookupIsRefused) {
  auto kv = Make(3);
  const std::vector<int32_t> prompt = Range(9);
  Prefill(*kv, 1, prompt);
  kv->Free(1);
  ComputedPrefix stale = kv->GetComputedBlocks(prompt, 0);
  ASSERT_EQ(stale.num_tokens, 8);
  ASSERT_TRUE(kv->AllocateSlots(2, 0, 0, 12));  // evicts everything
  kv->Free(2);
  EXPECT_FALSE(kv->AllocateSlots(3, 0, 8, 1, &stale));
  EXPECT_FALSE(kv->Contains(3));
}

BlockHashFn ConstantHasher() {
  return [](const BlockHash&, uint64_t, std::span<const int32_t>) { return BlockHash{42, 42}; };
}

TEST(KvCacheManager, CollidingNamesNeverShareDifferentTokens) {
  auto kv = Make(8, ConstantHasher());
  Prefill(*kv, 1, Range(9, 100));
  const std::vector<int32_t> other = Range(9, 500);
  EXPECT_EQ(kv->GetComputedBlocks(other, 0).num_tokens, 0);
  EXPECT_EQ(kv->GetComputedBlocks(Range(9, 100), 0).num_tokens, 4);
}

TEST(KvCacheManager, CollidingNamesNeverReuseABlockAtAnotherPosition) {
  // Every name collides, and both blocks of `twice` hold the same tokens: only the block
  // computed at position 0 after an empty prefix may serve position 0.
  auto kv = Make(8, ConstantHasher());
  std::vector<int32_t> once = {1, 2, 3, 4, 9};
  Prefill(*kv, 1, once);
  const std::vector<int32_t> twice = {1, 2, 3, 4, 1, 2, 3, 4, 9};
  EXPECT_EQ(kv->GetComputedBlocks(twice, 0).num_tokens, 4);
}

TEST(KvCacheManager, IdenticalPromptsComputedTogetherExtendOneChain) {
  auto kv = Make(16);
  const std::vector<int32_t> prompt = Range(9);
  // Both admitted before either computed anything: no hit for the second.
  ASSERT_TRUE(kv->AllocateSlots(1, 0, 0, 9));
  ASSERT_TRUE(kv->AllocateSlots(2, 0, 0, 9));
  kv->MarkComputed(1, prompt, 9);
  kv->MarkComputed(2, prompt, 9);
  // Sequence 2 generates past the shared prompt; its new block must chain onto 1's blocks.
  std::vector<int32_t> extended = prompt;
  for (int32_t t : {50, 51, 52, 53}) extended.push_back(t);
  ASSERT_TRUE(kv->AllocateSlots(2, 0, 9, 4));
  kv->MarkComputed(2, extended, 13);
  extended.push_back(60);
  const ComputedPrefix hit = kv->GetComputedBlocks(extended, 0);
  ASSERT_EQ(hit.num_tokens, 12);
  EXPECT_EQ(hit.blocks[0], kv->BlockTable(1)[0]);
  EXPECT_EQ(hit.blocks[2], kv->BlockTable(2)[2]);
}

TEST(KvCacheManager, PrefixCachingOffNeverHits) {
  KvCacheOptions o;
  o.num_blocks = 8;
  o.block_size = kBlockSize;
  o.enable_prefix_caching = false;
  auto kv = KvCacheManager::Create(o).value();
  const std::vector<int32_t> prompt = Range(9);
  Prefill(*kv, 1, prompt);
  kv->Free(1);
  EXPECT_EQ(kv->GetComputedBlocks(prompt, 0).num_tokens, 0);
  EXPECT_EQ(kv->Usage().cached_blocks, 0);
}

TEST(KvCacheOptions, RejectsEmptyPoolAndBlocks) {
  KvCacheOptions o;
  o.num_blocks = 0;
  EXPECT_FALSE(o.Validate().ok());
  o.num_blocks = 4;
  o.block_size = 0;
  EXPECT_FALSE(KvCacheManager::Create(o).ok());
}

TEST(NumBlocksForBudget, CountsKAndVForAllLayers) {
  // Llama-2-7B in fp16: 2 * 32 layers * 32 heads * 128 dims * 2 bytes * 16 tokens = 8 MiB.
  auto blocks = NumBlocksForBudget(int64_t{1} << 30, 16, 32, 32, 256);
  ASSERT_TRUE(blocks.ok()) << blocks.status();
  EXPECT_EQ(*blocks, 128);
  EXPECT_EQ(*NumBlocksForBudget((int64_t{1} << 30) - 1, 16, 32, 32, 256), 127);
  EXPECT_FALSE(NumBlocksForBudget(1000, 16, 32, 32, 256).ok());
  EXPECT_FALSE(NumBlocksForBudget(int64_t{1} << 30, 16, 0, 32, 256).ok());
}

}  // namespace
}  // namespace tessera
