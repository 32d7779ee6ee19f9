#pragma once

#include "macserve/kernels/common.h"

namespace macserve::kernels {

// Rotary embedding in the Hugging Face ("rotate_half", non-interleaved) convention:
// x[i] and x[i + d/2] rotate by angle pos * inv_freq[i].
struct RopeParams {
  float* q;                  // [num_tokens, num_q_heads, head_dim], in place
  float* k;                  // [num_tokens, num_kv_heads, head_dim], in place
  const int32_t* positions;  // [num_tokens]
  const float* inv_freq;     // [head_dim / 2]
  int64_t num_tokens;
  int64_t num_q_heads;
  int64_t num_kv_heads;
  int64_t head_dim;
};

enum class RopeScalingType { kNone, kLlama3, kLinear };

struct RopeFreqParams {
  int64_t head_dim;
  float theta;
  RopeScalingType scaling = RopeScalingType::kNone;
  float factor = 1.0f;
  float low_freq_factor = 1.0f;
  float high_freq_factor = 4.0f;
  int64_t original_max_position = 8192;
};

namespace cpu {
// Fills inv_freq[head_dim / 2] exactly as transformers' rope init functions do (float32).
void rope_inv_freq(const RopeFreqParams& p, float* inv_freq);
void rope(const RopeParams& p);
}  // namespace cpu

}  // namespace macserve::kernels
