// Kernel start/end times of everything the process runs on the device between Start and Stop,
// from CUPTI's concurrent-kernel activity records (kernels that overlap keep overlapping,
// graph replays included). Only built with the CUDA backend.
#pragma once

#include <vector>

#include "absl/status/statusor.h"
#include "bench/decode/kernel_timeline.h"

namespace tessera::bench {

absl::Status StartKernelTrace();
// Now, on the records' clock (for step boundaries).
uint64_t KernelTraceTimestamp();
// Flushes the records and stops recording; the spans carry short demangled names.
absl::StatusOr<std::vector<KernelSpan>> StopKernelTrace();

}  // namespace tessera::bench
