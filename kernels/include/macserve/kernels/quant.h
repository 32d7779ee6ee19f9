#pragma once

#include <cstdint>

#include "macserve/kernels/common.h"

namespace macserve::kernels {

// GGUF block formats kept quantized on the CPU. Every block holds 32 consecutive elements of a row
// (a row's length k is a multiple of 32) and starts with fp16 scale d:
//   Q8_0 (34 B): d, 32 x int8 q;              x = q * d
//   Q4_0 (18 B): d, 16 B of nibbles;          x = (q - 8) * d
//   Q4_1 (20 B): d, fp16 m, 16 B of nibbles;  x = q * d + m
// Nibbles: byte j holds element j (low 4 bits) and element j + 16 (high 4 bits).
enum class QuantFormat : int8_t { kQ8_0, kQ4_0, kQ4_1 };

constexpr int64_t kQuantBlock = 32;
constexpr int64_t quant_block_bytes(QuantFormat f) {
  return f == QuantFormat::kQ8_0 ? 34 : f == QuantFormat::kQ4_0 ? 18 : 20;
}
constexpr int64_t quant_row_bytes(QuantFormat f, int64_t k) {
  return k / kQuantBlock * quant_block_bytes(f);
}

// y[m, n] = sum_k x[m, k] * dequant(w)[n, k] (+ bias[n]): the linear layer of gemm.h with w kept in
// its file format. The weights are dequantized in registers (never to a whole f32 copy) and the dot
// products follow the same fixed reduction order as the f32 kernel, so each output is bit-identical
// whatever m is and wherever its row sits in the batch.
struct QuantLinearParams {
  const float* x;     // [m, k] f32
  const uint8_t* w;   // [n, quant_row_bytes(format, k)] blocks, no alignment required
  const float* bias;  // [n] or nullptr
  float* y;           // [m, n] f32
  int64_t m;
  int64_t n;
  int64_t k;  // multiple of kQuantBlock
  QuantFormat format;
};

namespace cpu {
void quant_linear(const QuantLinearParams& p);
// dst[r, :] = dequant(src row rows[r]) for r < num_rows: the embedding lookup of a quantized table
// (values bit-identical to those quant_linear multiplies with).
void dequantize_rows(QuantFormat format, const uint8_t* src, int64_t k, const int32_t* rows,
                     int64_t num_rows, float* dst);
}  // namespace cpu

}  // namespace macserve::kernels
