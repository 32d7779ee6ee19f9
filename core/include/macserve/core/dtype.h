// Element types of tensors and model files, and the scalar conversions the loaders need.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string_view>

namespace macserve {

// kQ8_0/kQ4_0/kQ4_1: GGUF blocks of 32 elements of a row (layouts in kernels/quant.h), the CPU's
// weights kept quantized (`--cpu-weights native`).
enum class DType { kF32, kF16, kBF16, kI32, kI64, kU8, kQ8_0, kQ4_0, kQ4_1 };

// Bytes per element of a plain type; 0 for a block-quantized one (use dtype_bytes).
std::size_t dtype_size(DType dtype);
bool is_quantized(DType dtype);
// Bytes of n elements (n a multiple of the block size for quantized types).
std::size_t dtype_bytes(DType dtype, int64_t n);
std::string_view dtype_name(DType dtype);

// IEEE half -> float, exact for every value including subnormals, inf and NaN.
float half_to_float(uint16_t h);
uint16_t float_to_half(float f);  // round to nearest even

inline float bf16_to_float(uint16_t b) {
  uint32_t bits = static_cast<uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof(f));
  return f;
}

// Round to nearest even, NaN stays NaN (as torch does).
inline uint16_t float_to_bf16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, sizeof(bits));
  if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((bits >> 16) | 0x40u);
  bits += 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>(bits >> 16);
}

}  // namespace macserve
