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
};

namespace cpu {
void linear(const LinearParams& p);  // OpenBLAS sgemm
}

}  // namespace macserve::kernels
