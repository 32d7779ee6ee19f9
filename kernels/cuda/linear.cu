// The fixed-order linear layer (macserve/kernels/cuda/linear.cuh): one tiled mma.sync GEMM
// template, launched with small tiles for decode-sized m (split over k segments, so that there are
// enough warps streaming the weights) and large ones elsewhere; on Hopper, for prefill-sized m
// and wide layers from 32 rows, the wgmma main loop of linear_wgmma.cu instead. Every shape runs
// the same per-output arithmetic (the order in linear.cuh).
//
// CTA: kWarpsN x kWarpsM warps; warp (wn, wm) owns kTn m16 tiles of w's rows by kTm n8 tiles of x's
// rows. w and x tiles of kBk columns go through a kStages-deep cp.async ring in shared memory,
// rows swizzled (detail::swizzle) so ldmatrix is free of bank conflicts; columns and rows past the
// matrix edges are zero-filled, and k16 steps past k are not issued at all (an extra mma of zeros
// would turn an accumulator of -0 into +0). Tiles never straddle a segment (kLinearSegment is a
// multiple of every kBk), so a segment ends after some tile; its sum then joins the output's
// running total. Mode says where the segment sums go (kSplit: segments in parallel, added up in
// segment order by reduce_segments_kernel).
#include <cuda_runtime.h>

#include <cstdint>

#include "cuda_util.cuh"
#include "linear_wgmma.cuh"
#include "macserve/kernels/cuda/linear.cuh"
#include "mma.cuh"

namespace macserve::kernels::cuda {
namespace {

// Where a CTA's segment sums go: kSplit: one segment a CTA (blockIdx.z), its sums to the workspace;
// kOutput: every segment in one CTA, the running total in y (read back by the thread that wrote
// it; a total in registers would double the accumulators and halve the CTAs an SM holds).
enum Mode { kSplit, kOutput };

template <int kWarpsN, int kWarpsM, int kTn, int kTm, int kBk, int kStages, int kMode>
struct Gemm {
  static_assert(kTm % 2 == 0, "x fragments are loaded two n8 tiles at a time");
  static_assert(kLinearSegment % kBk == 0, "tiles must not straddle a segment");
  static constexpr int kThreads = 32 * kWarpsN * kWarpsM;
  static constexpr int kBn = 16 * kTn * kWarpsN;  // w rows per CTA
  static constexpr int kBm = 8 * kTm * kWarpsM;   // x rows per CTA
  static constexpr int kCpr = kBk / 8;            // 16-byte chunks per tile row
  static constexpr int kStageElems = (kBn + kBm) * kBk;
  static constexpr size_t kSmem = static_cast<size_t>(kStages) * kStageElems * 2;
  static constexpr int kTilesPerSegment = kLinearSegment / kBk;
};

template <int kWarpsN, int kWarpsM, int kTn, int kTm, int kBk, int kStages, int kMode>
__global__ void __launch_bounds__(32 * kWarpsN * kWarpsM)
    linear_fixed_kernel(LinearFixedParams p, float* segment_out) {
  using T = Gemm<kWarpsN, kWarpsM, kTn, kTm, kBk, kStages, kMode>;
  extern __shared__ __align__(128) uint16_t smem[];
  const int tid = static_cast<int>(threadIdx.x), lane = tid % 32, warp = tid / 32;
  const int wn = warp % kWarpsN, wm = warp / kWarpsN;
  const int64_t n0 = static_cast<int64_t>(blockIdx.x) * T::kBn;
  const int64_t m0 = static_cast<int64_t>(blockIdx.y) * T::kBm;
  const auto* w = static_cast<const uint16_t*>(p.w);
  const auto* x = static_cast<const uint16_t*>(p.x);
  const int64_t K = p.k;
  const int all_tiles = static_cast<int>((K + kBk - 1) / kBk);
  // Tiles [t_begin, t_end) of k: one segment with kSplit, else all of them.
  constexpr bool kSplitK = kMode == kSplit;
  const int t_begin = kSplitK ? static_cast<int>(blockIdx.z) * T::kTilesPerSegment : 0;
  const int t_end = kSplitK ? min(all_tiles, t_begin + T::kTilesPerSegment) : all_tiles;
  const int tiles = t_end - t_begin;

  // Rows [row0, row0 + rows) of `src` (`limit` rows), columns [k0, k0 + kBk), into `dst`.
  auto load_rows = [&](uint16_t* dst, const uint16_t* src, int64_t row0, int rows, int64_t limit,
                       int64_t k0) {
    for (int j = tid; j < rows * T::kCpr; j += T::kThreads) {
      const int r = j / T::kCpr, c = j % T::kCpr;
      const int64_t row = row0 + r, col = k0 + 8 * c;
      const bool in = row < limit && col < K;
      detail::cp_async16_or_zero(dst + detail::swizzle<T::kCpr>(r, c) * 8,
                                 in ? src + row * K + col : src, in);
    }
  };
  auto load = [&](int i) {  // tile t_begin + i into ring slot i % kStages
    uint16_t* ws = smem + (i % kStages) * T::kStageElems;
    const int64_t k0 = static_cast<int64_t>(t_begin + i) * kBk;
    load_rows(ws, w, n0, T::kBn, p.n, k0);
    load_rows(ws + T::kBn * kBk, x, m0, T::kBm, p.m, k0);
  };

  float acc[kTn][kTm][4];
  const int g = lane / 4, tq = lane % 4;
  // Fragment element e of tile (i, j): w row 16 i + g + 8 (e / 2), x row 8 j + 2 t + e % 2.
  auto each_output = [&](auto&& f) {
#pragma unroll
    for (int ti = 0; ti < kTn; ++ti)
#pragma unroll
      for (int j = 0; j < kTm; ++j)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int64_t n = n0 + 16 * (kTn * wn + ti) + g + 8 * (e / 2);
          const int64_t m = m0 + 8 * (kTm * wm + j) + 2 * tq + e % 2;
          if (n < p.n && m < p.m) f(ti, j, e, m * p.n + n);
        }
  };
  auto clear = [&] {
#pragma unroll
    for (int i = 0; i < kTn; ++i)
#pragma unroll
      for (int j = 0; j < kTm; ++j)
#pragma unroll
        for (int e = 0; e < 4; ++e) acc[i][j][e] = 0.0f;
  };
  clear();

#pragma unroll
  for (int s = 0; s < kStages - 1; ++s) {
    if (s < tiles) load(s);
    detail::cp_async_commit();
  }
  const int mi = lane / 8, mr = lane % 8;
  for (int i = 0; i < tiles; ++i) {
    detail::cp_async_wait<kStages - 2>();
    __syncthreads();  // tile i has landed for every thread; slot (i - 1) % kStages is free
    if (i + kStages - 1 < tiles) load(i + kStages - 1);
    detail::cp_async_commit();
    const uint16_t* ws = smem + (i % kStages) * T::kStageElems;
    const uint16_t* xs = ws + T::kBn * kBk;
    const int t = t_begin + i;
    const int64_t k0 = static_cast<int64_t>(t) * kBk;
#pragma unroll
    for (int kk = 0; kk < kBk / 16; ++kk) {
      if (k0 + 16 * kk >= K) break;  // the same for the whole CTA
      uint32_t a[kTn][4];
#pragma unroll
      for (int ti = 0; ti < kTn; ++ti)
        detail::ldmatrix_x4<false>(
            a[ti], ws + detail::swizzle<T::kCpr>(16 * (kTn * wn + ti) + 8 * (mi % 2) + mr,
                                                 2 * kk + mi / 2) *
                            8);
#pragma unroll
      for (int j = 0; j < kTm; j += 2) {
        uint32_t b[4];
        detail::ldmatrix_x4<false>(
            b,
            xs + detail::swizzle<T::kCpr>(8 * (kTm * wm + j + mi / 2) + mr, 2 * kk + mi % 2) * 8);
#pragma unroll
        for (int ti = 0; ti < kTn; ++ti) {
          detail::mma_bf16(acc[ti][j], a[ti], b[0], b[1]);
          detail::mma_bf16(acc[ti][j + 1], a[ti], b[2], b[3]);
        }
      }
    }
    if constexpr (!kSplitK) {  // a segment ends: total = s_0, then total + s_1, ...
      if ((t + 1) % T::kTilesPerSegment == 0 || t + 1 == all_tiles) {
        const bool first = t < T::kTilesPerSegment;
        each_output([&](int ti, int j, int e, int64_t at) {
          p.y[at] = first ? acc[ti][j][e] : p.y[at] + acc[ti][j][e];
        });
        clear();
      }
    }
  }
  detail::cp_async_wait<0>();

  if constexpr (kSplitK) {
    float* out = gridDim.z > 1 ? segment_out + blockIdx.z * p.m * p.n : p.y;
    each_output([&](int ti, int j, int e, int64_t at) { out[at] = acc[ti][j][e]; });
  }
}

// y = s_0 + s_1 + ... in segment order (the sums of kSplit CTAs).
__global__ void reduce_segments_kernel(const float* seg, float* y, int64_t count, int segments) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < count;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    float v = seg[i];
    for (int s = 1; s < segments; ++s) v = v + seg[s * count + i];
    y[i] = v;
  }
}

// k not a multiple of 8 (rows not made of 16-byte chunks; only the smallest test models): one
// thread an output, fmaf over k from 0 upwards. Chosen by k alone, so still one order for every m.
__global__ void linear_fixed_scalar_kernel(LinearFixedParams p) {
  const int64_t n = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (n >= p.n) return;
  const auto* w = static_cast<const __nv_bfloat16*>(p.w) + n * p.k;
  for (int64_t m = blockIdx.y; m < p.m; m += gridDim.y) {
    const auto* x = static_cast<const __nv_bfloat16*>(p.x) + m * p.k;
    float acc = 0.0f;
    for (int64_t i = 0; i < p.k; ++i)
      acc = fmaf(__bfloat162float(x[i]), __bfloat162float(w[i]), acc);
    p.y[m * p.n + n] = acc;
  }
}

int segments_of(int64_t k) { return static_cast<int>((k + kLinearSegment - 1) / kLinearSegment); }

template <int kWarpsN, int kWarpsM, int kTn, int kTm, int kBk, int kStages, int kMode>
int launch(const LinearFixedParams& p, float* workspace, Stream stream) {
  using T = Gemm<kWarpsN, kWarpsM, kTn, kTm, kBk, kStages, kMode>;
  auto* kernel = linear_fixed_kernel<kWarpsN, kWarpsM, kTn, kTm, kBk, kStages, kMode>;
  static const cudaError_t attr = cudaFuncSetAttribute(
      kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(T::kSmem));
  if (attr != cudaSuccess) return static_cast<int>(attr);
  const int segments = kMode == kSplit ? segments_of(p.k) : 1;
  const dim3 grid(static_cast<unsigned>((p.n + T::kBn - 1) / T::kBn),
                  static_cast<unsigned>((p.m + T::kBm - 1) / T::kBm),
                  static_cast<unsigned>(segments));
  const auto st = detail::as_stream(stream);
  kernel<<<grid, T::kThreads, T::kSmem, st>>>(p, workspace);
  if (segments > 1) {
    const int64_t count = p.m * p.n;
    reduce_segments_kernel<<<detail::blocks_for(count, 256, 4096), 256, 0, st>>>(workspace, p.y,
                                                                                 count, segments);
  }
  return detail::last_error();
}

// Segments in parallel (one a CTA, so that enough CTAs stream the weights at decode-sized m or
// fill the GPU at a few hundred rows) wherever their sums take at most max_segment_bytes(m); else
// (prefill chunks) every CTA walks all of k, its running total in y. Up to 128 MiB at decode-sized
// m, which takes the lm_head at m = 64 (1.7x cuBLAS's time in one CTA per tile, 1.25x split);
// 64 MiB above. Tiles measured on the H100 (docs/perf/deterministic.md).
constexpr int64_t kMaxSegmentBytes = int64_t{128} << 20;

int64_t max_segment_bytes(int64_t m) { return m <= 64 ? kMaxSegmentBytes : kMaxSegmentBytes / 2; }

bool split_fits(int64_t m, int64_t n, int64_t k) {
  const int64_t segments = segments_of(k);
  return segments > 1 && segments * m * n * 4 <= max_segment_bytes(m);
}

template <int kWarpsN, int kWarpsM, int kTn, int kTm, int kBk, int kStages>
int launch_either(const LinearFixedParams& p, float* workspace, Stream stream) {
  if (split_fits(p.m, p.n, p.k))
    return launch<kWarpsN, kWarpsM, kTn, kTm, kBk, kStages, kSplit>(p, workspace, stream);
  return launch<kWarpsN, kWarpsM, kTn, kTm, kBk, kStages, kOutput>(p, workspace, stream);
}

}  // namespace

int64_t linear_fixed_max_workspace_bytes() { return kMaxSegmentBytes; }

int64_t linear_fixed_workspace_floats(int64_t m, int64_t n, int64_t k) {
  return k % 8 == 0 && split_fits(m, n, k) ? segments_of(k) * m * n : 0;
}

int linear_fixed(const LinearFixedParams& p, float* workspace, Stream stream) {
  if (p.k < 1 || p.m < 1 || p.n < 1) return static_cast<int>(cudaErrorInvalidValue);
  if (p.k % 8 != 0) {
    constexpr int kThreads = 128;
    const dim3 grid(static_cast<unsigned>((p.n + kThreads - 1) / kThreads),
                    static_cast<unsigned>(p.m < 65535 ? p.m : 65535));
    linear_fixed_scalar_kernel<<<grid, kThreads, 0, detail::as_stream(stream)>>>(p);
    return detail::last_error();
  }
  if ((reinterpret_cast<uintptr_t>(p.x) | reinterpret_cast<uintptr_t>(p.w)) % 16 != 0)
    return static_cast<int>(cudaErrorMisalignedAddress);
  if (linear_fixed_workspace_floats(p.m, p.n, p.k) > 0 && workspace == nullptr)
    return static_cast<int>(cudaErrorInvalidValue);
  if (linear_wgmma_supported(p) && linear_wgmma_preferred(p)) return linear_wgmma(p, stream);
  // Decode-sized m: 128 w rows a CTA (4 warps of 32), all of x's rows.
  if (p.m <= 16) return launch_either<4, 1, 2, 2, 128, 3>(p, workspace, stream);
  if (p.m <= 32) return launch_either<4, 1, 2, 4, 64, 4>(p, workspace, stream);
  if (p.m <= 64) return launch_either<4, 1, 2, 8, 64, 4>(p, workspace, stream);
  // Larger: 128 x 128 output tiles, 8 warps of 64 x 32.
  return launch_either<2, 4, 4, 4, 64, 3>(p, workspace, stream);
}

}  // namespace macserve::kernels::cuda
