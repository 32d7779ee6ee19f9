// RMSNorm (optionally fused with the residual add) for bf16 rows: one block per row, float32
// accumulation, a warp-shuffle + shared-memory reduction.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include "macserve/kernels/cuda/rms_norm.cuh"
#include "macserve/kernels/rms_norm.h"

namespace macserve::kernels::cuda {
namespace {

constexpr int kThreads = 256;

__device__ float block_sum(float v) {
  __shared__ float partial[kThreads / 32];
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  const int warp = threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  v = lane < kThreads / 32 ? partial[lane] : 0.0f;
  if (warp == 0) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    if (lane == 0) partial[0] = v;
  }
  __syncthreads();
  return partial[0];
}

__global__ void rms_norm_bf16_kernel(RmsNormBf16Params p) {
  const int64_t row = blockIdx.x;
  const auto* x = static_cast<const __nv_bfloat16*>(p.x) + row * p.dim;
  auto* res = p.residual ? static_cast<__nv_bfloat16*>(p.residual) + row * p.dim : nullptr;
  const auto* w = static_cast<const __nv_bfloat16*>(p.weight);
  auto* out = static_cast<__nv_bfloat16*>(p.out) + row * p.dim;
  float sum_sq = 0.0f;
  for (int64_t i = threadIdx.x; i < p.dim; i += kThreads) {
    float v = __bfloat162float(x[i]);
    if (res != nullptr) {
      v += __bfloat162float(res[i]);
      res[i] = __float2bfloat16(v);
      v = __bfloat162float(res[i]);  // normalise what was stored, as the CPU oracle does
    }
    sum_sq += v * v;
  }
  const float inv = rsqrtf(block_sum(sum_sq) / static_cast<float>(p.dim) + p.eps);
  for (int64_t i = threadIdx.x; i < p.dim; i += kThreads) {
    const float v = __bfloat162float(res != nullptr ? res[i] : x[i]);
    out[i] = __float2bfloat16(__bfloat162float(w[i]) * (v * inv));
  }
}

// Mixed precision (f32 stream, bf16 weight, bf16 or f32 out); also the Qwen3 per-head q/k norm
// (dim = head_dim, rows = tokens x heads, in place).
__global__ void rms_norm_mixed_kernel(RmsNormCudaParams p) {
  const int64_t row = blockIdx.x;
  const float* x = p.x + row * p.dim;
  float* res = p.residual ? p.residual + row * p.dim : nullptr;
  const auto* w = static_cast<const __nv_bfloat16*>(p.weight);
  float sum_sq = 0.0f;
  for (int64_t i = threadIdx.x; i < p.dim; i += kThreads) {
    float v = x[i];
    if (res != nullptr) {
      v += res[i];
      res[i] = v;
    }
    sum_sq += v * v;
  }
  const float inv = rsqrtf(block_sum(sum_sq) / static_cast<float>(p.dim) + p.eps);
  for (int64_t i = threadIdx.x; i < p.dim; i += kThreads) {
    const float v = res != nullptr ? res[i] : x[i];
    const float o = __bfloat162float(w[i]) * (v * inv);
    if (p.out_bf16)
      static_cast<__nv_bfloat16*>(p.out)[row * p.dim + i] = __float2bfloat16(o);
    else
      static_cast<float*>(p.out)[row * p.dim + i] = o;
  }
}

}  // namespace

int rms_norm(const RmsNormCudaParams& p, Stream stream) {
  if (p.num_rows == 0) return 0;
  rms_norm_mixed_kernel<<<static_cast<unsigned>(p.num_rows), kThreads, 0,
                          static_cast<cudaStream_t>(stream)>>>(p);
  return static_cast<int>(cudaGetLastError());
}

int rms_norm_bf16(const RmsNormBf16Params& p, Stream stream) {
  if (p.num_rows == 0) return 0;
  rms_norm_bf16_kernel<<<static_cast<unsigned>(p.num_rows), kThreads, 0,
                         static_cast<cudaStream_t>(stream)>>>(p);
  return static_cast<int>(cudaGetLastError());
}

}  // namespace macserve::kernels::cuda
