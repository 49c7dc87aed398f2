#include "runtime/lora/lora_slot_store.h"

#include <cstring>

#include "absl/strings/str_cat.h"
#include "runtime/common/status_macros.h"

namespace tessera {

absl::StatusOr<std::unique_ptr<LoraSlotStore>> LoraSlotStore::Create(Backend* backend, const ModelConfig& model,
                                                                     int32_t num_slots, int32_t max_rank) {
  if (num_slots < 1 || max_rank < 1) return absl::InvalidArgumentError("LoRA slot tables need at least one slot and rank 1");
  auto store = std::unique_ptr<LoraSlotStore>(new LoraSlotStore());
  store->backend_ = backend;
  const DType dt = backend->activation_dtype();
  const size_t es = DTypeSize(dt);
  const int64_t L = model.num_hidden_layers;
  store->modules_.resize(static_cast<size_t>(L) * kNumLoraTargets);
  store->host_ranks_.assign(store->modules_.size() * num_slots, 0);
  store->active_.assign(store->modules_.size(), 0);
  ASSIGN_OR_RETURN(store->ranks_, backend->Allocate(store->host_ranks_.size() * sizeof(int32_t)));
  for (int64_t l = 0; l < L; ++l) {
    for (int t = 0; t < kNumLoraTargets; ++t) {
      const size_t index = static_cast<size_t>(l) * kNumLoraTargets + t;
      LoraModuleSlots& m = store->modules_[index];
      m.in_features = LoraInFeatures(model, t);
      m.out_features = LoraOutFeatures(model, t);
      const size_t a_bytes = static_cast<size_t>(num_slots) * max_rank * m.in_features * es;
      const size_t b_bytes = static_cast<size_t>(num_slots) * max_rank * m.out_features * es;
      ASSIGN_OR_RETURN(DeviceBuffer a, backend->Allocate(a_bytes));
      ASSIGN_OR_RETURN(DeviceBuffer b, backend->Allocate(b_bytes));
      m.a = a.data();
      m.b_t = b.data();
      m.ranks = static_cast<const int32_t*>(store->ranks_.data()) + index * num_slots;
      m.active = &store->active_[index];
      store->device_bytes_ += a_bytes + b_bytes;
      store->buffers_.push_back(std::move(a));
      store->buffers_.push_back(std::move(b));
    }
  }
  store->tables_.modules = store->modules_.data();
  store->tables_.num_layers = static_cast<int32_t>(L);
  store->tables_.num_slots = num_slots;
  store->tables_.max_rank = max_rank;
  store->tables_.dtype = dt;
  store->tables_.active_generation = &store->active_generation_;
  RETURN_IF_ERROR(store->UploadRanks());
  return store;
}

absl::Status LoraSlotStore::UploadRanks() {
  ranks_stale_ = false;
  return backend_->CopyToDevice(ranks_.data(), host_ranks_.data(), host_ranks_.size() * sizeof(int32_t));
}

void LoraSlotStore::ClearLater(int32_t slot) {
  if (slot < 0 || slot >= tables_.num_slots) return;
  for (size_t index = 0; index < modules_.size(); ++index) host_ranks_[index * tables_.num_slots + slot] = 0;
  ranks_stale_ = true;
}

absl::Status LoraSlotStore::FlushRanks() { return ranks_stale_ ? UploadRanks() : absl::OkStatus(); }

absl::StatusOr<std::shared_ptr<char>> LoraSlotStore::Stage(const LoraAdapter& adapter) const {
  size_t bytes = 0;
  for (size_t index = 0; index < modules_.size(); ++index) {
    const LoraModuleHost& h = adapter.module(static_cast<int>(index / kNumLoraTargets), static_cast<int>(index % kNumLoraTargets));
    bytes += h.a.size() + h.b_t.size();
  }
  ASSIGN_OR_RETURN(std::shared_ptr<char> staged, backend_->AllocateHostStaging(bytes));
  char* p = staged.get();
  for (size_t index = 0; index < modules_.size(); ++index) {
    const LoraModuleHost& h = adapter.module(static_cast<int>(index / kNumLoraTargets), static_cast<int>(index % kNumLoraTargets));
    if (h.rank == 0) continue;
    std::memcpy(p, h.a.data(), h.a.size());
    p += h.a.size();
    std::memcpy(p, h.b_t.data(), h.b_t.size());
    p += h.b_t.size();
  }
  return staged;
}

absl::Status LoraSlotStore::Upload(int32_t slot, const LoraAdapter& adapter, const char* staged) {
  if (slot < 0 || slot >= tables_.num_slots) return absl::OutOfRangeError(absl::StrCat("no LoRA slot ", slot));
  if (adapter.num_layers() != tables_.num_layers || adapter.dtype() != tables_.dtype)
    return absl::InvalidArgumentError(absl::StrCat("adapter ", adapter.dir(), " was converted for another model or dtype"));
  if (adapter.max_rank() > tables_.max_rank)
    return absl::InvalidArgumentError(absl::StrCat("adapter ", adapter.dir(), " has rank ", adapter.max_rank(),
                                                   "; the slots hold rank ", tables_.max_rank));
  const size_t es = DTypeSize(tables_.dtype);
  const int32_t R = tables_.max_rank;
  bool activated = false;
  for (size_t index = 0; index < modules_.size(); ++index) {
    const LoraModuleSlots& m = modules_[index];
    const LoraModuleHost& h = adapter.module(static_cast<int>(index / kNumLoraTargets), static_cast<int>(index % kNumLoraTargets));
    host_ranks_[index * tables_.num_slots + slot] = h.rank;
    if (h.rank == 0) continue;
    char* a = static_cast<char*>(const_cast<void*>(m.a)) + static_cast<size_t>(slot) * R * m.in_features * es;
    char* b = static_cast<char*>(const_cast<void*>(m.b_t)) + static_cast<size_t>(slot) * R * m.out_features * es;
    if (staged != nullptr) {
      RETURN_IF_ERROR(backend_->CopyToDeviceAsync(a, staged, h.a.size()));
      staged += h.a.size();
      RETURN_IF_ERROR(backend_->CopyToDeviceAsync(b, staged, h.b_t.size()));
      staged += h.b_t.size();
    } else {
      RETURN_IF_ERROR(backend_->CopyToDevice(a, h.a.data(), h.a.size()));
      RETURN_IF_ERROR(backend_->CopyToDevice(b, h.b_t.data(), h.b_t.size()));
    }
    if (!active_[index]) activated = true;
    active_[index] = 1;
  }
  if (activated) ++active_generation_;
  return UploadRanks();
}

absl::Status LoraSlotStore::Clear(int32_t slot) {
  if (slot < 0 || slot >= tables_.num_slots) return absl::OutOfRangeError(absl::StrCat("no LoRA slot ", slot));
  for (size_t index = 0; index < modules_.size(); ++index) host_ranks_[index * tables_.num_slots + slot] = 0;
  return UploadRanks();
}

}  // namespace tessera
