// SerialExecutor: tasks run in posting order on one thread other than the poster's, and
// the destructor runs what is still queued.
#include "runtime/common/serial_executor.h"

#include <atomic>
#include <future>
#include <set>
#include <thread>
#include <vector>

#include "gtest/gtest.h"

namespace tessera {
namespace {

TEST(SerialExecutorTest, RunsTasksInOrderOnOneBackgroundThread) {
  std::vector<int> order;
  std::set<std::thread::id> threads;
  std::promise<void> done;
  {
    SerialExecutor ex;
    for (int i = 0; i < 100; ++i) {
      ex.Post([&, i] {
        order.push_back(i);  // only the executor's thread touches these
        threads.insert(std::this_thread::get_id());
      });
    }
    ex.Post([&] { done.set_value(); });
    done.get_future().wait();
  }
  ASSERT_EQ(order.size(), 100u);
  for (int i = 0; i < 100; ++i) EXPECT_EQ(order[i], i);
  ASSERT_EQ(threads.size(), 1u);
  EXPECT_NE(*threads.begin(), std::this_thread::get_id());
}

TEST(SerialExecutorTest, PostReturnsBeforeTheTaskRunsAndDestructorDrainsTheQueue) {
  std::promise<void> release;
  std::shared_future<void> gate = release.get_future().share();
  std::atomic<int> ran{0};
  {
    SerialExecutor ex;
    ex.Post([gate, &ran] {
      gate.wait();
      ++ran;
    });
    for (int i = 0; i < 5; ++i) ex.Post([&ran] { ++ran; });
    EXPECT_EQ(ran.load(), 0);  // the first task is still held at the gate
    release.set_value();
  }  // the destructor returns only once every queued task has run
  EXPECT_EQ(ran.load(), 6);
}

}  // namespace
}  // namespace tessera
