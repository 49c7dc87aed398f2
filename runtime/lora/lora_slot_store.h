// Device memory for the adapter slots: per layer and target one A table
// [slots, max_rank, in] and one Bᵀ table [slots, max_rank, out], plus each slot's rank per
// module. Uploading an adapter into a slot is two contiguous copies per adapted module,
// enqueued without waiting when the adapter was staged (Stage) in the backend's
// page-locked memory: the step that first uses the slot then waits only for the bus.
#pragma once

#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/backend.h"
#include "runtime/lora/lora_adapter.h"
#include "runtime/model/config.h"

namespace tessera {

class LoraSlotStore {
 public:
  static absl::StatusOr<std::unique_ptr<LoraSlotStore>> Create(Backend* backend, const ModelConfig& model,
                                                               int32_t num_slots, int32_t max_rank);

  const LoraSlotTables& tables() const { return tables_; }
  int32_t num_slots() const { return tables_.num_slots; }
  size_t device_bytes() const { return device_bytes_; }

  // The adapter's matrices packed in upload order (per module A then Bᵀ) in the backend's
  // staging memory. Any thread (the registry stages when it loads an adapter).
  absl::StatusOr<std::shared_ptr<char>> Stage(const LoraAdapter& adapter) const;
  // Copies `adapter` into `slot` (on the thread that runs the backend's ops), from `staged`
  // (Stage's result for it) when given: those copies are only enqueued.
  absl::Status Upload(int32_t slot, const LoraAdapter& adapter, const char* staged = nullptr);
  // Makes `slot` a no-op for every module.
  absl::Status Clear(int32_t slot);
  // The same, deferred: only the host mirror changes now (any thread, no device work);
  // the next FlushRanks or Upload writes it to the device.
  void ClearLater(int32_t slot);
  // Writes ranks changed by ClearLater (the thread that runs the backend's ops).
  absl::Status FlushRanks();

 private:
  LoraSlotStore() = default;
  absl::Status UploadRanks();

  Backend* backend_ = nullptr;
  std::vector<DeviceBuffer> buffers_;
  std::vector<LoraModuleSlots> modules_;
  DeviceBuffer ranks_;                // [num_layers * kNumLoraTargets, num_slots]
  std::vector<int32_t> host_ranks_;  // mirror of ranks_
  bool ranks_stale_ = false;         // host_ranks_ holds ClearLater changes not uploaded
  std::vector<uint8_t> active_;      // per module: some slot has had rank > 0 (never reset:
                                     // Clear may run on other threads than the step's)
  uint64_t active_generation_ = 0;
  LoraSlotTables tables_;
  size_t device_bytes_ = 0;
};

}  // namespace tessera
