// PinnedPool: returned buffers are reused only after a synchronisation, best fit within
// twice the size, and idle memory beyond the cap is freed.
#include "kernels/pinned_pool.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <set>

namespace tessera {
namespace {

struct Counting {
  std::set<char*> live;
  int frees = 0;
  std::shared_ptr<PinnedPool> Make(size_t cap) {
    return PinnedPool::Create(
        [this](size_t bytes) -> absl::StatusOr<char*> {
          char* p = static_cast<char*>(std::malloc(bytes));
          live.insert(p);
          return p;
        },
        [this](char* p) {
          live.erase(p);
          ++frees;
          std::free(p);
        },
        cap);
  }
};

constexpr size_t kMiB = size_t{1} << 20;

TEST(PinnedPoolTest, ReturnedBufferIsReusedOnlyAfterASynchronisation) {
  Counting c;
  auto pool = c.Make(64 * kMiB);
  char* first = nullptr;
  {
    auto a = pool->Acquire(3 * kMiB);
    ASSERT_TRUE(a.ok());
    first = a->get();
  }
  EXPECT_EQ(pool->idle_bytes(), 3 * kMiB);
  // Not synchronised since the return: an asynchronous copy may still read it.
  auto b = pool->Acquire(3 * kMiB);
  ASSERT_TRUE(b.ok());
  EXPECT_NE(b->get(), first);
  EXPECT_EQ(pool->allocations(), 2);
  pool->OnSynchronized();
  auto c2 = pool->Acquire(3 * kMiB - 5);
  ASSERT_TRUE(c2.ok());
  EXPECT_EQ(c2->get(), first);
  EXPECT_EQ(pool->allocations(), 2);
}

TEST(PinnedPoolTest, ReusesTheSmallestIdleBufferOfAtMostTwiceTheSize) {
  Counting c;
  auto pool = c.Make(256 * kMiB);
  char *big = nullptr, *mid = nullptr;
  {
    auto x = pool->Acquire(16 * kMiB), y = pool->Acquire(6 * kMiB);
    big = x->get();
    mid = y->get();
  }
  pool->OnSynchronized();
  auto small = pool->Acquire(2 * kMiB);  // 6 MiB is more than twice 2 MiB: a new buffer
  EXPECT_NE(small->get(), mid);
  EXPECT_NE(small->get(), big);
  auto fit = pool->Acquire(5 * kMiB);  // 6 MiB fits; 16 MiB is too large
  EXPECT_EQ(fit->get(), mid);
  auto large = pool->Acquire(9 * kMiB);
  EXPECT_EQ(large->get(), big);
}

TEST(PinnedPoolTest, FreesOldestIdleBuffersBeyondTheCap) {
  Counting c;
  auto pool = c.Make(8 * kMiB);
  {
    auto a = pool->Acquire(4 * kMiB), b = pool->Acquire(4 * kMiB), d = pool->Acquire(4 * kMiB);
  }
  EXPECT_EQ(pool->idle_bytes(), 8 * kMiB);
  EXPECT_EQ(c.frees, 1);
  EXPECT_EQ(c.live.size(), 2u);
}

TEST(PinnedPoolTest, BufferOutlivingThePoolIsFreedDirectly) {
  Counting c;
  std::shared_ptr<char> keep;
  {
    auto pool = c.Make(64 * kMiB);
    keep = *pool->Acquire(kMiB);
  }
  EXPECT_EQ(c.live.size(), 1u);
  keep.reset();
  EXPECT_TRUE(c.live.empty());
}

}  // namespace
}  // namespace tessera
