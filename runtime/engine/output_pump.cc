#include "runtime/engine/output_pump.h"

#include <utility>

namespace tessera {

OutputPump::OutputPump(std::function<void(int)> delivered) : delivered_(std::move(delivered)) {
  thread_ = std::thread([this] { Run(); });
}

OutputPump::~OutputPump() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  ready_.notify_one();
  thread_.join();
}

void OutputPump::Push(std::vector<Item> batch) {
  if (batch.empty()) return;
  {
    std::lock_guard<std::mutex> lock(mu_);
    queue_.push_back(std::move(batch));
  }
  ready_.notify_one();
}

void OutputPump::WaitIdle() {
  std::unique_lock<std::mutex> lock(mu_);
  idle_.wait(lock, [this] { return queue_.empty() && !busy_; });
}

void OutputPump::Run() {
  for (;;) {
    std::vector<Item> batch;
    {
      std::unique_lock<std::mutex> lock(mu_);
      ready_.wait(lock, [this] { return stop_ || !queue_.empty(); });
      if (queue_.empty()) return;  // stopping, and everything is delivered
      batch = std::move(queue_.front());
      queue_.pop_front();
      busy_ = true;
    }
    int finished = 0;
    for (Item& item : batch) {
      finished += item.output.finished ? 1 : 0;
      if (item.callback && *item.callback) (*item.callback)(std::move(item.output));
    }
    batch.clear();  // callbacks (and what they hold) are released before the count moves
    if (delivered_) delivered_(finished);
    {
      std::lock_guard<std::mutex> lock(mu_);
      busy_ = false;
    }
    idle_.notify_all();
  }
}

}  // namespace tessera
