#include "kernels/cpu/cpu_backend.h"

#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <new>

#include "absl/strings/str_cat.h"
#include "runtime/common/thread_pool.h"

namespace tessera {

CpuBackend::CpuBackend(ThreadPool* pool) : pool_(pool ? pool : &ThreadPool::Default()) {}

namespace {
void FreeAligned(void* p) { std::free(p); }
}  // namespace

absl::StatusOr<DeviceBuffer> CpuBackend::Allocate(size_t bytes) {
  size_t rounded = (bytes + 63) / 64 * 64;
  if (rounded == 0) rounded = 64;
  void* p = std::aligned_alloc(64, rounded);
  if (p == nullptr) {
    return absl::ResourceExhaustedError("cpu backend: cannot allocate " + std::to_string(bytes) + " bytes");
  }
  return DeviceBuffer(p, bytes, &FreeAligned);
}

absl::Status CpuBackend::CopyToDevice(void* dst, const void* host_src, size_t bytes) {
  if (bytes) std::memcpy(dst, host_src, bytes);
  return absl::OkStatus();
}

absl::Status CpuBackend::CopyToHost(void* host_dst, const void* src, size_t bytes) {
  if (bytes) std::memcpy(host_dst, src, bytes);
  return absl::OkStatus();
}

absl::Status CpuBackend::CheckKvCacheDType(DType dtype, int32_t) const {
  if (dtype == DType::kF32 || dtype == DType::kF8E4M3) return absl::OkStatus();
  return absl::UnimplementedError(absl::StrCat("the cpu backend keeps its KV cache in float32 or float8_e4m3, not ",
                                               std::string(DTypeName(dtype))));
}

size_t CpuBackend::FreeMemoryBytes() const {
  long pages = sysconf(_SC_AVPHYS_PAGES);
  long page = sysconf(_SC_PAGESIZE);
  if (pages <= 0 || page <= 0) return size_t{1} << 32;
  return static_cast<size_t>(pages) * static_cast<size_t>(page);
}

absl::StatusOr<DeviceBatch> CpuBackend::UploadBatch(const BatchLayout& layout) {
  if (!layout.lora_slots.empty() && layout.lora_slots.size() != layout.token_ids.size())
    return absl::InvalidArgumentError("batch layout: lora_slots must have one entry per token");
  uploaded_ = layout;
  DeviceBatch b;
  b.token_ids = uploaded_.token_ids.data();
  b.positions = uploaded_.positions.data();
  b.slot_mapping = uploaded_.slot_mapping.data();
  b.query_start = uploaded_.query_start.data();
  b.context_lens = uploaded_.context_lens.data();
  b.block_tables = uploaded_.block_tables.data();
  b.logits_rows = uploaded_.logits_rows.data();
  b.lora_slots = uploaded_.lora_slots.empty() ? nullptr : uploaded_.lora_slots.data();
  b.num_tokens = uploaded_.num_tokens();
  b.num_seqs = uploaded_.num_seqs();
  b.num_logits = static_cast<int32_t>(uploaded_.logits_rows.size());
  b.max_blocks_per_seq = uploaded_.max_blocks_per_seq;
  b.block_size = uploaded_.block_size;
  b.max_query_len = uploaded_.max_query_len();
  b.num_single_token_seqs = uploaded_.num_single_token_seqs();
  b.max_context_len = uploaded_.max_context_len();
  return b;
}

}  // namespace tessera
