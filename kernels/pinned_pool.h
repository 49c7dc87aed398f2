// Reuses page-locked host buffers for uploads (LoRA adapter staging): allocating and
// freeing page-locked memory are slow driver calls, and freeing waits for the whole device,
// so doing them on every adapter load stalls the step loop. A returned buffer becomes
// reusable once the owner reports a stream synchronisation that began after the return (an
// asynchronous copy still reading it has then finished). The allocator is injected, so the
// pool's rules are testable without a GPU.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <vector>

#include "absl/status/statusor.h"

namespace tessera {

class PinnedPool : public std::enable_shared_from_this<PinnedPool> {
 public:
  using AllocFn = std::function<absl::StatusOr<char*>(size_t bytes)>;
  using FreeFn = std::function<void(char*)>;

  // Idle buffers beyond `max_idle_bytes` are freed when returned.
  static std::shared_ptr<PinnedPool> Create(AllocFn alloc, FreeFn free, size_t max_idle_bytes);
  ~PinnedPool();

  // A buffer of at least `bytes`: an idle one of at most twice the (MiB-rounded) size that
  // has been synchronised since its return, or a new one. Freed back to the pool when the
  // last reference goes. Any thread.
  absl::StatusOr<std::shared_ptr<char>> Acquire(size_t bytes);
  // The owner's stream has been synchronised: every buffer returned before now is free.
  void OnSynchronized();

  size_t idle_bytes() const;
  int64_t allocations() const;  // buffers ever allocated (not reused)

 private:
  PinnedPool(AllocFn alloc, FreeFn free, size_t max_idle_bytes);
  void Return(char* p, size_t bytes);

  struct Idle {
    char* p;
    size_t bytes;
    uint64_t returned_at;  // sync count at the return
  };
  const AllocFn alloc_;
  const FreeFn free_;
  const size_t max_idle_bytes_;
  mutable std::mutex mu_;
  std::vector<Idle> idle_;
  size_t idle_bytes_ = 0;
  uint64_t syncs_ = 0;
  int64_t allocations_ = 0;
};

}  // namespace tessera
