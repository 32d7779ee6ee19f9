#pragma once

#include "macserve/kernels/common.h"

namespace macserve::kernels {

// y[m, n] = sum_k x[m, k] * w[n, k] (+ bias[n]): a linear layer with PyTorch's weight layout.
struct LinearParams {
  const float* x;     // [m, k]
  const float* w;     // [n, k]
  const float* bias;  // [n] or nullptr
  float* y;           // [m, n]
  int64_t m;
  int64_t n;
  int64_t k;
  // false: the batch-invariant kernel (a row's result does not depend on the batch); true:
  // OpenBLAS sgemm, faster for large m but not invariant (kept for comparison).
  bool use_blas = false;
};

namespace cpu {
void linear(const LinearParams& p);
}

}  // namespace macserve::kernels
