// Instantiations of the split-KV decode kernel for head_dim 64 (group sizes 1-8).
#include "paged_decode_impl.cuh"

namespace macserve::kernels::cuda::decode_detail {

int dispatch_d64(const PagedAttentionCudaParams& p, const DecodePlan& plan, float* ws_o,
                 float* ws_lse, cudaStream_t st) {
  return dispatch_group<64>(p, plan, ws_o, ws_lse, st);
}

}  // namespace macserve::kernels::cuda::decode_detail
