// The register tile behind every CPU linear layer (f32 and quantized weights), its fixed
// reduction order: 8 lanes accumulate k = j mod 8 in order with FMA, then a fixed horizontal sum,
// then the k % 8 tail with scalar FMA. Each output element gets this sequence of operations
// whatever the tile shape, m, or the row's place in the batch, which is what makes the kernels
// batch-invariant. Built for AVX2 + FMA where the compiler targets them, with a scalar twin (same
// order, std::fma) elsewhere. And the cache blocking both kernels run the tile in (blocked_linear).
#pragma once

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#endif

namespace macserve::kernels::cpu::detail {

// The tile is the innermost loop of every CPU linear layer. Sanitizer builds leave it
// uninstrumented: under ASan every vector load was checked and it took 78% of the sanitized
// BatchedEqualsAlone tests' time. Its loads stay inside the x and w rows its caller passes (rows
// past mt or nt re-read row 0), and the code around it is instrumented.
#if defined(__clang__) || defined(__GNUC__)
#define MACSERVE_TILE_UNCHECKED __attribute__((no_sanitize("address", "undefined")))
#else
#define MACSERVE_TILE_UNCHECKED
#endif

constexpr int kTileN = 4;  // w rows per tile
constexpr int kTileM = 3;  // x rows per tile: 12 accumulators + 4 w loads + 1 x load <= 16 ymm

// y[m0 + i, n0 + j] for i < mt, j < nt: x rows start at x (stride k), w rows at w (stride k), y
// rows at y (stride ldy), bias indexed by n0 + j.
#if defined(__AVX2__) && defined(__FMA__)
inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// hsum of a, b, c and d at once, the same adds in the same order: [hsum(a), ..., hsum(d)]. Instead
// of 12 scalar hsums per tile: f32 prefill shapes up to 20% faster on Zen 3 (docs/perf/cpu.md).
inline __m128 hsum4(__m256 a, __m256 b, __m256 c, __m256 d) {
  // lanes l + (l + 4): [a's four | b's four], [c's | d's]
  const __m256 ab =
      _mm256_add_ps(_mm256_permute2f128_ps(a, b, 0x20), _mm256_permute2f128_ps(a, b, 0x31));
  const __m256 cd =
      _mm256_add_ps(_mm256_permute2f128_ps(c, d, 0x20), _mm256_permute2f128_ps(c, d, 0x31));
  // (0, 2) and (1, 3): [a02, a13, c02, c13 | b02, b13, d02, d13]
  const __m256 e = _mm256_add_ps(_mm256_shuffle_ps(ab, cd, _MM_SHUFFLE(1, 0, 1, 0)),
                                 _mm256_shuffle_ps(ab, cd, _MM_SHUFFLE(3, 2, 3, 2)));
  // a02 + a13 and so on: [a, c, a, c | b, d, b, d]
  const __m256 f = _mm256_add_ps(_mm256_shuffle_ps(e, e, _MM_SHUFFLE(2, 0, 2, 0)),
                                 _mm256_shuffle_ps(e, e, _MM_SHUFFLE(3, 1, 3, 1)));
  return _mm_unpacklo_ps(_mm256_castps256_ps128(f), _mm256_extractf128_ps(f, 1));
}
static_assert(kTileN == 4, "tile() sums a row of accumulators with one hsum4");

MACSERVE_TILE_UNCHECKED inline void tile(const float* x, const float* w, const float* bias,
                                         float* y, int64_t ldy, int64_t k, int64_t nt, int64_t mt) {
  const int64_t k8 = k / 8 * 8;
  __m256 acc[kTileM][kTileN];
  for (auto& row : acc)
    for (auto& a : row) a = _mm256_setzero_ps();
  const float* wr[kTileN];
  for (int j = 0; j < kTileN; ++j) wr[j] = w + (j < nt ? j : 0) * k;
  const float* xr[kTileM];
  for (int i = 0; i < kTileM; ++i) xr[i] = x + (i < mt ? i : 0) * k;
  for (int64_t kk = 0; kk < k8; kk += 8) {
    __m256 wv[kTileN];
    for (int j = 0; j < kTileN; ++j) wv[j] = _mm256_loadu_ps(wr[j] + kk);
    for (int i = 0; i < kTileM; ++i) {
      const __m256 xv = _mm256_loadu_ps(xr[i] + kk);
      for (int j = 0; j < kTileN; ++j) acc[i][j] = _mm256_fmadd_ps(xv, wv[j], acc[i][j]);
    }
  }
  if (nt == kTileN && k8 == k) {  // a full tile without a k tail: four outputs a row at once
    const __m128 bv = bias != nullptr ? _mm_loadu_ps(bias) : _mm_setzero_ps();
    for (int64_t i = 0; i < mt; ++i) {
      __m128 s = hsum4(acc[i][0], acc[i][1], acc[i][2], acc[i][3]);
      if (bias != nullptr) s = _mm_add_ps(s, bv);
      _mm_storeu_ps(y + i * ldy, s);
    }
    return;
  }
  for (int64_t i = 0; i < mt; ++i)
    for (int64_t j = 0; j < nt; ++j) {
      float s = hsum(acc[i][j]);
      for (int64_t t = k8; t < k; ++t) s = std::fma(xr[i][t], wr[j][t], s);
      if (bias != nullptr) s += bias[j];
      y[i * ldy + j] = s;
    }
}
#else
// Same order as the AVX2 tile: lane l sums k = l mod 8; hsum adds lanes (l, l + 4), then the two
// pairs ((0,2), (1,3)), then those two.
MACSERVE_TILE_UNCHECKED inline void tile(const float* x, const float* w, const float* bias,
                                         float* y, int64_t ldy, int64_t k, int64_t nt, int64_t mt) {
  const int64_t k8 = k / 8 * 8;
  for (int64_t i = 0; i < mt; ++i)
    for (int64_t j = 0; j < nt; ++j) {
      const float* xr = x + i * k;
      const float* wr = w + j * k;
      float a[8] = {};
      for (int64_t kk = 0; kk < k8; kk += 8)
        for (int l = 0; l < 8; ++l) a[l] = std::fma(xr[kk + l], wr[kk + l], a[l]);
      const float b0 = a[0] + a[4], b1 = a[1] + a[5], b2 = a[2] + a[6], b3 = a[3] + a[7];
      const float c0 = b0 + b2, c1 = b1 + b3;
      float s = c0 + c1;
      for (int64_t t = k8; t < k; ++t) s = std::fma(xr[t], wr[t], s);
      if (bias != nullptr) s += bias[j];
      y[i * ldy + j] = s;
    }
}
#endif

// Cache blocking around tile(), for large m (prefill). Each thread takes a contiguous share of the
// weight rows and walks it in panels (a panel: the rows whose floats fill about kPanelBytes, in L2;
// quantized weights are dequantized once per panel); x is walked in blocks of rows that fill about
// kXBlockBytes, also in L2, and every 4-row tile of the panel passes over the block while it is
// there. Without the blocking every weight tile streamed all of x from L3 or DRAM (a 2048-row chunk
// at k 576 is 4.7 MB), which held prefill at a quarter to half of the FMA peak. Every output
// element is still one tile() call over the whole k, so results are bit-identical to the unblocked
// loop and the kernels stay batch-invariant.
constexpr int64_t kXBlockBytes = int64_t{192} * 1024;
constexpr int64_t kPanelBytes = int64_t{160} * 1024;

// Rows of x per block: a multiple of kTileM, at least one tile.
inline int64_t x_block_rows(int64_t k) {
  const int64_t rows = kXBlockBytes / (4 * k) / kTileM * kTileM;
  return rows > kTileM ? rows : kTileM;
}

// y[m, n] = x[m, k] w[n, k]^T (+ bias). panel(n0, rows, scratch) returns rows x k floats of w
// starting at row n0: a pointer into the weights, or into scratch after dequantizing (scratch is
// the calling thread's own). Small m (decode) takes one weight tile at a time: read once, used at
// once, which is what a memory-bound step wants.
template <class Panel>
void blocked_linear(const float* x, const float* bias, float* y, int64_t m, int64_t n, int64_t k,
                    Panel&& panel) {
  const int64_t num_tiles = (n + kTileN - 1) / kTileN;
  if (m <= kTileM) {  // decode: one tile of weights at a time, streamed once
#pragma omp parallel if (n * k * m > 32768)
    {
      thread_local std::vector<float> scratch;
#pragma omp for schedule(static)
      for (int64_t t = 0; t < num_tiles; ++t) {
        const int64_t n0 = t * kTileN;
        const int64_t nt = std::min<int64_t>(kTileN, n - n0);
        tile(x, panel(n0, nt, scratch), bias != nullptr ? bias + n0 : nullptr, y + n0, n, k, nt, m);
      }
    }
    return;
  }
  const int64_t mb = x_block_rows(k);
#pragma omp parallel if (n * k * m > 32768)
  {
    const int64_t threads = omp_get_num_threads();
    const int64_t id = omp_get_thread_num();
    // Contiguous tile ranges, as even as the tile count allows.
    const int64_t t_begin = num_tiles * id / threads;
    const int64_t t_end = num_tiles * (id + 1) / threads;
    const int64_t tile_bytes = int64_t{4} * kTileN * k;
    const int64_t my_tiles = t_end - t_begin;
    int64_t panel_tiles = 1;
    if (my_tiles > 0) {
      const int64_t panels = (my_tiles * tile_bytes + kPanelBytes - 1) / kPanelBytes;
      panel_tiles = (my_tiles + panels - 1) / panels;
    }
    thread_local std::vector<float> scratch;  // the panel's floats where they are made
    for (int64_t p0 = t_begin; p0 < t_end; p0 += panel_tiles) {
      const int64_t n0 = p0 * kTileN;
      const int64_t rows = std::min((std::min(p0 + panel_tiles, t_end) - p0) * kTileN, n - n0);
      const float* w = panel(n0, rows, scratch);
      for (int64_t m0 = 0; m0 < m; m0 += mb) {
        const int64_t m1 = std::min(m0 + mb, m);
        for (int64_t r0 = 0; r0 < rows; r0 += kTileN) {
          const int64_t nt = std::min<int64_t>(kTileN, rows - r0);
          const float* b = bias != nullptr ? bias + n0 + r0 : nullptr;
          for (int64_t i = m0; i < m1; i += kTileM)
            tile(x + i * k, w + r0 * k, b, y + i * n + n0 + r0, n, k, nt,
                 std::min<int64_t>(kTileM, m1 - i));
        }
      }
    }
  }
}

}  // namespace macserve::kernels::cpu::detail
