#include "bench/decode/kernel_trace.h"

#include <cupti.h>
#include <cxxabi.h>

#include <cstdlib>
#include <mutex>
#include <string>

namespace tessera::bench {
namespace {

constexpr size_t kBufferBytes = 8 << 20;

std::mutex mu;
std::vector<KernelSpan>* spans = nullptr;

std::string Demangle(const char* name) {
  if (name == nullptr) return "?";
  int status = 0;
  char* d = abi::__cxa_demangle(name, nullptr, nullptr, &status);
  std::string out = status == 0 && d != nullptr ? std::string(d) : std::string(name);
  std::free(d);
  return out;
}

void CUPTIAPI BufferRequested(uint8_t** buffer, size_t* size, size_t* max_records) {
  *buffer = static_cast<uint8_t*>(std::aligned_alloc(8, kBufferBytes));
  *size = kBufferBytes;
  *max_records = 0;
}

void CUPTIAPI BufferCompleted(CUcontext, uint32_t, uint8_t* buffer, size_t, size_t valid) {
  CUpti_Activity* record = nullptr;
  std::lock_guard<std::mutex> lock(mu);
  while (cuptiActivityGetNextRecord(buffer, valid, &record) == CUPTI_SUCCESS) {
    if (record->kind != CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL || spans == nullptr) continue;
    const auto* k = reinterpret_cast<const CUpti_ActivityKernel10*>(record);
    // The grid tells calls of one kernel on different shapes apart (an int4 product per weight).
    std::string name = ShortKernelName(Demangle(k->name));
    if (name.size() > 40) name = name.substr(0, 40);
    name += " [" + std::to_string(k->gridX) + "x" + std::to_string(k->gridY) + "x" + std::to_string(k->gridZ) + "]";
    spans->push_back({std::move(name), k->start, k->end});
  }
  std::free(buffer);
}

absl::Status CuptiError(const char* what, CUptiResult r) {
  const char* msg = nullptr;
  cuptiGetResultString(r, &msg);
  return absl::InternalError(std::string("CUPTI ") + what + ": " + (msg != nullptr ? msg : "unknown error"));
}

}  // namespace

absl::Status StartKernelTrace() {
  {
    std::lock_guard<std::mutex> lock(mu);
    delete spans;
    spans = new std::vector<KernelSpan>();
  }
  static const CUptiResult registered = cuptiActivityRegisterCallbacks(BufferRequested, BufferCompleted);
  if (registered != CUPTI_SUCCESS) return CuptiError("register callbacks", registered);
  if (CUptiResult r = cuptiActivityEnable(CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL); r != CUPTI_SUCCESS) {
    return CuptiError("enable kernel activity", r);
  }
  return absl::OkStatus();
}

uint64_t KernelTraceTimestamp() {
  uint64_t t = 0;
  cuptiGetTimestamp(&t);
  return t;
}

absl::StatusOr<std::vector<KernelSpan>> StopKernelTrace() {
  if (CUptiResult r = cuptiActivityFlushAll(CUPTI_ACTIVITY_FLAG_FLUSH_FORCED); r != CUPTI_SUCCESS) {
    return CuptiError("flush", r);
  }
  cuptiActivityDisable(CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL);
  std::lock_guard<std::mutex> lock(mu);
  std::vector<KernelSpan> out = std::move(*spans);
  delete spans;
  spans = nullptr;
  return out;
}

}  // namespace tessera::bench
