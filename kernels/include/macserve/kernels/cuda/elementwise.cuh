// CUDA elementwise ops of the decoder in mixed precision: weights bf16, residual stream and
// projection outputs f32, inputs of linear layers bf16. Each launcher takes POD Params and a stream
// and returns 0 on launch success, else the cudaError_t value. Plain C++ (no CUDA headers), so host
// code built by the C++ compiler can include it.
#pragma once

#include "macserve/kernels/common.h"

namespace macserve::kernels::cuda {

// out[t, :] = f32(table[ids[t], :])
struct EmbeddingCudaParams {
  const int32_t* ids;  // [num_tokens]
  const void* table;   // [vocab, hidden] bf16
  float* out;          // [num_tokens, hidden] f32
  int64_t num_tokens;
  int64_t hidden;
};
int embedding(const EmbeddingCudaParams& p, Stream stream);

// out[t, i] = silu(gate_up[t, i]) * gate_up[t, inter + i]
struct SwigluCudaParams {
  const float* gate_up;  // [num_tokens, 2 * inter] f32
  void* out;             // [num_tokens, inter] bf16 (out_bf16) or f32
  int64_t num_tokens;
  int64_t inter;
  bool out_bf16;
};
int swiglu(const SwigluCudaParams& p, Stream stream);

// out = a + b, f32; out may alias a or b.
int add_f32(const float* a, const float* b, float* out, int64_t n, Stream stream);
// y[r, :] += f32(bias[:]) for r < rows: the bias of a linear layer (bias bf16 [cols]).
int add_bias(float* y, const void* bias, int64_t rows, int64_t cols, Stream stream);
// dst[i] = bf16(src[i]), round to nearest even.
int convert_f32_to_bf16(const float* src, void* dst, int64_t n, Stream stream);
// out[i, :] = x[rows[i], :], rows of `row_bytes` bytes (a multiple of 2).
int gather_rows(const void* x, const int32_t* rows, void* out, int64_t num_rows, int64_t row_bytes,
                Stream stream);
// Deterministic pseudo-random fill, uniform in [-scale, scale): tests and benchmarks never run on
// zeros.
int fill_uniform(void* dst, int64_t n, bool bf16, uint64_t seed, float scale, Stream stream);

}  // namespace macserve::kernels::cuda
