// MAC-Attention partials and prefill rows for head_dim 32 (group sizes 1-8); see mac_impl.cuh.
#include "mac_impl.cuh"

namespace macserve::kernels::cuda::mac_detail {

int launch_partials_d32(const MacCudaParams& p, const WsLayout& w, int G, cudaStream_t st) {
  return dispatch_partials<32>(p, w, G, st);
}
int launch_rows_d32(const MacPrefillRowsParams& p, int G, cudaStream_t st) { return dispatch_rows<32>(p, G, st); }
int partial_slots_d32(int G) { return dispatch_slots<32>(G); }

}  // namespace macserve::kernels::cuda::mac_detail
