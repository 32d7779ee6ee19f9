#pragma once

#include "macserve/kernels/common.h"

namespace macserve::kernels {

// out = x / sqrt(mean(x^2) + eps) * weight, per row. With `residual` set the kernel first does
// residual += x and normalises the sum (the fused pre-norm of a decoder layer): out =
// norm(residual).
struct RmsNormParams {
  const float* x;       // [num_rows, dim]
  float* residual;      // [num_rows, dim] or nullptr
  const float* weight;  // [dim]
  float* out;           // [num_rows, dim]; may alias x when residual is null
  int64_t num_rows;
  int64_t dim;
  float eps;
};

namespace cpu {
void rms_norm(const RmsNormParams& p);
// One row of rms_norm without the residual (out may alias x). The fused attention prologue
// (rope_kv_write) normalises Qwen3's q and k heads with it, so both give the same bits.
void rms_norm_row(const float* x, const float* weight, float* out, int64_t dim, float eps);
}  // namespace cpu

}  // namespace macserve::kernels

namespace macserve::kernels {

// bf16 activations and weights, float32 math. Same semantics as RmsNormParams (residual fused).
struct RmsNormBf16Params {
  const void* x;       // [num_rows, dim] bf16
  void* residual;      // [num_rows, dim] bf16 or nullptr
  const void* weight;  // [dim] bf16
  void* out;           // [num_rows, dim] bf16
  int64_t num_rows;
  int64_t dim;
  float eps;
};

namespace cuda {
// Returns 0 on launch success, else the cudaError_t value.
int rms_norm_bf16(const RmsNormBf16Params& p, Stream stream);
}  // namespace cuda

}  // namespace macserve::kernels
