// Programmatic dependent launch (PDL, sm_90): a kernel launched with LaunchPdl may be
// scheduled while its predecessor in the stream still runs, so its launch latency and its
// reads of constant inputs (weights) overlap the predecessor's tail. Every such kernel calls
// PdlStart() (cuda_common.cuh) before touching activations, caches or workspaces, which
// waits for the predecessor to finish and its writes to be visible; the wait is transitive
// along the stream because every kernel waits before it can finish. Before the wait a kernel
// may also read what was written before the step's first kernel by ordinary stream order: the
// batch's indices (uploaded by a copy) and the KV cache of earlier steps (decode attention
// leaves out each sequence's own token, which this step's rope + store kernel writes). A
// kernel that wrote other cache slots within the step, straight before decode attention,
// would break that (none does: one sequence's rows are stored only by its own step). Kernels launched the
// ordinary way (cuBLASLt's) serialise as usual. Captured graphs keep the programmatic edges.
#pragma once

#include <cuda_runtime.h>

namespace tessera::cuda {

// On unless TESSERA_CUDA_PDL=0 (read once), so a benchmark can compare the two.
bool PdlEnabled();

template <typename... Params, typename... Args>
void LaunchPdl(void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem, cudaStream_t stream,
               Args&&... args) {
  cudaLaunchAttribute attr = {};
  attr.id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr.val.programmaticStreamSerializationAllowed = 1;
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = grid;
  cfg.blockDim = block;
  cfg.dynamicSmemBytes = smem;
  cfg.stream = stream;
  cfg.attrs = &attr;
  cfg.numAttrs = PdlEnabled() ? 1 : 0;
  // Errors surface through the caller's cudaGetLastError, as a <<<>>> launch's do.
  cudaLaunchKernelEx(&cfg, kernel, static_cast<Params>(args)...);
}

}  // namespace tessera::cuda
