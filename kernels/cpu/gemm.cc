// Linear layers y = x w^T (+ bias) in float32.
//
// The default kernel is batch-invariant: every output element is computed with the same sequence
// of operations whatever the number of rows m and wherever the row sits in the batch (8 AVX2 lanes
// accumulate k = j mod 8 in order with FMA, then a fixed horizontal sum, then the k % 8 tail with
// scalar FMA). So a token gets bit-identical logits alone, batched with 63 others, or inside a
// prefill chunk of any size, and greedy decoding cannot diverge at near-ties. OpenBLAS's sgemm
// picks different micro-kernels by shape and is not invariant (measured: rows differ for m in
// {3, 8, 31, ...}); it stays available for comparison via env MACSERVE_CPU_GEMM=openblas.
//
// Where time goes: decode (small m) is bound by streaming w once per step; the 4-row w tile stays
// in L1 while all m rows pass over it. Prefill (large m) is compute-bound at roughly half of FMA peak.
#include "macserve/kernels/gemm.h"

#include <immintrin.h>

#include <cblas.h>

#include <cmath>
#include <cstdlib>
#include <cstring>

namespace macserve::kernels::cpu {
namespace {

inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// Finishes one dot product: lanes -> fixed horizontal sum -> scalar tail in k order.
inline float finish(__m256 acc, const float* x, const float* w, int64_t k8, int64_t k) {
  float s = hsum(acc);
  for (int64_t i = k8; i < k; ++i) s = std::fma(x[i], w[i], s);
  return s;
}

constexpr int kTileN = 4;  // w rows per tile
constexpr int kTileM = 3;  // x rows per tile: 12 accumulators + 4 w loads + 1 x load <= 16 ymm

// One w tile (kTileN rows starting at n0) against x rows [m0, m0 + mt), mt <= kTileM.
void tile(const LinearParams& p, int64_t n0, int64_t nt, int64_t m0, int64_t mt) {
  const int64_t k8 = p.k / 8 * 8;
  __m256 acc[kTileM][kTileN];
  for (auto& row : acc)
    for (auto& a : row) a = _mm256_setzero_ps();
  const float* w[kTileN];
  for (int j = 0; j < kTileN; ++j) w[j] = p.w + (n0 + (j < nt ? j : 0)) * p.k;
  const float* x[kTileM];
  for (int i = 0; i < kTileM; ++i) x[i] = p.x + (m0 + (i < mt ? i : 0)) * p.k;
  for (int64_t kk = 0; kk < k8; kk += 8) {
    __m256 wv[kTileN];
    for (int j = 0; j < kTileN; ++j) wv[j] = _mm256_loadu_ps(w[j] + kk);
    for (int i = 0; i < kTileM; ++i) {
      const __m256 xv = _mm256_loadu_ps(x[i] + kk);
      for (int j = 0; j < kTileN; ++j) acc[i][j] = _mm256_fmadd_ps(xv, wv[j], acc[i][j]);
    }
  }
  for (int64_t i = 0; i < mt; ++i)
    for (int64_t j = 0; j < nt; ++j) {
      float s = finish(acc[i][j], x[i], w[j], k8, p.k);
      if (p.bias != nullptr) s += p.bias[n0 + j];
      p.y[(m0 + i) * p.n + n0 + j] = s;
    }
}

void linear_invariant(const LinearParams& p) {
  const int64_t num_tiles = (p.n + kTileN - 1) / kTileN;
#pragma omp parallel for schedule(static) if (p.n * p.k * p.m > 32768)
  for (int64_t t = 0; t < num_tiles; ++t) {
    const int64_t n0 = t * kTileN;
    const int64_t nt = std::min<int64_t>(kTileN, p.n - n0);
    for (int64_t m0 = 0; m0 < p.m; m0 += kTileM) tile(p, n0, nt, m0, std::min<int64_t>(kTileM, p.m - m0));
  }
}

void linear_openblas(const LinearParams& p) {
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(p.m), static_cast<int>(p.n),
              static_cast<int>(p.k), 1.0f, p.x, static_cast<int>(p.k), p.w, static_cast<int>(p.k), 0.0f, p.y,
              static_cast<int>(p.n));
  if (p.bias != nullptr) {
    for (int64_t r = 0; r < p.m; ++r)
      for (int64_t c = 0; c < p.n; ++c) p.y[r * p.n + c] += p.bias[c];
  }
}

bool use_openblas() {
  static const bool v = [] {
    const char* env = std::getenv("MACSERVE_CPU_GEMM");  // env: MACSERVE_CPU_GEMM=openblas|invariant
    return env != nullptr && std::strcmp(env, "openblas") == 0;
  }();
  return v;
}

}  // namespace

void linear(const LinearParams& p) {
  if (p.m == 0 || p.n == 0) return;
  if (use_openblas()) linear_openblas(p);
  else linear_invariant(p);
}

}  // namespace macserve::kernels::cpu
