// MAC-Attention partials and prefill rows for head_dim 64 (group sizes 1-8); see mac_impl.cuh.
#include "mac_impl.cuh"

namespace macserve::kernels::cuda::mac_detail {

int launch_partials_d64(const MacCudaParams& p, const WsLayout& w, int G, cudaStream_t st) {
  return dispatch_partials<64>(p, w, G, st);
}
int launch_rows_d64(const MacPrefillRowsParams& p, int G, cudaStream_t st) { return dispatch_rows<64>(p, G, st); }
int partial_slots_d64(int G) { return dispatch_slots<64>(G); }

}  // namespace macserve::kernels::cuda::mac_detail
