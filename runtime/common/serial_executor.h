// One background thread that runs posted tasks in order: slow work (an adapter load) leaves
// the thread that received the request (an HTTP io thread, which must never block).
#pragma once

#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>

namespace tessera {

class SerialExecutor {
 public:
  SerialExecutor();
  // Runs the tasks still queued, then joins the thread.
  ~SerialExecutor();
  SerialExecutor(const SerialExecutor&) = delete;
  SerialExecutor& operator=(const SerialExecutor&) = delete;

  // Queues `task`; tasks run one at a time, in the order they were posted.
  void Post(std::function<void()> task);

 private:
  void Loop();

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> tasks_;
  bool stop_ = false;
  std::thread thread_;  // last: starts once the members above exist
};

}  // namespace tessera
