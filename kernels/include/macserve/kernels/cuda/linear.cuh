// The linear layers of the CUDA backend: y[m, n] = x[m, k] w[n, k]^T, bf16 inputs, f32 outputs.
// Plain C++ (no CUDA headers), so host code built by the C++ compiler can include it.
//
// linear_gemv: a GEMV for up to kLinearGemvMaxRows rows of x, where a GEMM is bound by reading the
// weights once. One warp streams each w row from memory with 16-byte loads, several in flight per
// lane, and uses every chunk for all m rows of x. Each output is summed in one order fixed by k
// (linear_gemv.cu), so a row's bits do not depend on m up to the limit. CudaBackend runs it for
// one row only, where it beats cuBLAS on every 8B shape (docs/perf/gpu.md); from two rows on
// cuBLAS was faster except for the lm_head.
//
// linear_fixed: --deterministic's linear layer, where every output is summed in one order whatever
// m is.
//
// The order: k is cut into segments of kLinearSegment from 0. Within a segment the sum starts at
// +0 and takes steps of 16 upwards, one tensor-core MMA step (fp32 accumulate) per 16 columns,
// with w's rows always the instruction's A operand and x's rows its B columns; the output is then
// s_0 + s_1 + ... in segment order. The step is mma.sync m16n8k16, or on Hopper (prefill-sized m,
// and wide layers from 32 rows) wgmma m64n128k16 (linear_wgmma.cu), which rounds a step the same
// way (found bit for bit on an H100, and checked by cuda_ops_test across the two). Launch shapes
// (chosen by m) change which other rows share an instruction and whether segments run in one CTA or
// in parallel, never the operations a given output sees, so a row's bits are the same alone, in any
// batch and at any place in a prefill chunk. (cuBLAS picks its kernel, tile and split-k by m, which
// is why the default path is not invariant.) k not a multiple of 8 (rows not made of 16-byte
// chunks; the smallest test models only) takes one fmaf chain per output over k instead: also
// chosen by k alone.
#pragma once

#include "macserve/kernels/common.h"

namespace macserve::kernels::cuda {

constexpr int64_t kLinearGemvMaxRows = 8;

struct LinearGemvParams {
  const void* x;  // [m, k] bf16
  const void* w;  // [n, k] bf16
  float* y;       // [m, n] f32
  int64_t m, n, k;
};
// Whether linear_gemv takes this shape: 1 <= m <= kLinearGemvMaxRows, k a multiple of 8, x and w
// 16-byte aligned.
bool linear_gemv_supports(const LinearGemvParams& p);
int linear_gemv(const LinearGemvParams& p, Stream stream);

// The gate/up projection and SwiGLU in one pass: act[m, inter] = silu(x w_gate^T) * (x w_up^T),
// bit for bit what linear_gemv into [m, 2 * inter] then the swiglu kernel give.
struct LinearGemvSwigluParams {
  const void* x;  // [m, k] bf16
  const void* w;  // [2 * inter, k] bf16: the gate rows, then the up rows
  void* act;      // [m, inter], bf16 (act_bf16) or f32
  bool act_bf16;
  int64_t m, inter, k;
};
// linear_gemv_supports({x, w, nullptr, m, 2 * inter, k}) must hold.
int linear_gemv_swiglu(const LinearGemvSwigluParams& p, Stream stream);

constexpr int64_t kLinearSegment = 1024;

struct LinearFixedParams {
  const void* x;  // [m, k] bf16, 16-byte aligned
  const void* w;  // [n, k] bf16, 16-byte aligned
  float* y;       // [m, n] f32
  int64_t m, n, k;
};
// f32 scratch that linear_fixed needs for this shape (segments computed in parallel; 0: none).
int64_t linear_fixed_workspace_floats(int64_t m, int64_t n, int64_t k);
// The most linear_fixed_workspace_floats gives for any shape, in bytes.
int64_t linear_fixed_max_workspace_bytes();
// m, n, k at least 1; `workspace` holds linear_fixed_workspace_floats(m, n, k) floats.
int linear_fixed(const LinearFixedParams& p, float* workspace, Stream stream);

}  // namespace macserve::kernels::cuda
