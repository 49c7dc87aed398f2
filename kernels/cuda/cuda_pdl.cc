// The process-wide PDL switch (cuda_pdl.h).
#include "kernels/cuda/cuda_pdl.h"

#include <cstdlib>
#include <cstring>

namespace tessera::cuda {

bool PdlEnabled() {
  static const bool enabled = [] {
    const char* v = std::getenv("TESSERA_CUDA_PDL");
    return v == nullptr || std::strcmp(v, "0") != 0;
  }();
  return enabled;
}

}  // namespace tessera::cuda
