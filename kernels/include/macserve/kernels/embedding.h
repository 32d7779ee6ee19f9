#pragma once

#include "macserve/kernels/common.h"

namespace macserve::kernels {

struct EmbeddingParams {
  const int32_t* ids;  // [num_tokens]
  const float* table;  // [vocab_size, hidden] f32
  float* out;          // [num_tokens, hidden] f32
  int64_t num_tokens;
  int64_t hidden;
  int64_t vocab_size;  // ids outside [0, vocab_size) are a caller bug (checked on the CPU)
};

namespace cpu {
void embedding(const EmbeddingParams& p);
}

}  // namespace macserve::kernels
