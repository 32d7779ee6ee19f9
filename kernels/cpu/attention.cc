// Paged causal attention, float32, one pass over the keys with an online softmax. Parallel over
// (token, q head). GQA: q head h reads kv head h / (num_q_heads / num_kv_heads).
#include "macserve/kernels/attention.h"

#include <cmath>
#include <limits>
#include <vector>

#include "macserve/kernels/kv_write.h"

namespace macserve::kernels::cpu {

void kv_write(const KvWriteParams& p) {
  const PagedKvLayout& L = p.layout;
  for (int64_t t = 0; t < p.num_tokens; ++t) {
    const int64_t slot = p.slot_mapping[t];
    if (slot < 0) continue;
    for (int64_t h = 0; h < L.num_kv_heads; ++h) {
      const int64_t dst = L.offset(slot, h);
      const int64_t src = (t * L.num_kv_heads + h) * L.head_dim;
      for (int64_t d = 0; d < L.head_dim; ++d) {
        p.k_cache[dst + d] = p.k[src + d];
        p.v_cache[dst + d] = p.v[src + d];
      }
    }
  }
}

namespace {

// One query row against keys [0, num_keys) of one kv head.
void attend_one(const PagedAttentionParams& p, const float* q, const int32_t* block_table,
                int64_t num_keys, int64_t kv_head, float* out, float* acc) {
  const PagedKvLayout& L = p.layout;
  const int64_t D = L.head_dim;
  float running_max = -std::numeric_limits<float>::infinity();
  float running_sum = 0.0f;
  for (int64_t d = 0; d < D; ++d) acc[d] = 0.0f;
  for (int64_t j = 0; j < num_keys; ++j) {
    const int64_t slot =
        static_cast<int64_t>(block_table[j / L.block_size]) * L.block_size + j % L.block_size;
    const float* k = p.k_cache + L.offset(slot, kv_head);
    const float* v = p.v_cache + L.offset(slot, kv_head);
    // The reduction order is fixed by the code (8-wide lanes), not by the batch: still invariant.
    float dot = 0.0f;
#pragma omp simd reduction(+ : dot)
    for (int64_t d = 0; d < D; ++d) dot += q[d] * k[d];
    const float s = dot * p.scale;
    if (s > running_max) {
      const float correction = std::exp(running_max - s);  // exp(-inf) = 0 on the first key
      running_sum *= correction;
      for (int64_t d = 0; d < D; ++d) acc[d] *= correction;
      running_max = s;
    }
    const float w = std::exp(s - running_max);
    running_sum += w;
    for (int64_t d = 0; d < D; ++d) acc[d] += w * v[d];
  }
  const float inv = running_sum > 0.0f ? 1.0f / running_sum : 0.0f;
  for (int64_t d = 0; d < D; ++d) out[d] = acc[d] * inv;
}

}  // namespace

void paged_attention(const PagedAttentionParams& p) {
  const PagedKvLayout& L = p.layout;
  const int64_t group = p.num_q_heads / L.num_kv_heads;
  const int64_t num_tokens = p.query_start[p.num_seqs];
  // Map each token to its sequence once, so the parallel loop is flat over (token, head).
  std::vector<int32_t> seq_of(static_cast<std::size_t>(num_tokens));
  for (int64_t s = 0; s < p.num_seqs; ++s)
    for (int32_t t = p.query_start[s]; t < p.query_start[s + 1]; ++t)
      seq_of[t] = static_cast<int32_t>(s);
  const int64_t work = num_tokens * p.num_q_heads;
#pragma omp parallel
  {
    std::vector<float> acc(static_cast<std::size_t>(L.head_dim));
#pragma omp for schedule(dynamic, 4)
    for (int64_t w = 0; w < work; ++w) {
      const int64_t t = w / p.num_q_heads;
      const int64_t h = w % p.num_q_heads;
      const int32_t s = seq_of[t];
      const int64_t num_queries = p.query_start[s + 1] - p.query_start[s];
      const int64_t pos = p.context_lens[s] - num_queries + (t - p.query_start[s]);
      const float* q = p.q + (t * p.num_q_heads + h) * L.head_dim;
      float* out = p.out + (t * p.num_q_heads + h) * L.head_dim;
      attend_one(p, q, p.block_tables + s * p.max_blocks_per_seq, pos + 1, h / group, out,
                 acc.data());
    }
  }
}

}  // namespace macserve::kernels::cpu
