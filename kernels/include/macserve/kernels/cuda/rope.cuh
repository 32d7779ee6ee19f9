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

// The fused attention prologue of a decoder layer, one kernel: for each token, optionally copies q
// before RoPE to q_pre (what MAC-Attention matches on), rotates q in place, and writes the rotated
// K and the V of this step into the bf16 paged caches at slot_mapping[t] (nothing for slots < 0:
// padding rows of a CUDA-graph bucket). k itself is not written back (the cache holds the result).
struct RopeKvWriteCudaParams {
  float* q;        // [num_tokens, num_q_heads, head_dim] f32, rotated in place
  const float* k;  // [num_tokens, num_kv_heads, head_dim] f32
  const float* v;  // [num_tokens, num_kv_heads, head_dim] f32
  void* q_pre;     // [num_tokens, num_q_heads, head_dim] f32 or bf16, or null
  bool q_pre_bf16;
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
