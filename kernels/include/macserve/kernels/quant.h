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

// Which integer-dot kernel quant_linear runs. kAuto: the best this CPU has (AVX-512 VNNI, else
// AVX-VNNI, else AVX2; the scalar twin where the library is built without AVX2). The others are for
// tests and benchmarks (quant_dot_isa_supported says which this machine runs); all of them give
// bit-identical results.
enum class QuantDotIsa : int8_t { kAuto, kScalar, kAvx2, kAvxVnni, kAvx512Vnni };

// y[m, n] = sum_k x[m, k] * dequant(w)[n, k] (+ bias[n]): the linear layer of gemm.h with w kept in
// its file format. Each row of x is quantized to 8 bits with a scale per 4 elements (max|x| / 127)
// and multiplied with the weight blocks in integers, scaled per block in float
// (kernels/cpu/quant_dot.h has the exact arithmetic). So the result differs from linear() over the
// dequantized weights by the activation rounding (~1e-3 of sum |x w| at most), and each output is
// bit-identical whatever m is and wherever its row sits in the batch.
struct QuantLinearParams {
  const float* x;     // [m, k] f32
  const uint8_t* w;   // [n, quant_row_bytes(format, k)] blocks, no alignment required
  const float* bias;  // [n] or nullptr
  float* y;           // [m, n] f32
  int64_t m;
  int64_t n;
  int64_t k;  // multiple of kQuantBlock
  QuantFormat format;
  QuantDotIsa isa = QuantDotIsa::kAuto;
};

namespace cpu {
void quant_linear(const QuantLinearParams& p);
bool quant_dot_isa_supported(QuantDotIsa isa);
// dst[r, :] = dequant(src row rows[r]) for r < num_rows: the embedding lookup of a quantized table
// (each value exactly its block definition, e.g. q * d + m rounded once for Q4_1).
void dequantize_rows(QuantFormat format, const uint8_t* src, int64_t k, const int32_t* rows,
                     int64_t num_rows, float* dst);
}  // namespace cpu

}  // namespace macserve::kernels
