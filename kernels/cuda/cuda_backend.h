// The CUDA backend: bf16 activations, cuBLASLt GEMMs, paged attention kernels.
// Same op semantics as the CPU reference (kernels/backend.h).
#pragma once

#include <memory>

#include "absl/status/statusor.h"
#include "kernels/backend.h"

namespace tessera {

// Number of visible CUDA devices (0 when the driver or a device is missing).
int CudaDeviceCount();
absl::StatusOr<std::unique_ptr<Backend>> CreateCudaBackend(int device_index);

}  // namespace tessera
