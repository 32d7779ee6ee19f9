// The fixed-order linear layer's main loop on Hopper's warpgroup MMA (sm_90a), for prefill-sized m
// and wide layers at m >= 32 (linear_fixed dispatches; the order it keeps is the one in
// macserve/kernels/cuda/linear.cuh).
//
// CTA = a producer warpgroup and kConsumers consumer warpgroups over 64 * kConsumers rows of w by
// 128 rows of x; every CTA walks all of k. One producer thread loads k tiles of 64 columns of both
// (TMA, 2-D tensor maps over w and x, 128-byte swizzle; rows and columns past the edges arrive as
// zeros) into a ring of stages, each completing its `full` mbarrier. Consumer c issues, per tile,
// one wgmma m64n128k16 per 16 columns with its 64 w rows as the A operand and the 128 x rows as the
// B operand, both K-major in shared memory, and hands the stage back on its `empty` barrier once
// the MMAs that read it are complete. Per output this is the mma.sync kernel's arithmetic: a
// segment's sum starts at +0 and takes one k16 step per instruction in k order (steps past k are
// not issued), then joins the output's total in registers (s_0, then total + s_1, ...). That the
// two instructions round a k16 step alike was found bit for bit on an H100 (log run 31) and is
// checked by cuda_ops_test (DeterministicLinearRowsAreBatchInvariant, rows on both sides of the
// dispatch).
#include <cstdint>

#include "cuda_util.cuh"
#include "hopper.cuh"
#include "linear_wgmma.cuh"
#include "tma_map.cuh"

namespace macserve::kernels::cuda {
namespace {

constexpr int kBm = 128;  // x rows per CTA: the wgmma's N
constexpr int kBk = 64;   // k columns per stage: one 128-byte swizzled row
constexpr int kRowBytes = 128;
constexpr int kTilesPerSegment = static_cast<int>(kLinearSegment / kBk);

template <int kConsumers>
struct Tile {
  static constexpr int kBn = 64 * kConsumers;  // w rows per CTA
  static constexpr int kThreads = 128 * (1 + kConsumers);
  static constexpr int kStageBytes = (kBn + kBm) * kRowBytes;
  static constexpr int kStages = (192 << 10) / kStageBytes;  // one CTA an SM: 6 or 8 stages
  static constexpr size_t kSmem =
      1024 /* alignment slack */ + size_t{kStages} * kStageBytes + 2 * kStages * sizeof(uint64_t);
};

template <int kConsumers>
__global__ void __launch_bounds__(Tile<kConsumers>::kThreads, 1)
    linear_wgmma_kernel(const LinearFixedParams p, const __grid_constant__ CUtensorMap tw,
                        const __grid_constant__ CUtensorMap tx) {
  using T = Tile<kConsumers>;
  constexpr int kStages = T::kStages;
  extern __shared__ unsigned char smem_raw[];
  unsigned char* base = smem_raw + ((1024 - (detail::smem_addr(smem_raw) & 1023)) & 1023);
  auto* full = reinterpret_cast<uint64_t*>(base + kStages * T::kStageBytes);
  uint64_t* empty = full + kStages;

  const int64_t K = p.k;
  const int m0 = static_cast<int>(blockIdx.x) * kBm, n0 = static_cast<int>(blockIdx.y) * T::kBn;
  const int tiles = static_cast<int>((K + kBk - 1) / kBk);
  const int wg = static_cast<int>(threadIdx.x) / 128, tid = static_cast<int>(threadIdx.x) % 128;

  if (threadIdx.x == 0) {
    for (int i = 0; i < kStages; ++i) {
      detail::mbar_init(&full[i], 1);
      detail::mbar_init(&empty[i], 4 * kConsumers);  // one arrival per consumer warp
    }
    detail::mbar_init_fence();
  }
  __syncthreads();

  if (wg == 0) {  // producer
    if constexpr (kConsumers == 2) detail::regs_dealloc<40>();
    if (tid != 0) return;
    detail::tma_prefetch_descriptor(&tw);
    detail::tma_prefetch_descriptor(&tx);
    for (int i = 0; i < tiles; ++i) {
      const int st = i % kStages;
      if (i >= kStages) detail::mbar_wait(&empty[st], ((i / kStages) - 1) & 1);
      unsigned char* ws = base + st * T::kStageBytes;
      const int k0 = i * kBk;
      detail::mbar_arrive_expect_tx(&full[st], T::kStageBytes);
      detail::tma_load_2d(ws, &tw, &full[st], k0, n0);
      detail::tma_load_2d(ws + T::kBn * kRowBytes, &tx, &full[st], k0, m0);
    }
    return;
  }

  if constexpr (kConsumers == 2)
    detail::regs_alloc<232>();
  else
    detail::named_barrier(1, 128);  // converged here (else ptxas serializes the MMAs)
  const int c = wg - 1, warp = tid / 32, lane = tid % 32, g = lane / 4, t = lane % 4;
  float d[64];
  float total[64];
#pragma unroll
  for (int i = 0; i < 64; ++i) d[i] = 0.0f;
  const auto release = [&](int i) {  // this warp is done with tile i's stage
    if (lane == 0) detail::mbar_arrive(&empty[i % kStages]);
  };

  // Segment by segment: its sum from +0 in d, each tile's MMAs left in flight while the next
  // tile's are issued; then total = s_0, total + s_1, ...
  for (int seg = 0, i = 0; seg < tiles; seg += kTilesPerSegment) {
    if (seg > 0) {
#pragma unroll
      for (int r = 0; r < 64; ++r) d[r] = 0.0f;
    }
    const int seg_tiles = min(tiles, seg + kTilesPerSegment) - seg;
    for (int j = 0; j < seg_tiles; ++j, ++i) {
      const int st = i % kStages;
      const int64_t left16 = (K - static_cast<int64_t>(i) * kBk + 15) / 16;
      const unsigned char* ws = base + st * T::kStageBytes;
      const unsigned char* xs = ws + T::kBn * kRowBytes;
      detail::mbar_wait(&full[st], static_cast<uint32_t>((i / kStages) & 1));
      detail::wgmma_fence();
#pragma unroll
      for (int kk = 0; kk < kBk / 16; ++kk)
        if (kk < left16)
          detail::wgmma_m64n128_ss(d,
                                   detail::sw128_desc(ws + 64 * c * kRowBytes + kk * 32, 16, 1024),
                                   detail::sw128_desc(xs + kk * 32, 16, 1024), 1);
      detail::wgmma_commit();
      detail::wgmma_wait<1>();  // the previous tile's MMAs are done: its stage goes back
      if (j > 0) release(i - 1);
    }
    detail::wgmma_wait<0>();
    detail::fence_regs(d);
    release(i - 1);
#pragma unroll
    for (int r = 0; r < 64; ++r) total[r] = seg == 0 ? d[r] : total[r] + d[r];
  }

  // Register 4j + e: w row 64c + 16 warp + g + 8 (e / 2), x row 8j + 2t + e % 2.
#pragma unroll
  for (int r = 0; r < 64; ++r) {
    const int64_t n = n0 + 64 * c + 16 * warp + g + 8 * ((r % 4) / 2);
    const int64_t m = m0 + 8 * (r / 4) + 2 * t + r % 2;
    if (n < p.n && m < p.m) p.y[m * p.n + n] = total[r];
  }
}

template <int kConsumers>
int launch(const LinearFixedParams& p, cudaStream_t st) {
  using T = Tile<kConsumers>;
  CUtensorMap tw{}, tx{};
  if (!detail::make_sw128_map(&tw, p.w, p.n, p.k, T::kBn) ||
      !detail::make_sw128_map(&tx, p.x, p.m, p.k, kBm))
    return static_cast<int>(cudaErrorInvalidValue);
  auto* kernel = linear_wgmma_kernel<kConsumers>;
  static const cudaError_t opt_in = cudaFuncSetAttribute(
      kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(T::kSmem));
  if (opt_in != cudaSuccess) return static_cast<int>(opt_in);
  // x's tiles vary fastest: the CTAs in flight share a few w tiles, which stay in L2 while every x
  // tile reads them.
  const dim3 grid(static_cast<unsigned>((p.m + kBm - 1) / kBm),
                  static_cast<unsigned>((p.n + T::kBn - 1) / T::kBn));
  kernel<<<grid, T::kThreads, T::kSmem, st>>>(p, tw, tx);
  return detail::last_error();
}

int64_t tiles_of(const LinearFixedParams& p, int64_t w_rows) {
  return (p.m + kBm - 1) / kBm * ((p.n + w_rows - 1) / w_rows);
}

}  // namespace

bool linear_wgmma_supported(const LinearFixedParams& p) {
  // TMA: 16-byte aligned bases and row strides; coordinates are 32-bit. The grid's y holds the w
  // tiles (at most 65,535 of 64 rows).
  return detail::hopper_tma_available() && p.k % 8 == 0 && p.m <= INT32_MAX &&
         (p.n + 63) / 64 <= 65535 &&
         (reinterpret_cast<uintptr_t>(p.x) | reinterpret_cast<uintptr_t>(p.w)) % 16 == 0;
}

bool linear_wgmma_preferred(const LinearFixedParams& p) {
  // Measured on the H100 (docs/perf/deterministic.md): from 65 rows the wgmma loop wins every 8B
  // shape; at 32-64 rows only where two-consumer CTAs alone fill the GPU (gate/up, lm_head), the
  // mma.sync kernel's split segments elsewhere; below 32 rows the mma.sync kernel.
  return p.m >= 65 || (p.m >= 32 && tiles_of(p, 128) >= detail::device_sms());
}

int linear_wgmma(const LinearFixedParams& p, Stream stream) {
  const auto st = detail::as_stream(stream);
  // One consumer a CTA (64 w rows) while that grid fits in one wave: twice the CTAs, each done
  // sooner; two (each x tile read once for 128 w rows) once it does not.
  if (tiles_of(p, 64) <= detail::device_sms()) return launch<1>(p, st);
  return launch<2>(p, st);
}

}  // namespace macserve::kernels::cuda
