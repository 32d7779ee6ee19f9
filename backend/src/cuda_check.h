// Error checks shared by the CUDA backend's sources (private to backend/): a failed CUDA call
// or kernel launch becomes Error(kInternal) naming the operation.
#pragma once

#include <cuda_runtime.h>

#include "macserve/core/error.h"

namespace macserve::backend {

inline void check_cuda(cudaError_t e, const char* what) {
  if (e != cudaSuccess)
    throw_error(ErrorCode::kInternal, "CUDA error in {}: {}", what, cudaGetErrorString(e));
}
// Kernel launchers of kernels/cuda return a cudaError_t value (0 = ok).
inline void check_launch(int rc, const char* what) {
  check_cuda(static_cast<cudaError_t>(rc), what);
}

}  // namespace macserve::backend
