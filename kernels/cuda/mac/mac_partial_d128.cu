// MAC-Attention partials and prefill rows for head_dim 128 (group sizes 1-8); see mac_impl.cuh.
#include "mac_impl.cuh"

namespace macserve::kernels::cuda::mac_detail {

int launch_partials_d128(const MacCudaParams& p, const WsLayout& w, int G, cudaStream_t st) {
  return dispatch_partials<128>(p, w, G, st);
}
int launch_rows_d128(const MacPrefillRowsParams& p, int G, cudaStream_t st) { return dispatch_rows<128>(p, G, st); }
int partial_slots_d128(int G) { return dispatch_slots<128>(G); }

}  // namespace macserve::kernels::cuda::mac_detail
