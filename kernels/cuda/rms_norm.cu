// RMSNorm (optionally fused with the residual add): one block per row, float32 accumulation, a
// warp-shuffle + shared-memory reduction. f32 rows of up to 8192 elements (a multiple of 4, 16-byte
// aligned) are held in registers: every load of the row is issued before the first use, so a
// batch-1 decode step's norm costs one round trip to memory instead of one per loop iteration.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

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

constexpr int kMaxChunks = 8;  // float4 per thread: rows up to kThreads * 4 * 8 = 8192

// rms_norm_mixed_kernel with the row in registers (dim a multiple of 4, at most 8192; x, residual
// and out 16-byte aligned rows). Loads first (x and the residual), then the sums, then the stores:
// `out` may alias x, and each thread reads exactly the elements it writes.
__global__ void rms_norm_mixed_rows_kernel(RmsNormCudaParams p) {
  const int64_t row = blockIdx.x;
  const int n4 = static_cast<int>(p.dim / 4);
  const auto* x = reinterpret_cast<const float4*>(p.x + row * p.dim);
  auto* res = p.residual ? reinterpret_cast<float4*>(p.residual + row * p.dim) : nullptr;
  float4 v[kMaxChunks], r[kMaxChunks];
#pragma unroll
  for (int c = 0; c < kMaxChunks; ++c) {
    const int i = static_cast<int>(threadIdx.x) + c * kThreads;
    if (i < n4) {
      v[c] = x[i];
      if (res != nullptr) r[c] = res[i];
    }
  }
  float sum_sq = 0.0f;
#pragma unroll
  for (int c = 0; c < kMaxChunks; ++c) {
    const int i = static_cast<int>(threadIdx.x) + c * kThreads;
    if (i < n4) {
      if (res != nullptr) {
        v[c] = make_float4(v[c].x + r[c].x, v[c].y + r[c].y, v[c].z + r[c].z, v[c].w + r[c].w);
        res[i] = v[c];
      }
      sum_sq += v[c].x * v[c].x + v[c].y * v[c].y + v[c].z * v[c].z + v[c].w * v[c].w;
    }
  }
  const float inv = rsqrtf(block_sum(sum_sq) / static_cast<float>(p.dim) + p.eps);
  const auto* w = static_cast<const __nv_bfloat162*>(p.weight);
#pragma unroll
  for (int c = 0; c < kMaxChunks; ++c) {
    const int i = static_cast<int>(threadIdx.x) + c * kThreads;
    if (i < n4) {
      const float2 w01 = __bfloat1622float2(w[2 * i]), w23 = __bfloat1622float2(w[2 * i + 1]);
      const float4 o = make_float4(w01.x * (v[c].x * inv), w01.y * (v[c].y * inv),
                                   w23.x * (v[c].z * inv), w23.y * (v[c].w * inv));
      if (p.out_bf16) {
        auto* out = static_cast<__nv_bfloat162*>(p.out) + row * p.dim / 2;
        out[2 * i] = __floats2bfloat162_rn(o.x, o.y);
        out[2 * i + 1] = __floats2bfloat162_rn(o.z, o.w);
      } else {
        reinterpret_cast<float4*>(static_cast<float*>(p.out) + row * p.dim)[i] = o;
      }
    }
  }
}

bool aligned16(const void* ptr) { return reinterpret_cast<uintptr_t>(ptr) % 16 == 0; }

}  // namespace

int rms_norm(const RmsNormCudaParams& p, Stream stream) {
  if (p.num_rows == 0) return 0;
  const auto st = static_cast<cudaStream_t>(stream);
  const bool rows_in_registers = p.dim % 4 == 0 && p.dim <= kThreads * 4 * kMaxChunks &&
                                 aligned16(p.x) && aligned16(p.out) && aligned16(p.weight) &&
                                 (p.residual == nullptr || aligned16(p.residual));
  if (rows_in_registers)
    rms_norm_mixed_rows_kernel<<<static_cast<unsigned>(p.num_rows), kThreads, 0, st>>>(p);
  else
    rms_norm_mixed_kernel<<<static_cast<unsigned>(p.num_rows), kThreads, 0, st>>>(p);
  return static_cast<int>(cudaGetLastError());
}

int rms_norm_bf16(const RmsNormBf16Params& p, Stream stream) {
  if (p.num_rows == 0) return 0;
  rms_norm_bf16_kernel<<<static_cast<unsigned>(p.num_rows), kThreads, 0,
                         static_cast<cudaStream_t>(stream)>>>(p);
  return static_cast<int>(cudaGetLastError());
}

}  // namespace macserve::kernels::cuda
