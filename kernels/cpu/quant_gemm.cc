// Linear layers over GGUF block-quantized weights (Q8_0, Q4_0, Q4_1), kept in the file's format.
//
// Each thread dequantizes one tile of kTileN weight rows at a time into a small f32 scratch (L1 for
// k up to ~2K) and runs the f32 register tile of gemm_tile.h over every x row against it. So the
// quantized kernel is exactly the f32 kernel applied to the dequantized values: the same fixed
// reduction order, batch-invariant, and bit-identical to linear() over dequantize_rows() output.
//
// Where time goes: decode (m = 1) reads 4.5-8.5 bits per weight instead of 32, and spends per 8
// weights one unpack, one convert, one FMA (dequant) and one FMA (dot); prefill amortizes the
// dequant over all m rows.
#include <cstddef>
#include <cstring>
#include <vector>

#include "gemm_tile.h"
#include "macserve/kernels/quant.h"

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#define MACSERVE_QUANT_AVX2 1
#include <immintrin.h>
#endif

namespace macserve::kernels::cpu {
namespace {

float fp16_to_f32(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, sizeof(h));
#ifdef MACSERVE_QUANT_AVX2
  return _cvtsh_ss(h);
#else
  // Exact for normals, subnormals, inf and NaN.
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1fu, mant = h & 0x3ffu, bits;
  if (exp == 0x1f) {
    bits = sign | 0x7f800000u | (mant << 13);
  } else if (exp != 0) {
    bits = sign | ((exp + 112) << 23) | (mant << 13);
  } else if (mant == 0) {
    bits = sign;
  } else {  // subnormal: normalise
    exp = 113;
    while ((mant & 0x400u) == 0) mant <<= 1, --exp;
    bits = sign | (exp << 23) | ((mant & 0x3ffu) << 13);
  }
  float f;
  std::memcpy(&f, &bits, sizeof(f));
  return f;
#endif
}

// One block of 32 elements -> dst[0, 32). Q8_0: q * d; Q4_0: (q - 8) * d; Q4_1: fma(q, d, m).
template <QuantFormat F>
void dequant_block(const uint8_t* b, float* dst) {
  const float d = fp16_to_f32(b);
#ifdef MACSERVE_QUANT_AVX2
  const __m256 dv = _mm256_set1_ps(d);
  if constexpr (F == QuantFormat::kQ8_0) {
    for (std::ptrdiff_t c = 0; c < 4; ++c) {
      const __m128i q8 = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(b + 2 + 8 * c));
      _mm256_storeu_ps(dst + 8 * c,
                       _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q8)), dv));
    }
  } else {
    const __m128i raw =
        _mm_loadu_si128(reinterpret_cast<const __m128i*>(b + (F == QuantFormat::kQ4_1 ? 4 : 2)));
    const __m128i mask = _mm_set1_epi8(0x0f);
    const __m128i lo = _mm_and_si128(raw, mask);                     // elements 0..15
    const __m128i hi = _mm_and_si128(_mm_srli_epi16(raw, 4), mask);  // elements 16..31
    const __m128i parts[4] = {lo, _mm_srli_si128(lo, 8), hi, _mm_srli_si128(hi, 8)};
    for (std::ptrdiff_t c = 0; c < 4; ++c) {
      const __m256 q = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(parts[c]));
      if constexpr (F == QuantFormat::kQ4_0) {
        _mm256_storeu_ps(dst + 8 * c, _mm256_mul_ps(_mm256_sub_ps(q, _mm256_set1_ps(8.0f)), dv));
      } else {
        _mm256_storeu_ps(dst + 8 * c, _mm256_fmadd_ps(q, dv, _mm256_set1_ps(fp16_to_f32(b + 2))));
      }
    }
  }
#else
  if constexpr (F == QuantFormat::kQ8_0) {
    for (int j = 0; j < 32; ++j) dst[j] = static_cast<float>(static_cast<int8_t>(b[2 + j])) * d;
  } else {
    const uint8_t* qs = b + (F == QuantFormat::kQ4_1 ? 4 : 2);
    for (int j = 0; j < 16; ++j) {
      const auto lo = static_cast<float>(qs[j] & 0x0f), hi = static_cast<float>(qs[j] >> 4);
      if constexpr (F == QuantFormat::kQ4_0) {
        dst[j] = (lo - 8.0f) * d;
        dst[j + 16] = (hi - 8.0f) * d;
      } else {
        const float m = fp16_to_f32(b + 2);
        dst[j] = std::fma(lo, d, m);
        dst[j + 16] = std::fma(hi, d, m);
      }
    }
  }
#endif
}

template <QuantFormat F>
void dequant_row(const uint8_t* row, int64_t k, float* dst) {
  constexpr int64_t kBytes = quant_block_bytes(F);
  for (int64_t b = 0; b < k / kQuantBlock; ++b)
    dequant_block<F>(row + b * kBytes, dst + b * kQuantBlock);
}

template <QuantFormat F>
void quant_linear_impl(const QuantLinearParams& p) {
  const int64_t row_bytes = quant_row_bytes(F, p.k);
  // Each panel of weight rows is dequantized once into the thread's scratch and then used by
  // every row of x.
  detail::blocked_linear(
      p.x, p.bias, p.y, p.m, p.n, p.k, [&](int64_t n0, int64_t rows, std::vector<float>& scratch) {
        if (scratch.size() < static_cast<size_t>(rows * p.k))
          scratch.resize(static_cast<size_t>(rows * p.k));
        for (int64_t j = 0; j < rows; ++j)
          dequant_row<F>(p.w + (n0 + j) * row_bytes, p.k, scratch.data() + j * p.k);
        return static_cast<const float*>(scratch.data());
      });
}

}  // namespace

void quant_linear(const QuantLinearParams& p) {
  if (p.m == 0 || p.n == 0) return;
  switch (p.format) {
    case QuantFormat::kQ8_0:
      return quant_linear_impl<QuantFormat::kQ8_0>(p);
    case QuantFormat::kQ4_0:
      return quant_linear_impl<QuantFormat::kQ4_0>(p);
    case QuantFormat::kQ4_1:
      return quant_linear_impl<QuantFormat::kQ4_1>(p);
  }
}

void dequantize_rows(QuantFormat format, const uint8_t* src, int64_t k, const int32_t* rows,
                     int64_t num_rows, float* dst) {
  const int64_t row_bytes = quant_row_bytes(format, k);
  for (int64_t r = 0; r < num_rows; ++r) {
    const uint8_t* row = src + static_cast<int64_t>(rows[r]) * row_bytes;
    switch (format) {
      case QuantFormat::kQ8_0:
        dequant_row<QuantFormat::kQ8_0>(row, k, dst + r * k);
        break;
      case QuantFormat::kQ4_0:
        dequant_row<QuantFormat::kQ4_0>(row, k, dst + r * k);
        break;
      case QuantFormat::kQ4_1:
        dequant_row<QuantFormat::kQ4_1>(row, k, dst + r * k);
        break;
    }
  }
}

}  // namespace macserve::kernels::cpu
