// RoPE (Hugging Face rotate_half convention) on f32 q and k in place; same semantics as
// kernels/rope.h. With `k_cache` set it also writes this step's rotated K and V into the paged
// cache (bf16) at slot_mapping[t] (the fused RoPE + KV write of a decoder layer).
#pragma once

#include "macserve/kernels/paged_kv.h"

namespace macserve::kernels::cuda {

struct RopeCudaParams {
  float* q;                  // [num_tokens, num_q_heads, head_dim] f32, in place
  float* k;                  // [num_tokens, num_kv_heads, head_dim] f32, in place
  const int32_t* positions;  // [num_tokens]
  const float* inv_freq;     // [head_dim / 2]
  int64_t num_tokens;
  int64_t num_q_heads;
  int64_t num_kv_heads;
  int64_t head_dim;
};
int rope(const RopeCudaParams& p, Stream stream);

// Scatters f32 K/V [num_tokens, num_kv_heads, head_dim] into bf16 paged caches at slot_mapping[t]
// (skipped when < 0).
struct KvWriteCudaParams {
  const float* k;
  const float* v;
  void* k_cache;  // paged layout (paged_kv.h) bf16
  void* v_cache;
  const int64_t* slot_mapping;  // [num_tokens]
  int64_t num_tokens;
  PagedKvLayout layout;
};
int kv_write(const KvWriteCudaParams& p, Stream stream);

// The fused attention prologue of a decoder layer, one kernel over the rows of the fused Q/K/V
// projection (each [q heads | k heads | v heads], only read): for each token, Qwen3's per-head
// RMSNorm of q and k (when q_norm is set), q before RoPE to q_pre (what MAC-Attention matches on),
// the rotated q into q, and the rotated K and the V into the bf16 paged caches at slot_mapping[t]
// (nothing for slots < 0: padding rows of a CUDA-graph bucket).
struct RopeKvWriteCudaParams {
  const float* qkv;  // [num_tokens, (num_q_heads + 2 * num_kv_heads) * head_dim] f32
  float* q;          // [num_tokens, num_q_heads, head_dim] f32 out: the rotated q
  void* q_pre;       // [num_tokens, num_q_heads, head_dim] f32 or bf16, or null
  bool q_pre_bf16;
  const void* q_norm;  // [head_dim] bf16, or null: no per-head norm (k_norm null too)
  const void* k_norm;  // [head_dim] bf16
  float eps;
  const int32_t* positions;  // [num_tokens]
  const float* inv_freq;     // [head_dim / 2]
  void* k_cache;             // paged layout (paged_kv.h) bf16
  void* v_cache;
  const int64_t* slot_mapping;  // [num_tokens]
  int64_t num_tokens;
  int64_t num_q_heads;
  PagedKvLayout layout;  // num_kv_heads, block_size, head_dim
};
int rope_kv_write(const RopeKvWriteCudaParams& p, Stream stream);

}  // namespace macserve::kernels::cuda
