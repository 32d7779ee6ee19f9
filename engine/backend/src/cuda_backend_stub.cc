// The CUDA backend arrives with the CUDA issue; until then (and in builds without CUDA) asking for
// it reports why it is unavailable instead of failing later.
#include "macserve/backend/backend.h"

namespace macserve::backend {

std::unique_ptr<Backend> make_cuda_backend(std::string* why) {
  if (why != nullptr) *why = "the CUDA backend is not implemented in this build yet; use --device cpu";
  return nullptr;
}

}  // namespace macserve::backend
