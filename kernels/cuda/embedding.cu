// Embedding lookup: bf16 table rows -> f32 residual stream. One CTA per token.
#include "cuda_util.cuh"
#include "macserve/kernels/cuda/elementwise.cuh"

namespace macserve::kernels::cuda {
namespace {

__global__ void embedding_kernel(EmbeddingCudaParams p) {
  const int64_t t = blockIdx.x;
  const auto* row =
      static_cast<const __nv_bfloat16*>(p.table) + static_cast<int64_t>(p.ids[t]) * p.hidden;
  float* out = p.out + t * p.hidden;
  for (int64_t i = threadIdx.x; i < p.hidden; i += blockDim.x) out[i] = __bfloat162float(row[i]);
}

}  // namespace

int embedding(const EmbeddingCudaParams& p, Stream stream) {
  if (p.num_tokens == 0) return 0;
  embedding_kernel<<<static_cast<unsigned>(p.num_tokens), 256, 0, detail::as_stream(stream)>>>(p);
  return detail::last_error();
}

}  // namespace macserve::kernels::cuda
