// Data movement helpers: f32 -> bf16 (weights at load), row gather (logits rows), seeded uniform
// fill (tests and benchmarks).
#include "cuda_util.cuh"
#include "macserve/kernels/cuda/elementwise.cuh"

namespace macserve::kernels::cuda {
namespace {

__global__ void to_bf16_kernel(const float* src, __nv_bfloat16* dst, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x)
    dst[i] = __float2bfloat16_rn(src[i]);
}

__global__ void gather_kernel(const uint16_t* x, const int32_t* rows, uint16_t* out,
                              int64_t width) {
  const uint16_t* src = x + static_cast<int64_t>(rows[blockIdx.x]) * width;
  uint16_t* dst = out + blockIdx.x * width;
  for (int64_t i = threadIdx.x; i < width; i += blockDim.x) dst[i] = src[i];
}

__device__ uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

__global__ void fill_kernel(void* dst, int64_t n, bool bf16, uint64_t seed, float scale) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    const uint64_t r = mix64(seed * 0x9e3779b97f4a7c15ull + static_cast<uint64_t>(i));
    const float u = (static_cast<float>(r >> 40) / 16777216.0f) * 2.0f - 1.0f;
    detail::store(dst, bf16, i, u * scale);
  }
}

}  // namespace

int convert_f32_to_bf16(const float* src, void* dst, int64_t n, Stream stream) {
  if (n == 0) return 0;
  to_bf16_kernel<<<detail::blocks_for(n, 256), 256, 0, detail::as_stream(stream)>>>(
      src, static_cast<__nv_bfloat16*>(dst), n);
  return detail::last_error();
}

int gather_rows(const void* x, const int32_t* rows, void* out, int64_t num_rows, int64_t row_bytes,
                Stream stream) {
  if (num_rows == 0) return 0;
  gather_kernel<<<static_cast<unsigned>(num_rows), 256, 0, detail::as_stream(stream)>>>(
      static_cast<const uint16_t*>(x), rows, static_cast<uint16_t*>(out), row_bytes / 2);
  return detail::last_error();
}

int fill_uniform(void* dst, int64_t n, bool bf16, uint64_t seed, float scale, Stream stream) {
  if (n == 0) return 0;
  fill_kernel<<<detail::blocks_for(n, 256, 132 * 64), 256, 0, detail::as_stream(stream)>>>(
      dst, n, bf16, seed, scale);
  return detail::last_error();
}

}  // namespace macserve::kernels::cuda
