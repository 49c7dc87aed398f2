// Device memory for the adapter slots: per layer and target one A table
// [slots, max_rank, in] and one Bᵀ table [slots, max_rank, out], plus each slot's rank per
// module. Uploading an adapter into a slot is two contiguous copies per adapted module.
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

  // Copies `adapter` into `slot` (on the thread that runs the backend's ops).
  absl::Status Upload(int32_t slot, const LoraAdapter& adapter);
  // Makes `slot` a no-op for every module.
  absl::Status Clear(int32_t slot);

 private:
  LoraSlotStore() = default;
  absl::Status UploadRanks();

  Backend* backend_ = nullptr;
  std::vector<DeviceBuffer> buffers_;
  std::vector<LoraModuleSlots> modules_;
  DeviceBuffer ranks_;                // [num_layers * kNumLoraTargets, num_slots]
  std::vector<int32_t> host_ranks_;  // mirror of ranks_
  LoraSlotTables tables_;
  size_t device_bytes_ = 0;
};

}  // namespace tessera
