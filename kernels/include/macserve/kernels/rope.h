#pragma once

#include "macserve/kernels/common.h"
#include "macserve/kernels/paged_kv.h"

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

// The attention prologue of a decoder layer, on the fused Q/K/V projection rows (one GEMM made
// them; each row is [q heads | k heads | v heads]): per token, Qwen3's per-head RMSNorm of q and k
// (when q_norm is set), q before RoPE into q_pre (when set), the rotated q into q, and the rotated
// k and the v into the paged cache at slot_mapping[t] (nothing for slots < 0). The same float ops
// as rms_norm_row + rope + kv_write on split buffers, so the results are bit-identical to those.
struct RopeKvWriteParams {
  const float* qkv;          // [num_tokens, (num_q_heads + 2 * num_kv_heads) * head_dim]
  float* q;                  // [num_tokens, num_q_heads, head_dim] out
  float* q_pre;              // [num_tokens, num_q_heads, head_dim] out, or null
  const float* q_norm;       // [head_dim], or null: no per-head norm (k_norm null too)
  const float* k_norm;       // [head_dim]
  float eps;                 // of the per-head norm
  const int32_t* positions;  // [num_tokens]
  const float* inv_freq;     // [head_dim / 2]
  float* k_cache;            // paged layout (paged_kv.h)
  float* v_cache;
  const int64_t* slot_mapping;  // [num_tokens]
  int64_t num_tokens;
  int64_t num_q_heads;
  PagedKvLayout layout;  // num_kv_heads, head_dim (<= 1024)
};

namespace cpu {
// Fills inv_freq[head_dim / 2] exactly as transformers' rope init functions do (float32).
void rope_inv_freq(const RopeFreqParams& p, float* inv_freq);
void rope(const RopeParams& p);
void rope_kv_write(const RopeKvWriteParams& p);
}  // namespace cpu

}  // namespace macserve::kernels
