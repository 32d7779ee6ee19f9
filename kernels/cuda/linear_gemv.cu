// A GEMV for up to kLinearGemvMaxRows rows of x (macserve/kernels/cuda/linear.cuh; CudaBackend
// takes it at m = 1): weights streamed once by CUDA cores, each 16-byte chunk used for all m rows.
//
// A warp owns R w rows: R consecutive ones, or with SwiGLU fused, gate row j and up row inter + j,
// whose sums then go through the swiglu kernel's expression. Lane l takes a row's 16-byte chunks
// l, l + 32, l + 64, ... in that order, kUnroll of them in flight at once (loads marked not to stay
// in L1, 256-byte L2 fetches); x's chunks come through L1, where every warp of the SM finds them.
// An output's sum is therefore fixed by k alone: per lane, fmaf over its chunks in order (8
// products a chunk, in element order) from +0, then the lanes' sums added in the xor butterfly of
// warp_sum. Neither m nor R nor the other rows change it.
#include <cuda_runtime.h>

#include <cstdint>

#include "cuda_util.cuh"
#include "macserve/kernels/cuda/linear.cuh"

namespace macserve::kernels::cuda {
namespace {

constexpr int kWarps = 4;   // per CTA
constexpr int kUnroll = 4;  // chunks in flight per lane and w row (4 beat 8 and 16, run 27)
constexpr int kChunk = 8;   // bf16 elements in 16 bytes

__device__ __forceinline__ uint4 load_streaming(const uint4* p) {
  uint4 v;
  asm("ld.global.nc.L1::no_allocate.L2::256B.v4.u32 {%0, %1, %2, %3}, [%4];"
      : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
      : "l"(p));
  return v;
}

__device__ __forceinline__ float lo(uint32_t u) { return __uint_as_float(u << 16); }
__device__ __forceinline__ float hi(uint32_t u) { return __uint_as_float(u & 0xffff0000u); }

// acc += w . x over one chunk, element 0 first.
__device__ __forceinline__ float dot_chunk(const uint4& w, const uint4& x, float acc) {
  acc = fmaf(lo(w.x), lo(x.x), acc);
  acc = fmaf(hi(w.x), hi(x.x), acc);
  acc = fmaf(lo(w.y), lo(x.y), acc);
  acc = fmaf(hi(w.y), hi(x.y), acc);
  acc = fmaf(lo(w.z), lo(x.z), acc);
  acc = fmaf(hi(w.z), hi(x.z), acc);
  acc = fmaf(lo(w.w), lo(x.w), acc);
  return fmaf(hi(w.w), hi(x.w), acc);
}

// Rows of w a warp owns: R consecutive ones, or (kSwiglu) gate row j and up row inter + j.
struct GemvArgs {
  const uint4* x;
  const uint4* w;
  float* y;   // [m, n] (not kSwiglu)
  void* act;  // [m, n] (kSwiglu: n = inter)
  bool act_bf16;
  int64_t n, k;  // n: outputs per x row
};

template <int M, int R, bool kSwiglu>
__global__ void __launch_bounds__(32 * kWarps) linear_gemv_kernel(GemvArgs a) {
  static_assert(!kSwiglu || R == 2, "a SwiGLU warp owns a gate row and an up row");
  const int lane = static_cast<int>(threadIdx.x) % 32;
  const int64_t warp = static_cast<int64_t>(blockIdx.x) * kWarps + threadIdx.x / 32;
  const int64_t row0 = kSwiglu ? warp : warp * R, row_step = kSwiglu ? a.n : 1;
  if (row0 >= a.n) return;
  const int64_t chunks = a.k / kChunk;
  const uint4* w[R];
#pragma unroll
  for (int r = 0; r < R; ++r) {  // rows past n read row0's chunks again and are not stored
    const int64_t row = row0 + r * row_step;
    w[r] = a.w + (kSwiglu || row < a.n ? row : row0) * chunks;
  }
  float acc[R][M];
#pragma unroll
  for (int r = 0; r < R; ++r)
#pragma unroll
    for (int i = 0; i < M; ++i) acc[r][i] = 0.0f;
  for (int64_t base = lane; base < chunks; base += 32 * kUnroll) {
    uint4 wv[R][kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int64_t c = base + 32 * u;
#pragma unroll
      for (int r = 0; r < R; ++r)
        if (c < chunks) wv[r][u] = load_streaming(w[r] + c);
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int64_t c = base + 32 * u;
      if (c >= chunks) break;
#pragma unroll
      for (int i = 0; i < M; ++i) {
        const uint4 xv = __ldg(a.x + i * chunks + c);
#pragma unroll
        for (int r = 0; r < R; ++r) acc[r][i] = dot_chunk(wv[r][u], xv, acc[r][i]);
      }
    }
  }
  // Every lane ends with the same sums (warp_sum's butterfly); lanes take turns storing them.
#pragma unroll
  for (int i = 0; i < M; ++i) {
    if constexpr (kSwiglu) {
      const float g = detail::warp_sum(acc[0][i]), u = detail::warp_sum(acc[1][i]);
      if (lane == i % 32) detail::store(a.act, a.act_bf16, i * a.n + row0, detail::silu_mul(g, u));
    } else {
#pragma unroll
      for (int r = 0; r < R; ++r) {
        const float s = detail::warp_sum(acc[r][i]);
        if (lane == (r * M + i) % 32 && row0 + r < a.n) a.y[i * a.n + row0 + r] = s;
      }
    }
  }
}

template <bool kSwiglu>
int launch(const GemvArgs& a, int64_t m, cudaStream_t stream) {
  return detail::with_group_size(m, static_cast<int>(cudaErrorInvalidValue), [&](auto mc) {
    constexpr int M = decltype(mc)::value;
    // Two w rows a warp from 3 x rows on (each x chunk read from L1 then serves two rows), and
    // always for SwiGLU.
    constexpr int R = kSwiglu || M > 2 ? 2 : 1;
    const int64_t warps = kSwiglu ? a.n : (a.n + R - 1) / R;
    linear_gemv_kernel<M, R, kSwiglu>
        <<<static_cast<unsigned>((warps + kWarps - 1) / kWarps), 32 * kWarps, 0, stream>>>(a);
    return detail::last_error();
  });
}

}  // namespace

bool linear_gemv_supports(const LinearGemvParams& p) {
  return p.m >= 1 && p.m <= kLinearGemvMaxRows && p.n >= 1 && p.k >= kChunk && p.k % kChunk == 0 &&
         (reinterpret_cast<uintptr_t>(p.x) | reinterpret_cast<uintptr_t>(p.w)) % 16 == 0;
}

int linear_gemv(const LinearGemvParams& p, Stream stream) {
  if (!linear_gemv_supports(p)) return static_cast<int>(cudaErrorInvalidValue);
  const GemvArgs a{static_cast<const uint4*>(p.x),
                   static_cast<const uint4*>(p.w),
                   p.y,
                   nullptr,
                   false,
                   p.n,
                   p.k};
  return launch<false>(a, p.m, detail::as_stream(stream));
}

int linear_gemv_swiglu(const LinearGemvSwigluParams& p, Stream stream) {
  if (!linear_gemv_supports({p.x, p.w, nullptr, p.m, 2 * p.inter, p.k}))
    return static_cast<int>(cudaErrorInvalidValue);
  const GemvArgs a{static_cast<const uint4*>(p.x),
                   static_cast<const uint4*>(p.w),
                   nullptr,
                   p.act,
                   p.act_bf16,
                   p.inter,
                   p.k};
  return launch<true>(a, p.m, detail::as_stream(stream));
}

}  // namespace macserve::kernels::cuda
