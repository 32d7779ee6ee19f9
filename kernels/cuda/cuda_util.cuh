// Small device helpers shared by the CUDA kernels of this folder (not a public header).
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

namespace macserve::kernels::cuda::detail {

// Base-2 softmax (scores times log2 e) and its log-sum-exp back in natural log (times ln 2).
constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

inline cudaStream_t as_stream(void* s) { return static_cast<cudaStream_t>(s); }
inline int last_error() { return static_cast<int>(cudaGetLastError()); }
// Multiprocessors of the current device, asked once (the kernels, like the backend, use one device
// per process).
inline int device_sms() {
  static const int n = [] {
    int dev = 0, sms = 1;
    cudaGetDevice(&dev);
    cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev);
    return sms > 1 ? sms : 1;
  }();
  return n;
}
inline unsigned blocks_for(int64_t n, int threads, int64_t cap = 65535LL * 32) {
  int64_t b = (n + threads - 1) / threads;
  if (b > cap) b = cap;
  return static_cast<unsigned>(b < 1 ? 1 : b);
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ unsigned warp_sum_u32(unsigned v) {
  return __reduce_add_sync(0xffffffffu, v);
}
__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// f(std::integral_constant<int, G>{}) for a group size G (query heads per KV head) of 1 to 8, so a
// kernel templated on G can be picked at run time; `otherwise` for any other G.
template <class R, class F>
R with_group_size(int64_t G, R otherwise, F&& f) {
  switch (G) {
    case 1:
      return f(std::integral_constant<int, 1>{});
    case 2:
      return f(std::integral_constant<int, 2>{});
    case 3:
      return f(std::integral_constant<int, 3>{});
    case 4:
      return f(std::integral_constant<int, 4>{});
    case 5:
      return f(std::integral_constant<int, 5>{});
    case 6:
      return f(std::integral_constant<int, 6>{});
    case 7:
      return f(std::integral_constant<int, 7>{});
    case 8:
      return f(std::integral_constant<int, 8>{});
    default:
      return otherwise;
  }
}

// SwiGLU of one gate/up pair: silu(g) * u. The one expression of the swiglu kernel and of
// linear_gemv's fused epilogue, so that the two give the same bits.
__device__ __forceinline__ float silu_mul(float g, float u) { return g / (1.0f + expf(-g)) * u; }

__device__ __forceinline__ void store(void* out, bool bf16, int64_t i, float v) {
  if (bf16)
    static_cast<__nv_bfloat16*>(out)[i] = __float2bfloat16(v);
  else
    static_cast<float*>(out)[i] = v;
}

}  // namespace macserve::kernels::cuda::detail
