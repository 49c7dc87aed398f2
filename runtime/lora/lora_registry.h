// The adapter registry: name → adapter id (never reused; the prefix-cache salt), every
// registered adapter converted in host memory, and an LRU cache of them in device slots.
//
// Threads: Load/Unload/Resolve/List/Retain/Release may be called from any thread (the
// admin API's). Load reads, validates and converts on the calling thread, so the engine
// step never waits on disk. AcquireSlots/ReleaseSlots run on the engine thread, the one
// that issues the backend's ops: they only enqueue copies into slots from the page-locked
// staging memory that Load filled.
//
// Capacity: max_gpu_adapters device slots; max_cpu_adapters adapters in host memory in all
// (registered ones plus unloaded ones still finishing requests). Loading beyond that is
// refused with ResourceExhausted rather than dropping adapters to reread from disk later,
// which would put file reads on the step thread.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/backend.h"
#include "runtime/lora/lora_adapter.h"
#include "runtime/lora/lora_slot_store.h"
#include "runtime/model/config.h"

namespace tessera {

struct LoraRegistryOptions {
  int32_t max_gpu_adapters = 8;   // device slots
  int32_t max_cpu_adapters = 32;  // adapters held in host memory
  int32_t max_lora_rank = 64;
  absl::Status Validate() const;
};

struct LoraAdapterInfo {
  std::string name;
  uint64_t id = 0;
  std::string dir;
  std::string base_model_name_or_path;
  int32_t max_rank = 0;
  int32_t slot = -1;  // device slot, -1 when only in host memory
  int32_t requests = 0;  // requests holding it (Retain)
};

struct LoraRegistryStats {
  int32_t num_adapters = 0;  // in host memory
  int64_t slot_uploads = 0;
  int64_t slot_evictions = 0;
};

class LoraRegistry {
 public:
  static absl::StatusOr<std::unique_ptr<LoraRegistry>> Create(Backend* backend, const ModelConfig& model,
                                                              const LoraRegistryOptions& options);

  // Registers the adapter in `dir` (already resolved, see ResolveAdapterPath) as `name`
  // and returns its id. AlreadyExists when the name is taken.
  absl::StatusOr<uint64_t> Load(const std::string& name, const std::string& dir);
  // New requests for `name` fail with NotFound at once; requests already holding it
  // finish, and its memory goes when the last one releases it.
  absl::Status Unload(const std::string& name);
  absl::StatusOr<uint64_t> Resolve(const std::string& name) const;
  std::vector<LoraAdapterInfo> List() const;
  LoraRegistryStats Stats() const;

  // Holds a registered adapter for the lifetime of a request: by name (id 0, or the id the
  // name must still have) or by id alone. Returns the id; NotFound when not registered.
  absl::StatusOr<uint64_t> Retain(const std::string& name, uint64_t id);
  void Release(uint64_t id);

  // Engine thread. The device slot of each id (-1 for id 0, the base model), uploading
  // into free or least-recently-used unpinned slots; the slots stay pinned until
  // ReleaseSlots with the same ids. ResourceExhausted when the ids need more slots than
  // are unpinned (callers split such batches; num_slots() bounds a batch's adapters).
  absl::StatusOr<std::vector<int32_t>> AcquireSlots(std::span<const uint64_t> ids);
  void ReleaseSlots(std::span<const uint64_t> ids);

  const LoraSlotTables& tables() const { return store_->tables(); }
  int32_t num_slots() const { return store_->num_slots(); }
  const ModelConfig& model_config() const { return model_; }

 private:
  struct Entry {
    std::string name;
    uint64_t id = 0;
    std::unique_ptr<LoraAdapter> adapter;
    std::shared_ptr<char> staged;  // its matrices in the backend's page-locked memory
    bool registered = true;  // false after Unload
    int32_t requests = 0;
    int32_t pins = 0;
    int32_t slot = -1;
  };
  LoraRegistry() = default;
  void MaybeErase(uint64_t id);  // mu_ held
  int32_t PickSlot() const;      // mu_ held

  Backend* backend_ = nullptr;
  ModelConfig model_;
  LoraRegistryOptions options_;
  std::unique_ptr<LoraSlotStore> store_;

  mutable std::mutex mu_;
  std::unordered_map<std::string, uint64_t> names_;
  std::unordered_map<uint64_t, Entry> entries_;
  std::vector<uint64_t> slot_owner_;      // adapter id per slot, 0 when free
  std::vector<uint64_t> slot_last_use_;   // LRU clock per slot
  uint64_t clock_ = 0;
  uint64_t next_id_ = 1;
  LoraRegistryStats stats_;
  // Staging memory of erased adapters, freed by the next AcquireSlots (engine thread).
  std::vector<std::shared_ptr<char>> retired_staging_;
};

// Holds a Retain for as long as it lives.
class LoraAdapterRef {
 public:
  LoraAdapterRef() = default;
  LoraAdapterRef(LoraRegistry* registry, uint64_t id) : registry_(registry), id_(id) {}
  LoraAdapterRef(LoraAdapterRef&& o) noexcept : registry_(o.registry_), id_(o.id_) { o.registry_ = nullptr; }
  LoraAdapterRef& operator=(LoraAdapterRef&& o) noexcept {
    if (this != &o) {
      Reset();
      registry_ = o.registry_;
      id_ = o.id_;
      o.registry_ = nullptr;
    }
    return *this;
  }
  LoraAdapterRef(const LoraAdapterRef&) = delete;
  LoraAdapterRef& operator=(const LoraAdapterRef&) = delete;
  ~LoraAdapterRef() { Reset(); }
  void Reset() {
    if (registry_) registry_->Release(id_);
    registry_ = nullptr;
  }

 private:
  LoraRegistry* registry_ = nullptr;
  uint64_t id_ = 0;
};

}  // namespace tessera
