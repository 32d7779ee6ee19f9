// Linear layers of decode-sized batches on the CUDA backend: bf16 weights and inputs, f32
// accumulate. At m <= 16 rows a linear layer is a weight stream (each weight read once, 2 bytes for
// 2 m FLOPs), which cuBLAS's GEMMs read well below the memory bandwidth; these kernels split every
// weight tile's k across the warps of a block so all SMs stream, load 16 bytes per thread, run the
// products on the tensor cores (mma m16n8k16 with the weights as the 16-row operand) and reduce
// the warps' partial sums in a fixed order. A row's result depends only on its own input row: the
// same bits whatever m and wherever the row sits in the batch. Plain C++ (no CUDA headers).
#pragma once

#include "macserve/kernels/common.h"

namespace macserve::kernels::cuda {

inline constexpr int64_t kSmallMMaxRows = 16;

// One projection of x: y[m, n] = x[m, :] . w[n, :] (+ bias[n]).
struct SmallMProjection {
  const void* w = nullptr;     // [n, k] bf16
  const void* bias = nullptr;  // [n] bf16 or nullptr
  float* y = nullptr;          // [m, n] f32
  int64_t n = 0;
};

// Up to three projections of the same input in one launch (Q, K and V: one weight stream).
struct SmallMLinearCudaParams {
  const void* x = nullptr;  // [m, k] bf16
  int64_t m = 0;            // 1..kSmallMMaxRows
  int64_t k = 0;            // a multiple of 8
  int num_proj = 1;         // 1..3
  SmallMProjection proj[3];
};
int linear_small_m(const SmallMLinearCudaParams& p, Stream stream);

// The gate/up projection with SwiGLU in its epilogue: act[m, j] = silu(g) * u with g = x[m] . w[j]
// and u = x[m] . w[inter + j] (w = [gate; up], [2 * inter, k]); gate and up are never stored.
struct SmallMSwigluCudaParams {
  const void* x = nullptr;          // [m, k] bf16
  int64_t m = 0;                    // 1..kSmallMMaxRows
  int64_t k = 0;                    // a multiple of 8
  const void* w_gate_up = nullptr;  // [2 * inter, k] bf16
  int64_t inter = 0;
  void* act = nullptr;  // [m, inter] bf16 (act_bf16) or f32
  bool act_bf16 = true;
};
int linear_swiglu_small_m(const SmallMSwigluCudaParams& p, Stream stream);

// Whether the small-m kernels take these operands: 1 <= m <= kSmallMMaxRows, k a positive multiple
// of 8, x and w 16-byte aligned.
bool small_m_supported(int64_t m, int64_t k, const void* x, const void* w);

}  // namespace macserve::kernels::cuda
