// The rotary table a model keeps on its backend: computed on the host by the CPU kernel (the
// transformers-exact float32 formula), then copied to the backend, so models never call kernels.
#include "macserve/backend/backend.h"

namespace macserve::backend {

Tensor upload_rope_inv_freq(Backend& be, const kernels::RopeFreqParams& p) {
  Tensor host = Tensor::empty_host(DType::kF32, {p.head_dim / 2});
  kernels::cpu::rope_inv_freq(p, host.data_as<float>());
  Tensor table = be.alloc(DType::kF32, {p.head_dim / 2});
  be.copy_from_host(host.data(), table);
  return table;
}

}  // namespace macserve::backend
