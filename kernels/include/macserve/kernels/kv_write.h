#pragma once

#include "macserve/kernels/paged_kv.h"

namespace macserve::kernels {

// Scatters this step's keys and values into the paged cache at slot_mapping[t] (skip when < 0).
struct KvWriteParams {
  const float* k;  // [num_tokens, num_kv_heads, head_dim]
  const float* v;  // [num_tokens, num_kv_heads, head_dim]
  float* k_cache;  // paged layout, see paged_kv.h
  float* v_cache;
  const int64_t* slot_mapping;  // [num_tokens]
  int64_t num_tokens;
  PagedKvLayout layout;
};

namespace cpu {
void kv_write(const KvWriteParams& p);
}

}  // namespace macserve::kernels
