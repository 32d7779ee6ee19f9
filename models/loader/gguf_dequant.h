// ggml tensor types: block sizes of every type the GGUF format defines (to validate the byte size
// of any tensor), and dequantisation to float32 of the ones macserve loads: F32, F16, BF16, Q8_0,
// Q4_0 and Q4_1.
#pragma once

#include <cstdint>

namespace macserve::models {

struct GgmlTypeTraits {
  const char* name;
  uint32_t block_size;   // elements per block (1 for plain types)
  uint32_t block_bytes;  // bytes per block
};

// nullptr for an id this build does not know.
const GgmlTypeTraits* ggml_type_traits(uint32_t type);

bool is_dequantizable(uint32_t type);

// Converts `n` elements (a multiple of the type's block size) of type `type` at `src` (no
// alignment assumed) to float32. Precondition: is_dequantizable(type).
void dequantize_to_f32(uint32_t type, const uint8_t* src, int64_t n, float* dst);

}  // namespace macserve::models
