// MAC-Attention partials and prefill rows for head_dim 128 (group sizes 1-8); see mac_partial.cuh.
#include "mac_partial.cuh"

namespace macserve::kernels::cuda::mac_detail {

template int launch_partials<128>(const MacCudaParams& p, const WsLayout& w, int G,
                                  cudaStream_t st);
template int launch_rows<128>(const MacPrefillRowsParams& p, int G, cudaStream_t st);
template int partial_slots<128>(int G);

}  // namespace macserve::kernels::cuda::mac_detail
