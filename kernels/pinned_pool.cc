// PinnedPool: best-fit reuse of returned buffers, gated by the synchronisation count.
#include "kernels/pinned_pool.h"

#include <algorithm>
#include <utility>

namespace tessera {

std::shared_ptr<PinnedPool> PinnedPool::Create(AllocFn alloc, FreeFn free, size_t max_idle_bytes) {
  return std::shared_ptr<PinnedPool>(new PinnedPool(std::move(alloc), std::move(free), max_idle_bytes));
}

PinnedPool::PinnedPool(AllocFn alloc, FreeFn free, size_t max_idle_bytes)
    : alloc_(std::move(alloc)), free_(std::move(free)), max_idle_bytes_(max_idle_bytes) {}

PinnedPool::~PinnedPool() {
  for (const Idle& b : idle_) free_(b.p);
}

absl::StatusOr<std::shared_ptr<char>> PinnedPool::Acquire(size_t bytes) {
  constexpr size_t kMiB = size_t{1} << 20;
  const size_t want = std::max<size_t>((bytes + kMiB - 1) / kMiB, 1) * kMiB;
  char* p = nullptr;
  size_t got = 0;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto best = idle_.end();
    for (auto it = idle_.begin(); it != idle_.end(); ++it) {
      if (it->bytes < want || it->bytes > 2 * want || it->returned_at >= syncs_) continue;
      if (best == idle_.end() || it->bytes < best->bytes) best = it;
    }
    if (best != idle_.end()) {
      p = best->p;
      got = best->bytes;
      idle_bytes_ -= got;
      idle_.erase(best);
    }
  }
  if (p == nullptr) {
    absl::StatusOr<char*> fresh = alloc_(want);
    if (!fresh.ok()) return fresh.status();
    p = *fresh;
    got = want;
    std::lock_guard<std::mutex> lock(mu_);
    ++allocations_;
  }
  std::weak_ptr<PinnedPool> pool = weak_from_this();
  FreeFn free = free_;
  return std::shared_ptr<char>(p, [pool, free, got](char* q) {
    if (std::shared_ptr<PinnedPool> live = pool.lock()) {
      live->Return(q, got);
    } else {
      free(q);
    }
  });
}

void PinnedPool::Return(char* p, size_t bytes) {
  std::vector<char*> drop;
  {
    std::lock_guard<std::mutex> lock(mu_);
    idle_.push_back({p, bytes, syncs_});
    idle_bytes_ += bytes;
    // Over the cap: free the oldest idle buffers (they are the least likely to fit again).
    while (idle_bytes_ > max_idle_bytes_ && !idle_.empty()) {
      drop.push_back(idle_.front().p);
      idle_bytes_ -= idle_.front().bytes;
      idle_.erase(idle_.begin());
    }
  }
  for (char* q : drop) free_(q);
}

void PinnedPool::OnSynchronized() {
  std::lock_guard<std::mutex> lock(mu_);
  ++syncs_;
}

size_t PinnedPool::idle_bytes() const {
  std::lock_guard<std::mutex> lock(mu_);
  return idle_bytes_;
}

int64_t PinnedPool::allocations() const {
  std::lock_guard<std::mutex> lock(mu_);
  return allocations_;
}

}  // namespace tessera
