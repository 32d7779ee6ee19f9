// Linear layers y = x w^T (+ bias) in float32.
//
// The default kernel is batch-invariant: every output element is computed with the same sequence
// of operations whatever the number of rows m and wherever the row sits in the batch (the fixed
// reduction order of gemm_tile.h). So a token gets bit-identical logits alone, batched with 63
// others, or inside a prefill chunk of any size, and greedy decoding cannot diverge at near-ties.
// OpenBLAS's sgemm picks different micro-kernels by shape and is not invariant (measured: rows
// differ for m in {3, 8, 31, ...}); it stays available for comparison (LinearParams::use_blas; the
// server's env MACSERVE_CPU_GEMM=openblas).
//
// Where time goes: decode (small m) is bound by streaming w once per step; the 4-row w tile stays
// in L1 while all m rows pass over it. Prefill (large m) is compute-bound: x is blocked into L2 so
// each weight panel is used by a block of rows at a time (gemm_tile.h, blocked_linear).
#include "macserve/kernels/gemm.h"

#include <cblas.h>

#include <cmath>
#include <vector>

#include "gemm_tile.h"

namespace macserve::kernels::cpu {
namespace {

void linear_invariant(const LinearParams& p) {
  detail::blocked_linear(p.x, p.bias, p.y, p.m, p.n, p.k,
                         [&](int64_t n0, int64_t, std::vector<float>&) { return p.w + n0 * p.k; });
}

void linear_openblas(const LinearParams& p) {
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(p.m), static_cast<int>(p.n),
              static_cast<int>(p.k), 1.0f, p.x, static_cast<int>(p.k), p.w, static_cast<int>(p.k),
              0.0f, p.y, static_cast<int>(p.n));
  if (p.bias != nullptr) {
    for (int64_t r = 0; r < p.m; ++r)
      for (int64_t c = 0; c < p.n; ++c) p.y[r * p.n + c] += p.bias[c];
  }
}

}  // namespace

void linear(const LinearParams& p) {
  if (p.m == 0 || p.n == 0) return;
  if (p.use_blas)
    linear_openblas(p);
  else
    linear_invariant(p);
}

}  // namespace macserve::kernels::cpu
