// BoundedQueue: FIFO order, refusal when full, and no loss under concurrent producers.
#include "runtime/drift/bounded_queue.h"

#include <set>
#include <thread>
#include <vector>

#include "gtest/gtest.h"

namespace tessera::drift {
namespace {

TEST(BoundedQueue, RefusesPushWhenFullAndKeepsOrder) {
  BoundedQueue<int> q(3);  // rounded up to 4
  EXPECT_EQ(q.capacity(), 4u);
  for (int i = 0; i < 4; ++i) EXPECT_TRUE(q.TryPush(int(i)));
  EXPECT_FALSE(q.TryPush(99));
  int v = -1;
  for (int i = 0; i < 4; ++i) {
    ASSERT_TRUE(q.TryPop(v));
    EXPECT_EQ(v, i);
  }
  EXPECT_FALSE(q.TryPop(v));
  EXPECT_TRUE(q.TryPush(7));  // slots are reused after wrapping
  ASSERT_TRUE(q.TryPop(v));
  EXPECT_EQ(v, 7);
}

TEST(BoundedQueue, ConcurrentProducersLoseNothingAccepted) {
  BoundedQueue<int> q(64);
  constexpr int kPerThread = 20000;
  std::vector<std::thread> producers;
  std::atomic<int> accepted{0};
  for (int t = 0; t < 3; ++t) {
    producers.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) {
        if (q.TryPush(t * kPerThread + i)) accepted.fetch_add(1);
      }
    });
  }
  std::multiset<int> seen;
  std::atomic<bool> done{false};
  std::thread consumer([&] {
    int v;
    for (;;) {
      if (q.TryPop(v)) {
        seen.insert(v);
      } else if (done.load()) {
        break;
      }
    }
  });
  for (auto& p : producers) p.join();
  done.store(true);
  consumer.join();
  int v;
  while (q.TryPop(v)) seen.insert(v);
  EXPECT_EQ(static_cast<int>(seen.size()), accepted.load());
  // Each accepted value arrives exactly once.
  for (int x : seen) EXPECT_EQ(seen.count(x), 1u);
}

}  // namespace
}  // namespace tessera::drift
