// Small-batch linear layers (see macserve/kernels/cuda/linear.cuh): one block per 16 weight rows
// (32 with SwiGLU: 16 gate rows and the matching up rows), kWarps warps splitting k into steps of
// kStepK, each thread loading 16 bytes of a weight row per 32 k. The mma's k order is permuted: a
// thread's 8 consecutive k of a row become the k pairs (2t, 2t+1) and (2t+8, 2t+9) of two m16n8k16
// products, and the input row gets the same permutation, so every product term meets its partner.
#include <cstdint>

#include "cuda_util.cuh"
#include "macserve/kernels/cuda/linear.cuh"

namespace macserve::kernels::cuda {
namespace {

constexpr int kWarps = 8;
constexpr int kUnroll = 4;  // 32-k groups per warp step: 256 bytes of each weight row
constexpr int kStepK = 32 * kUnroll;
constexpr int kTileRows = 16;

// Weights are read once: keep them out of L1, which holds the (shared) input rows.
__device__ __forceinline__ uint4 load_weights(const __nv_bfloat16* p) {
  uint4 v;
  asm("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
      : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
      : "l"(p));
  return v;
}

__device__ __forceinline__ uint4 load_input(const __nv_bfloat16* p) {
  return __ldg(reinterpret_cast<const uint4*>(p));
}

// d += a (16 x 16, row-major) * b (16 x 8, column-major), bf16 in, f32 accumulate.
__device__ __forceinline__ void mma_bf16(float (&d)[4], uint32_t a0, uint32_t a1, uint32_t a2,
                                         uint32_t a3, uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
      "{%8, %9}, {%0, %1, %2, %3};"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

// The partial sums of one warp over its k steps. TA weight tiles (w_rows[ta][0] and [1]: the
// thread's rows g and g + 8 of the tile, w_ok false past the matrix), NT input tiles of 8 rows
// (x_rows: the thread's input row g of each, x_ok false past m). acc[ta][nt] is the mma's C
// fragment. Rows past the end point at a valid row and their loads are zeroed after the fact, so
// every load of a step is issued before the first product (no branches between them).
template <int TA, int NT>
__device__ __forceinline__ void accumulate(float (&acc)[TA][NT][4],
                                           const __nv_bfloat16* const (&w_rows)[TA][2],
                                           const bool (&w_ok)[TA][2],
                                           const __nv_bfloat16* const (&x_rows)[NT],
                                           const bool (&x_ok)[NT], int64_t k, int warp, int t) {
  const uint4 zero = make_uint4(0, 0, 0, 0);
  for (int64_t k0 = int64_t{warp} * kStepK; k0 < k; k0 += int64_t{kWarps} * kStepK) {
    uint4 a[kUnroll][TA][2];
    uint4 b[kUnroll][NT];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int64_t kk = k0 + 32 * u + 8 * t;
      const bool in = kk < k;
      const int64_t at = in ? kk : 0;
#pragma unroll
      for (int ta = 0; ta < TA; ++ta)
#pragma unroll
        for (int h = 0; h < 2; ++h) a[u][ta][h] = load_weights(w_rows[ta][h] + at);
#pragma unroll
      for (int nt = 0; nt < NT; ++nt) b[u][nt] = load_input(x_rows[nt] + at);
#pragma unroll
      for (int ta = 0; ta < TA; ++ta)
#pragma unroll
        for (int h = 0; h < 2; ++h)
          if (!(in && w_ok[ta][h])) a[u][ta][h] = zero;
#pragma unroll
      for (int nt = 0; nt < NT; ++nt)
        if (!(in && x_ok[nt])) b[u][nt] = zero;
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u)
#pragma unroll
      for (int ta = 0; ta < TA; ++ta)
#pragma unroll
        for (int nt = 0; nt < NT; ++nt) {
          const uint4 &lo = a[u][ta][0], &hi = a[u][ta][1], &x = b[u][nt];
          mma_bf16(acc[ta][nt], lo.x, hi.x, lo.y, hi.y, x.x, x.y);
          mma_bf16(acc[ta][nt], lo.z, hi.z, lo.w, hi.w, x.z, x.w);
        }
  }
}

// Sums the warps' fragments in warp order (fixed: the result does not depend on timing) into
// warp 0's acc; returns true in warp 0, whose threads then hold the block's results.
template <int TA, int NT>
__device__ __forceinline__ bool reduce_warps(float (&acc)[TA][NT][4], int warp, int lane) {
  constexpr int kValues = TA * NT * 4;
  __shared__ float partial[kWarps][kValues][32];
#pragma unroll
  for (int ta = 0; ta < TA; ++ta)
#pragma unroll
    for (int nt = 0; nt < NT; ++nt)
#pragma unroll
      for (int r = 0; r < 4; ++r) partial[warp][(ta * NT + nt) * 4 + r][lane] = acc[ta][nt][r];
  __syncthreads();
  if (warp != 0) return false;
#pragma unroll
  for (int ta = 0; ta < TA; ++ta)
#pragma unroll
    for (int nt = 0; nt < NT; ++nt)
#pragma unroll
      for (int r = 0; r < 4; ++r) {
        float s = partial[0][(ta * NT + nt) * 4 + r][lane];
#pragma unroll
        for (int w = 1; w < kWarps; ++w) s += partial[w][(ta * NT + nt) * 4 + r][lane];
        acc[ta][nt][r] = s;
      }
  return true;
}

__host__ __device__ __forceinline__ int64_t tiles(int64_t n) {
  return (n + kTileRows - 1) / kTileRows;
}

// The rows a thread loads: input row g of each 8-row input tile, weight rows g and g + 8 of a
// tile; past the end, row 0 with its flag false.
template <int NT>
__device__ __forceinline__ void input_rows(const __nv_bfloat16* (&x_rows)[NT], bool (&x_ok)[NT],
                                           const __nv_bfloat16* x, int64_t m, int64_t k, int g) {
#pragma unroll
  for (int nt = 0; nt < NT; ++nt) {
    const int64_t row = nt * 8 + g;
    x_ok[nt] = row < m;
    x_rows[nt] = x + (x_ok[nt] ? row : 0) * k;
  }
}

__device__ __forceinline__ void weight_rows(const __nv_bfloat16* (&rows)[2], bool (&ok)[2],
                                            const __nv_bfloat16* w, int64_t row0, int64_t n,
                                            int64_t k, int g) {
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int64_t row = row0 + g + 8 * h;
    ok[h] = row < n;
    rows[h] = w + (ok[h] ? row : 0) * k;
  }
}

template <int NT>
__global__ void __launch_bounds__(kWarps * 32) linear_small_m_kernel(SmallMLinearCudaParams p) {
  const int warp = static_cast<int>(threadIdx.x) / 32, lane = static_cast<int>(threadIdx.x) % 32;
  const int g = lane / 4, t = lane % 4;
  // This block's projection and its first row (selected without indexing the parameters at run
  // time, which would copy them to local memory).
  int64_t tile = blockIdx.x;
  SmallMProjection pr = p.proj[0];
#pragma unroll
  for (int i = 0; i + 1 < 3; ++i) {
    if (i + 1 < p.num_proj && tile >= tiles(pr.n)) {
      tile -= tiles(pr.n);
      pr = p.proj[i + 1];
    }
  }
  const int64_t row0 = tile * kTileRows;
  const auto* w = static_cast<const __nv_bfloat16*>(pr.w);
  const __nv_bfloat16* w_rows[1][2];
  bool w_ok[1][2];
  weight_rows(w_rows[0], w_ok[0], w, row0, pr.n, p.k, g);
  const __nv_bfloat16* x_rows[NT];
  bool x_ok[NT];
  input_rows<NT>(x_rows, x_ok, static_cast<const __nv_bfloat16*>(p.x), p.m, p.k, g);

  float acc[1][NT][4] = {};
  accumulate<1, NT>(acc, w_rows, w_ok, x_rows, x_ok, p.k, warp, t);
  if (!reduce_warps<1, NT>(acc, warp, lane)) return;
  const auto* bias = static_cast<const __nv_bfloat16*>(pr.bias);
#pragma unroll
  for (int nt = 0; nt < NT; ++nt)
#pragma unroll
    for (int r = 0; r < 4; ++r) {
      const int64_t m = nt * 8 + 2 * t + (r & 1), row = row0 + g + (r >= 2 ? 8 : 0);
      if (m < p.m && row < pr.n)
        pr.y[m * pr.n + row] =
            acc[0][nt][r] + (bias != nullptr ? __bfloat162float(bias[row]) : 0.0f);
    }
}

template <int NT>
__global__ void __launch_bounds__(kWarps * 32)
    linear_swiglu_small_m_kernel(SmallMSwigluCudaParams p) {
  const int warp = static_cast<int>(threadIdx.x) / 32, lane = static_cast<int>(threadIdx.x) % 32;
  const int g = lane / 4, t = lane % 4;
  const int64_t j0 = int64_t{blockIdx.x} * kTileRows;
  const auto* w = static_cast<const __nv_bfloat16*>(p.w_gate_up);
  const __nv_bfloat16* up = w + p.inter * p.k;
  const __nv_bfloat16* w_rows[2][2];
  bool w_ok[2][2];
  weight_rows(w_rows[0], w_ok[0], w, j0, p.inter, p.k, g);
  weight_rows(w_rows[1], w_ok[1], up, j0, p.inter, p.k, g);
  const __nv_bfloat16* x_rows[NT];
  bool x_ok[NT];
  input_rows<NT>(x_rows, x_ok, static_cast<const __nv_bfloat16*>(p.x), p.m, p.k, g);

  float acc[2][NT][4] = {};
  accumulate<2, NT>(acc, w_rows, w_ok, x_rows, x_ok, p.k, warp, t);
  if (!reduce_warps<2, NT>(acc, warp, lane)) return;
#pragma unroll
  for (int nt = 0; nt < NT; ++nt)
#pragma unroll
    for (int r = 0; r < 4; ++r) {
      const int64_t m = nt * 8 + 2 * t + (r & 1), j = j0 + g + (r >= 2 ? 8 : 0);
      if (m < p.m && j < p.inter) {
        const float gate = acc[0][nt][r], u = acc[1][nt][r];
        detail::store(p.act, p.act_bf16, m * p.inter + j, gate / (1.0f + expf(-gate)) * u);
      }
    }
}

}  // namespace

bool small_m_supported(int64_t m, int64_t k, const void* x, const void* w) {
  const auto aligned = [](const void* ptr) { return reinterpret_cast<uintptr_t>(ptr) % 16 == 0; };
  return m >= 1 && m <= kSmallMMaxRows && k > 0 && k % 8 == 0 && aligned(x) && aligned(w);
}

int linear_small_m(const SmallMLinearCudaParams& p, Stream stream) {
  if (p.num_proj < 1 || p.num_proj > 3) return static_cast<int>(cudaErrorInvalidValue);
  int64_t blocks = 0;
  for (int i = 0; i < p.num_proj; ++i) {
    if (!small_m_supported(p.m, p.k, p.x, p.proj[i].w))
      return static_cast<int>(cudaErrorInvalidValue);
    blocks += tiles(p.proj[i].n);
  }
  if (blocks == 0) return 0;
  const auto grid = static_cast<unsigned>(blocks);
  if (p.m <= 8)
    linear_small_m_kernel<1><<<grid, kWarps * 32, 0, detail::as_stream(stream)>>>(p);
  else
    linear_small_m_kernel<2><<<grid, kWarps * 32, 0, detail::as_stream(stream)>>>(p);
  return detail::last_error();
}

int linear_swiglu_small_m(const SmallMSwigluCudaParams& p, Stream stream) {
  if (!small_m_supported(p.m, p.k, p.x, p.w_gate_up))
    return static_cast<int>(cudaErrorInvalidValue);
  if (p.inter == 0) return 0;
  const auto grid = static_cast<unsigned>(tiles(p.inter));
  if (p.m <= 8)
    linear_swiglu_small_m_kernel<1><<<grid, kWarps * 32, 0, detail::as_stream(stream)>>>(p);
  else
    linear_swiglu_small_m_kernel<2><<<grid, kWarps * 32, 0, detail::as_stream(stream)>>>(p);
  return detail::last_error();
}

}  // namespace macserve::kernels::cuda
