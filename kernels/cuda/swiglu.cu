// SwiGLU (f32 gate/up -> bf16 or f32 activation) and the small f32 helpers of the forward: residual
// add, linear bias. Grid-stride loops; all are a few MB per step at most.
#include "cuda_util.cuh"
#include "macserve/kernels/cuda/elementwise.cuh"

namespace macserve::kernels::cuda {
namespace {

__global__ void swiglu_kernel(SwigluCudaParams p) {
  const int64_t n = p.num_tokens * p.inter;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t t = i / p.inter, c = i % p.inter;
    const float g = p.gate_up[t * 2 * p.inter + c];
    const float u = p.gate_up[t * 2 * p.inter + p.inter + c];
    detail::store(p.out, p.out_bf16, i, detail::silu_mul(g, u));
  }
}

__global__ void add_kernel(const float* a, const float* b, float* out, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x)
    out[i] = a[i] + b[i];
}

__global__ void bias_kernel(float* y, const __nv_bfloat16* bias, int64_t rows, int64_t cols) {
  const int64_t n = rows * cols;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x)
    y[i] += __bfloat162float(bias[i % cols]);
}

}  // namespace

int swiglu(const SwigluCudaParams& p, Stream stream) {
  const int64_t n = p.num_tokens * p.inter;
  if (n == 0) return 0;
  swiglu_kernel<<<detail::blocks_for(n, 256), 256, 0, detail::as_stream(stream)>>>(p);
  return detail::last_error();
}

int add_f32(const float* a, const float* b, float* out, int64_t n, Stream stream) {
  if (n == 0) return 0;
  add_kernel<<<detail::blocks_for(n, 256), 256, 0, detail::as_stream(stream)>>>(a, b, out, n);
  return detail::last_error();
}

int add_bias(float* y, const void* bias, int64_t rows, int64_t cols, Stream stream) {
  if (rows * cols == 0) return 0;
  bias_kernel<<<detail::blocks_for(rows * cols, 256), 256, 0, detail::as_stream(stream)>>>(
      y, static_cast<const __nv_bfloat16*>(bias), rows, cols);
  return detail::last_error();
}

}  // namespace macserve::kernels::cuda
