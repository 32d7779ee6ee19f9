#pragma once

#include "macserve/kernels/common.h"

namespace macserve::kernels {

// out[t, i] = silu(gate_up[t, i]) * gate_up[t, inter + i]
struct SwigluParams {
  const float* gate_up;  // [num_tokens, 2 * inter]: gate then up
  float* out;            // [num_tokens, inter]
  int64_t num_tokens;
  int64_t inter;
};

// out = a + b (elementwise), out may alias a or b.
struct AddParams {
  const float* a;
  const float* b;
  float* out;
  int64_t n;
};

namespace cpu {
void swiglu(const SwigluParams& p);
void add(const AddParams& p);
}  // namespace cpu

}  // namespace macserve::kernels
