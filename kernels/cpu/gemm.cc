// Linear layers through OpenBLAS: y = x w^T (+ bias). One sgemm call per layer and step; with
// m = 1 (batch-1 decode) OpenBLAS takes its gemv path, which streams the weights once.
#include "macserve/kernels/gemm.h"

#include <cblas.h>

namespace macserve::kernels::cpu {

void linear(const LinearParams& p) {
  if (p.m == 0 || p.n == 0) return;
  if (p.m == 1) {
    cblas_sgemv(CblasRowMajor, CblasNoTrans, static_cast<int>(p.n), static_cast<int>(p.k), 1.0f, p.w,
                static_cast<int>(p.k), p.x, 1, 0.0f, p.y, 1);
  } else {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(p.m), static_cast<int>(p.n),
                static_cast<int>(p.k), 1.0f, p.x, static_cast<int>(p.k), p.w, static_cast<int>(p.k), 0.0f,
                p.y, static_cast<int>(p.n));
  }
  if (p.bias != nullptr) {
    for (int64_t r = 0; r < p.m; ++r)
      for (int64_t c = 0; c < p.n; ++c) p.y[r * p.n + c] += p.bias[c];
  }
}

}  // namespace macserve::kernels::cpu
