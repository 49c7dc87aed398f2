// Delivers request outputs on a thread of its own, in the order they were pushed: the engine
// thread hands over one batch per step instead of running every request's callback (JSON,
// queueing on connections, waking io threads) between device steps.
#pragma once

#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "runtime/engine/request.h"

namespace tessera {

class OutputPump {
 public:
  struct Item {
    std::shared_ptr<OutputCallback> callback;
    RequestOutput output;
  };
  // `delivered(n)` runs on the pump thread after each batch, with the number of final
  // outputs (finished == true) the batch carried.
  explicit OutputPump(std::function<void(int)> delivered);
  // Delivers everything pushed so far, then joins the thread.
  ~OutputPump();

  void Push(std::vector<Item> batch);
  // Blocks until every batch pushed before the call has been delivered.
  void WaitIdle();

 private:
  void Run();

  std::function<void(int)> delivered_;
  std::mutex mu_;
  std::condition_variable ready_, idle_;
  std::deque<std::vector<Item>> queue_;
  bool busy_ = false;
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace tessera
