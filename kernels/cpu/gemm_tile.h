// The register tile behind every CPU linear layer (f32 and quantized weights), and its fixed
// reduction order: 8 lanes accumulate k = j mod 8 in order with FMA, then a fixed horizontal sum,
// then the k % 8 tail with scalar FMA. Each output element gets this sequence of operations
// whatever the tile shape, m, or the row's place in the batch, which is what makes the kernels
// batch-invariant. Built for AVX2 + FMA where the compiler targets them, with a scalar twin (same
// order, std::fma) elsewhere.
#pragma once

#include <cmath>
#include <cstdint>

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#endif

namespace macserve::kernels::cpu::detail {

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

inline void tile(const float* x, const float* w, const float* bias, float* y, int64_t ldy,
                 int64_t k, int64_t nt, int64_t mt) {
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
inline void tile(const float* x, const float* w, const float* bias, float* y, int64_t ldy,
                 int64_t k, int64_t nt, int64_t mt) {
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

}  // namespace macserve::kernels::cpu::detail
