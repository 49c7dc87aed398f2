// BlockPool: reference counts, LRU order of the free queue, eviction from the index.
#include "runtime/kv/block_pool.h"

#include <vector>

#include "gtest/gtest.h"

namespace tessera {
namespace {

std::vector<int32_t> Tokens(int block_size, int32_t first) {
  std::vector<int32_t> t(block_size);
  for (int i = 0; i < block_size; ++i) t[i] = first + i;
  return t;
}

TEST(BlockPool, AllocateReusesLeastRecentlyFreedFirst) {
  BlockPool pool(4, 2);
  std::vector<int32_t> blocks;
  ASSERT_TRUE(pool.Allocate(4, &blocks));
  EXPECT_EQ(pool.NumFree(), 0);
  pool.Unref(blocks[2]);
  pool.Unref(blocks[0]);
  pool.Unref(blocks[3]);
  std::vector<int32_t> again;
  ASSERT_TRUE(pool.Allocate(3, &again));
  EXPECT_EQ(again, (std::vector<int32_t>{blocks[2], blocks[0], blocks[3]}));
}

TEST(BlockPool, AllocateFailureChangesNothing) {
  BlockPool pool(3, 2);
  std::vector<int32_t> blocks;
  ASSERT_TRUE(pool.Allocate(2, &blocks));
  std::vector<int32_t> more;
  EXPECT_FALSE(pool.Allocate(2, &more));
  EXPECT_TRUE(more.empty());
  EXPECT_EQ(pool.NumFree(), 1);
}

TEST(BlockPool, ReferencedBlockLeavesFreeQueueUntilLastUnref) {
  BlockPool pool(2, 2);
  std::vector<int32_t> blocks;
  ASSERT_TRUE(pool.Allocate(1, &blocks));
  pool.Ref(blocks[0]);
  EXPECT_EQ(pool.RefCount(blocks[0]), 2);
  pool.Unref(blocks[0]);
  EXPECT_EQ(pool.NumFree(), 1);
  pool.Unref(blocks[0]);
  EXPECT_EQ(pool.NumFree(), 2);
  EXPECT_EQ(pool.RefCount(blocks[0]), 0);
}

TEST(BlockPool, ReusingACachedFreeBlockEvictsItsIndexEntry) {
  BlockPool pool(1, 2);
  std::vector<int32_t> blocks;
  ASSERT_TRUE(pool.Allocate(1, &blocks));
  const BlockHash name{5, 6};
  const uint64_t serial = pool.Register(blocks[0], name, 0, 0, Tokens(2, 1));
  EXPECT_NE(serial, 0u);
  pool.Unref(blocks[0]);
  EXPECT_EQ(pool.Lookup(name), blocks[0]);  // kept after free
  EXPECT_EQ(pool.NumCached(), 1);

  std::vector<int32_t> again;
  ASSERT_TRUE(pool.Allocate(1, &again));
  EXPECT_EQ(pool.Lookup(name), -1);
  EXPECT_EQ(pool.NumCached(), 0);
  EXPECT_EQ(pool.NumEvictions(), 1);
  EXPECT_FALSE(pool.Matches(again[0], 0, 0, Tokens(2, 1)));
}

TEST(BlockPool, MatchesComparesSaltParentAndTokens) {
  BlockPool pool(1, 3);
  std::vector<int32_t> blocks;
  ASSERT_TRUE(pool.Allocate(1, &blocks));
  pool.Register(blocks[0], BlockHash{1, 1}, 9, 4, Tokens(3, 10));
  EXPECT_TRUE(pool.Matches(blocks[0], 9, 4, Tokens(3, 10)));
  EXPECT_FALSE(pool.Matches(blocks[0], 8, 4, Tokens(3, 10)));
  EXPECT_FALSE(pool.Matches(blocks[0], 9, 5, Tokens(3, 10)));
  EXPECT_FALSE(pool.Matches(blocks[0], 9, 4, Tokens(3, 11)));
}

}  // namespace
}  // namespace tessera
