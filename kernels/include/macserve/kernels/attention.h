// Paged causal attention over a batch of sequences, each contributing a run of query tokens that
// are the last `num_queries` positions of its context (prefill chunk: many; decode: one).
#pragma once

#include "macserve/kernels/paged_kv.h"

namespace macserve::kernels {

struct PagedAttentionParams {
  const float* q;        // [num_tokens, num_q_heads, head_dim] (post-RoPE)
  const float* k_cache;  // paged layout (paged_kv.h)
  const float* v_cache;
  float* out;  // [num_tokens, num_q_heads, head_dim]
  const int32_t*
      query_start;  // [num_seqs + 1]: sequence s owns tokens [query_start[s], query_start[s+1])
  const int32_t* context_lens;  // [num_seqs]: keys in the cache for s, this step's tokens included
  const int32_t* block_tables;  // [num_seqs, max_blocks_per_seq]
  int64_t num_seqs;
  int64_t max_blocks_per_seq;
  int64_t num_q_heads;
  float scale;  // usually 1 / sqrt(head_dim)
  PagedKvLayout layout;
};

namespace cpu {
// Query i of sequence s (of n queries) sits at position context_len - n + i and attends to keys
// [0, that position]. Online softmax in float32, one pass over the keys.
void paged_attention(const PagedAttentionParams& p);
}  // namespace cpu

}  // namespace macserve::kernels
