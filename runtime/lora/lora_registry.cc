#include "runtime/lora/lora_registry.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "runtime/common/status_macros.h"

namespace tessera {

absl::Status LoraRegistryOptions::Validate() const {
  if (max_gpu_adapters < 1) return absl::InvalidArgumentError("--max-loras must be at least 1");
  if (max_cpu_adapters < max_gpu_adapters)
    return absl::InvalidArgumentError("--max-cpu-loras must be at least --max-loras");
  if (max_lora_rank < 1 || max_lora_rank > 1024) return absl::InvalidArgumentError("--max-lora-rank must be in [1, 1024]");
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<LoraRegistry>> LoraRegistry::Create(Backend* backend, const ModelConfig& model,
                                                                   const LoraRegistryOptions& options) {
  RETURN_IF_ERROR(options.Validate());
  auto r = std::unique_ptr<LoraRegistry>(new LoraRegistry());
  r->backend_ = backend;
  r->model_ = model;
  r->options_ = options;
  ASSIGN_OR_RETURN(r->store_, LoraSlotStore::Create(backend, model, options.max_gpu_adapters, options.max_lora_rank));
  r->slot_owner_.assign(options.max_gpu_adapters, 0);
  r->slot_last_use_.assign(options.max_gpu_adapters, 0);
  return r;
}

absl::StatusOr<uint64_t> LoraRegistry::Load(const std::string& name, const std::string& dir) {
  if (name.empty()) return absl::InvalidArgumentError("a LoRA adapter needs a name");
  auto taken = [&]() -> absl::Status {
    if (names_.count(name)) return absl::AlreadyExistsError(absl::StrCat("LoRA adapter '", name, "' is already loaded"));
    if (static_cast<int32_t>(entries_.size()) >= options_.max_cpu_adapters)
      return absl::ResourceExhaustedError(absl::StrCat("cannot load LoRA adapter '", name, "': ", options_.max_cpu_adapters,
                                                       " adapters are loaded (max_cpu_adapters); unload one first"));
    return absl::OkStatus();
  };
  {
    std::lock_guard<std::mutex> lock(mu_);
    RETURN_IF_ERROR(taken());
  }
  LoraLoadOptions lo;
  lo.max_lora_rank = options_.max_lora_rank;
  lo.dtype = backend_->activation_dtype();
  ASSIGN_OR_RETURN(auto adapter, LoraAdapter::Load(dir, model_, lo));
  // Staged here, off the step loop, so that a slot upload only enqueues copies.
  ASSIGN_OR_RETURN(std::shared_ptr<char> staged, store_->Stage(*adapter));
  std::lock_guard<std::mutex> lock(mu_);
  RETURN_IF_ERROR(taken());  // another thread may have won the name meanwhile
  const uint64_t id = next_id_++;
  Entry& e = entries_[id];
  e.name = name;
  e.id = id;
  e.adapter = std::move(adapter);
  e.staged = std::move(staged);
  names_[name] = id;
  stats_.num_adapters = static_cast<int32_t>(entries_.size());
  return id;
}

absl::Status LoraRegistry::Unload(const std::string& name) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = names_.find(name);
  if (it == names_.end()) return absl::NotFoundError(absl::StrCat("LoRA adapter '", name, "' is not loaded"));
  const uint64_t id = it->second;
  names_.erase(it);
  entries_.at(id).registered = false;
  MaybeErase(id);
  return absl::OkStatus();
}

void LoraRegistry::MaybeErase(uint64_t id) {
  auto it = entries_.find(id);
  if (it == entries_.end()) return;
  Entry& e = it->second;
  if (e.registered || e.requests > 0 || e.pins > 0) return;
  if (e.slot >= 0) {
    slot_owner_[e.slot] = 0;
    // Only the ranks change: a freed slot must not apply its old matrices to anyone. No
    // step can use the slot before the engine thread's next AcquireSlots, which writes the
    // ranks: this may run on an admin or request thread, which must not touch the stream
    // the steps (and graph captures) run on.
    store_->ClearLater(e.slot);
  }
  // The page-locked staging copy is freed on the engine thread too (freeing it waits for
  // the device).
  if (e.staged != nullptr) retired_staging_.push_back(std::move(e.staged));
  entries_.erase(it);
  stats_.num_adapters = static_cast<int32_t>(entries_.size());
}

absl::StatusOr<uint64_t> LoraRegistry::Resolve(const std::string& name) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = names_.find(name);
  if (it == names_.end()) return absl::NotFoundError(absl::StrCat("LoRA adapter '", name, "' is not loaded"));
  return it->second;
}

std::vector<LoraAdapterInfo> LoraRegistry::List() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<LoraAdapterInfo> out;
  for (const auto& [name, id] : names_) {
    const Entry& e = entries_.at(id);
    LoraAdapterInfo info;
    info.name = name;
    info.id = id;
    info.dir = e.adapter->dir();
    info.base_model_name_or_path = e.adapter->config().base_model_name_or_path;
    info.max_rank = e.adapter->max_rank();
    info.slot = e.slot;
    info.requests = e.requests;
    out.push_back(std::move(info));
  }
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.id < b.id; });
  return out;
}

LoraRegistryStats LoraRegistry::Stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

absl::StatusOr<uint64_t> LoraRegistry::Retain(const std::string& name, uint64_t id) {
  std::lock_guard<std::mutex> lock(mu_);
  uint64_t resolved = id;
  if (!name.empty()) {
    auto it = names_.find(name);
    if (it == names_.end()) return absl::NotFoundError(absl::StrCat("LoRA adapter '", name, "' is not loaded"));
    if (id != 0 && id != it->second)
      return absl::NotFoundError(absl::StrCat("LoRA adapter '", name, "' id ", id, " is no longer loaded (now id ", it->second, ")"));
    resolved = it->second;
  }
  auto it = entries_.find(resolved);
  if (it == entries_.end() || !it->second.registered)
    return absl::NotFoundError(absl::StrCat("LoRA adapter id ", resolved, " is not loaded"));
  it->second.requests++;
  return resolved;
}

void LoraRegistry::Release(uint64_t id) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = entries_.find(id);
  if (it == entries_.end() || it->second.requests == 0) return;
  it->second.requests--;
  MaybeErase(id);
}

int32_t LoraRegistry::PickSlot() const {
  // A free slot, else the least recently used unpinned one, preferring adapters that no
  // request holds (their sequences will not ask for them again soon).
  int32_t best = -1;
  bool best_idle = false;
  for (int32_t s = 0; s < static_cast<int32_t>(slot_owner_.size()); ++s) {
    if (slot_owner_[s] == 0) return s;
    const Entry& e = entries_.at(slot_owner_[s]);
    if (e.pins > 0) continue;
    const bool idle = e.requests == 0;
    if (best < 0 || (idle && !best_idle) || (idle == best_idle && slot_last_use_[s] < slot_last_use_[best])) {
      best = s;
      best_idle = idle;
    }
  }
  return best;
}

absl::StatusOr<std::vector<int32_t>> LoraRegistry::AcquireSlots(std::span<const uint64_t> ids) {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<int32_t> slots(ids.size(), -1);
  std::vector<uint64_t> pinned;
  auto undo = [&](absl::Status s) {
    for (uint64_t id : pinned) entries_.at(id).pins--;
    return s;
  };
  ++clock_;
  retired_staging_.clear();
  if (absl::Status st = store_->FlushRanks(); !st.ok()) return st;
  for (size_t i = 0; i < ids.size(); ++i) {
    if (ids[i] == 0) continue;
    auto it = entries_.find(ids[i]);
    if (it == entries_.end()) return undo(absl::NotFoundError(absl::StrCat("LoRA adapter id ", ids[i], " is not loaded")));
    Entry& e = it->second;
    if (e.slot < 0) {
      const int32_t s = PickSlot();
      if (s < 0)
        return undo(absl::ResourceExhaustedError(absl::StrCat("the batch needs more than ", slot_owner_.size(),
                                                              " LoRA slots at once")));
      if (slot_owner_[s] != 0) {
        entries_.at(slot_owner_[s]).slot = -1;
        stats_.slot_evictions++;
      }
      slot_owner_[s] = 0;
      absl::Status up = store_->Upload(s, *e.adapter, e.staged.get());
      if (!up.ok()) {
        store_->Clear(s).IgnoreError();
        return undo(up);
      }
      slot_owner_[s] = e.id;
      e.slot = s;
      stats_.slot_uploads++;
    }
    e.pins++;
    pinned.push_back(e.id);
    slot_last_use_[e.slot] = clock_;
    slots[i] = e.slot;
  }
  return slots;
}

void LoraRegistry::ReleaseSlots(std::span<const uint64_t> ids) {
  std::lock_guard<std::mutex> lock(mu_);
  for (uint64_t id : ids) {
    if (id == 0) continue;
    auto it = entries_.find(id);
    if (it == entries_.end() || it->second.pins == 0) continue;
    it->second.pins--;
    MaybeErase(id);
  }
}

}  // namespace tessera
