#include "gguf_dequant.h"

#include <array>
#include <cstring>

#include "macserve/core/dtype.h"
#include "macserve/core/error.h"
#include "macserve/models/loader/gguf.h"

namespace macserve::models {
namespace {

constexpr int kQk = 32;  // elements per block of Q8_0 / Q4_0 / Q4_1

// Sizes as in ggml's type_traits table; ids absent there (removed types 4, 5, 31-33) stay null.
constexpr std::array<GgmlTypeTraits, 42> kTraits = [] {
  std::array<GgmlTypeTraits, 42> t{};
  t[0] = {"F32", 1, 4};
  t[1] = {"F16", 1, 2};
  t[2] = {"Q4_0", 32, 18};
  t[3] = {"Q4_1", 32, 20};
  t[6] = {"Q5_0", 32, 22};
  t[7] = {"Q5_1", 32, 24};
  t[8] = {"Q8_0", 32, 34};
  t[9] = {"Q8_1", 32, 40};
  t[10] = {"Q2_K", 256, 84};
  t[11] = {"Q3_K", 256, 110};
  t[12] = {"Q4_K", 256, 144};
  t[13] = {"Q5_K", 256, 176};
  t[14] = {"Q6_K", 256, 210};
  t[15] = {"Q8_K", 256, 292};
  t[16] = {"IQ2_XXS", 256, 66};
  t[17] = {"IQ2_XS", 256, 74};
  t[18] = {"IQ3_XXS", 256, 98};
  t[19] = {"IQ1_S", 256, 50};
  t[20] = {"IQ4_NL", 32, 18};
  t[21] = {"IQ3_S", 256, 110};
  t[22] = {"IQ2_S", 256, 82};
  t[23] = {"IQ4_XS", 256, 136};
  t[24] = {"I8", 1, 1};
  t[25] = {"I16", 1, 2};
  t[26] = {"I32", 1, 4};
  t[27] = {"I64", 1, 8};
  t[28] = {"F64", 1, 8};
  t[29] = {"IQ1_M", 256, 56};
  t[30] = {"BF16", 1, 2};
  t[34] = {"TQ1_0", 256, 54};
  t[35] = {"TQ2_0", 256, 66};
  t[39] = {"MXFP4", 32, 17};
  t[40] = {"NVFP4", 64, 36};
  t[41] = {"Q1_0", 128, 18};
  return t;
}();

uint16_t load_u16(const uint8_t* p) {
  uint16_t v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

// Q8_0 block: fp16 scale d, then 32 int8 quants; x = q * d.
void dequant_q8_0(const uint8_t* src, int64_t num_blocks, float* dst) {
  for (int64_t b = 0; b < num_blocks; ++b, src += 34, dst += kQk) {
    const float d = half_to_float(load_u16(src));
    for (int j = 0; j < kQk; ++j) dst[j] = static_cast<float>(static_cast<int8_t>(src[2 + j])) * d;
  }
}

// Q4_0 block: fp16 d, 16 bytes; byte j holds element j (low nibble) and j + 16 (high nibble);
// x = (q - 8) * d.
void dequant_q4_0(const uint8_t* src, int64_t num_blocks, float* dst) {
  for (int64_t b = 0; b < num_blocks; ++b, src += 18, dst += kQk) {
    const float d = half_to_float(load_u16(src));
    const uint8_t* qs = src + 2;
    for (int j = 0; j < kQk / 2; ++j) {
      dst[j] = static_cast<float>((qs[j] & 0x0f) - 8) * d;
      dst[j + kQk / 2] = static_cast<float>((qs[j] >> 4) - 8) * d;
    }
  }
}

// Q4_1 block: fp16 d, fp16 m, 16 bytes of nibbles as in Q4_0; x = q * d + m.
void dequant_q4_1(const uint8_t* src, int64_t num_blocks, float* dst) {
  for (int64_t b = 0; b < num_blocks; ++b, src += 20, dst += kQk) {
    const float d = half_to_float(load_u16(src));
    const float m = half_to_float(load_u16(src + 2));
    const uint8_t* qs = src + 4;
    for (int j = 0; j < kQk / 2; ++j) {
      dst[j] = static_cast<float>(qs[j] & 0x0f) * d + m;
      dst[j + kQk / 2] = static_cast<float>(qs[j] >> 4) * d + m;
    }
  }
}

}  // namespace

const GgmlTypeTraits* ggml_type_traits(uint32_t type) {
  if (type >= kTraits.size() || kTraits[type].name == nullptr) return nullptr;
  return &kTraits[type];
}

bool is_dequantizable(uint32_t type) {
  switch (static_cast<GgmlType>(type)) {
    case GgmlType::kF32:
    case GgmlType::kF16:
    case GgmlType::kQ4_0:
    case GgmlType::kQ4_1:
    case GgmlType::kQ8_0:
    case GgmlType::kBF16:
      return true;
  }
  return false;  // an id outside the enum: a type macserve does not convert
}

void dequantize_to_f32(uint32_t type, const uint8_t* src, int64_t n, float* dst) {
  switch (static_cast<GgmlType>(type)) {
    case GgmlType::kF32:
      std::memcpy(dst, src, static_cast<std::size_t>(n) * sizeof(float));
      return;
    case GgmlType::kF16:
      for (int64_t i = 0; i < n; ++i) dst[i] = half_to_float(load_u16(src + 2 * i));
      return;
    case GgmlType::kBF16:
      for (int64_t i = 0; i < n; ++i) dst[i] = bf16_to_float(load_u16(src + 2 * i));
      return;
    case GgmlType::kQ4_0:
      dequant_q4_0(src, n / kQk, dst);
      return;
    case GgmlType::kQ4_1:
      dequant_q4_1(src, n / kQk, dst);
      return;
    case GgmlType::kQ8_0:
      dequant_q8_0(src, n / kQk, dst);
      return;
  }
  MACSERVE_CHECK(false, "ggml type {} cannot be dequantised", type);
}

}  // namespace macserve::models
