// Row-wise argmax (greedy sampling on the device): one CTA per row, each thread scans a strided
// slice keeping its first maximum, then a warp and a block reduction by (value, lower index).
#include <cstdint>

#include "cuda_util.cuh"
#include "macserve/kernels/cuda/argmax.cuh"

namespace macserve::kernels::cuda {
namespace {

constexpr int kThreads = 512;

__device__ __forceinline__ bool better(float v, int32_t i, float best, int32_t best_i) {
  return v > best || (v == best && i < best_i);
}

__global__ void __launch_bounds__(kThreads)
    argmax_kernel(const float* __restrict__ logits, int64_t vocab, int32_t* __restrict__ out) {
  const float* row = logits + static_cast<int64_t>(blockIdx.x) * vocab;
  // Every thread starts from an element of its own slice (vocab >= 1), so a row of -inf still
  // yields index 0, as on the CPU.
  float best = -INFINITY;
  int32_t best_i = INT32_MAX;
  for (int64_t i = threadIdx.x; i < vocab; i += kThreads) {
    const float v = row[i];
    if (best_i == INT32_MAX || v > best) best = v, best_i = static_cast<int32_t>(i);
  }
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    const float v = __shfl_xor_sync(0xffffffffu, best, o);
    const int32_t i = __shfl_xor_sync(0xffffffffu, best_i, o);
    if (better(v, i, best, best_i)) best = v, best_i = i;
  }
  __shared__ float s_best[kThreads / 32];
  __shared__ int32_t s_idx[kThreads / 32];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) s_best[warp] = best, s_idx[warp] = best_i;
  __syncthreads();
  if (warp == 0) {
    best = lane < kThreads / 32 ? s_best[lane] : -INFINITY;
    best_i = lane < kThreads / 32 ? s_idx[lane] : INT32_MAX;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
      const float v = __shfl_xor_sync(0xffffffffu, best, o);
      const int32_t i = __shfl_xor_sync(0xffffffffu, best_i, o);
      if (better(v, i, best, best_i)) best = v, best_i = i;
    }
    if (lane == 0) out[blockIdx.x] = best_i;
  }
}

}  // namespace

int argmax_rows(const float* logits, int64_t rows, int64_t vocab, int32_t* out, Stream stream) {
  if (rows == 0) return 0;
  if (vocab < 1) return static_cast<int>(cudaErrorInvalidValue);
  argmax_kernel<<<static_cast<unsigned>(rows), kThreads, 0, detail::as_stream(stream)>>>(
      logits, vocab, out);
  return detail::last_error();
}

}  // namespace macserve::kernels::cuda
