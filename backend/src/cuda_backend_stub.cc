// Builds without CUDA (MACSERVE_CUDA=OFF or no nvcc): asking for the CUDA backend reports why it is
// unavailable instead of failing later. With CUDA, cuda_backend.cc replaces this file.
#include "macserve/backend/backend.h"

namespace macserve::backend {

std::unique_ptr<Backend> make_cuda_backend(std::string* why, const BackendOptions& options) {
  (void)options;
  if (why != nullptr)
    *why =
        "this build has no CUDA backend (configured without nvcc or with MACSERVE_CUDA=OFF); use "
        "--device cpu";
  return nullptr;
}

}  // namespace macserve::backend
