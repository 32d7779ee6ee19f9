// RMSNorm in mixed precision: x and residual f32, weight bf16, out f32 or bf16. Same semantics as
// kernels/rms_norm.h: with `residual`, residual += x and out = norm(residual) * weight.
#pragma once

#include "macserve/kernels/common.h"

namespace macserve::kernels::cuda {

struct RmsNormCudaParams {
  const float* x;      // [num_rows, dim] f32
  float* residual;     // [num_rows, dim] f32 or nullptr
  const void* weight;  // [dim] bf16
  void* out;           // [num_rows, dim] bf16 (out_bf16) or f32; may alias x without residual
  int64_t num_rows;
  int64_t dim;
  float eps;
  bool out_bf16;
};
int rms_norm(const RmsNormCudaParams& p, Stream stream);

}  // namespace macserve::kernels::cuda
