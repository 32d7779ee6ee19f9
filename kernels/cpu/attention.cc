// Paged causal attention, float32, one pass over the keys with an online softmax, blocked over
// query rows and keys (attention_rows.h). Parallel over (sequence, query tile, kv head).
// GQA: q head h reads kv head h / (num_q_heads / num_kv_heads).
#include "macserve/kernels/attention.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "attention_rows.h"
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

namespace detail {
namespace {

inline float dot(const float* a, const float* b, int64_t n) {
  float s = 0.0f;
#pragma omp simd reduction(+ : s)
  for (int64_t d = 0; d < n; ++d) s += a[d] * b[d];
  return s;
}

// Keys [0, n) of a block for one row with running max m, sum l and unnormalised output acc.
void attend_block(const float* q, const float* const* keys, const float* const* values, int64_t n,
                  int64_t D, float scale, float& m, float& l, float* acc) {
  float s[kKeyBlock];
  float block_max = -std::numeric_limits<float>::infinity();
  for (int64_t j = 0; j < n; ++j) {
    s[j] = dot(q, keys[j], D) * scale;
    block_max = std::max(block_max, s[j]);
  }
  if (block_max > m) {
    const float correction = std::exp(m - block_max);  // exp(-inf) = 0 on the first block
    l *= correction;
    for (int64_t d = 0; d < D; ++d) acc[d] *= correction;
    m = block_max;
  }
  for (int64_t j = 0; j < n; ++j) {
    const float w = std::exp(s[j] - m);
    l += w;
    const float* v = values[j];
    for (int64_t d = 0; d < D; ++d) acc[d] += w * v[d];
  }
}

}  // namespace

void attend_rows(const float* k_cache, const float* v_cache, const int32_t* block_table,
                 const PagedKvLayout& L, int64_t kv_head, float scale,
                 std::vector<AttentionRow>& rows, std::vector<float>& scratch) {
  const int64_t D = L.head_dim;
  const auto n_rows = static_cast<int64_t>(rows.size());
  // Per row: m, l, then acc[D].
  scratch.assign(static_cast<std::size_t>(n_rows * (D + 2)), 0.0f);
  int64_t first = std::numeric_limits<int64_t>::max(), last = 0;
  for (int64_t i = 0; i < n_rows; ++i) {
    scratch[i * (D + 2)] = -std::numeric_limits<float>::infinity();
    if (rows[i].begin < rows[i].end) {
      first = std::min(first, rows[i].begin);
      last = std::max(last, rows[i].end);
    }
  }
  const float* keys[kKeyBlock];
  const float* values[kKeyBlock];
  for (int64_t j0 = first < last ? first / kKeyBlock * kKeyBlock : last; j0 < last;
       j0 += kKeyBlock) {
    const int64_t n = std::min(kKeyBlock, last - j0);
    for (int64_t j = 0; j < n; ++j) {
      const int64_t key = j0 + j;
      const int64_t slot =
          static_cast<int64_t>(block_table[key / L.block_size]) * L.block_size + key % L.block_size;
      keys[j] = k_cache + L.offset(slot, kv_head);
      values[j] = v_cache + L.offset(slot, kv_head);
    }
    for (int64_t i = 0; i < n_rows; ++i) {
      const int64_t lo = std::max(rows[i].begin, j0) - j0;
      const int64_t hi = std::min(rows[i].end, j0 + n) - j0;
      if (lo >= hi) continue;
      float* st = scratch.data() + i * (D + 2);
      attend_block(rows[i].q, keys + lo, values + lo, hi - lo, D, scale, st[0], st[1], st + 2);
    }
  }
  for (int64_t i = 0; i < n_rows; ++i) {
    const float* st = scratch.data() + i * (D + 2);
    const float inv = st[1] > 0.0f ? 1.0f / st[1] : 0.0f;
    for (int64_t d = 0; d < D; ++d) rows[i].out[d] = st[2 + d] * inv;
    if (rows[i].lse != nullptr)
      *rows[i].lse =
          st[1] > 0.0f ? st[0] + std::log(st[1]) : -std::numeric_limits<float>::infinity();
  }
}

}  // namespace detail

void paged_attention(const PagedAttentionParams& p) {
  using detail::kQueryTile;
  const PagedKvLayout& L = p.layout;
  const int64_t D = L.head_dim;
  const int64_t group = p.num_q_heads / L.num_kv_heads;
  // Work items: each sequence's tokens in tiles of kQueryTile, times the kv heads.
  struct Item {
    int64_t s, t0, t1, g;
  };
  std::vector<Item> items;
  for (int64_t s = 0; s < p.num_seqs; ++s)
    for (int64_t t0 = p.query_start[s]; t0 < p.query_start[s + 1]; t0 += kQueryTile)
      for (int64_t g = 0; g < L.num_kv_heads; ++g)
        items.push_back({s, t0, std::min<int64_t>(p.query_start[s + 1], t0 + kQueryTile), g});
  const auto num_items = static_cast<int64_t>(items.size());
#pragma omp parallel if (num_items > 1)
  {
    std::vector<detail::AttentionRow> rows;
    std::vector<float> scratch;
    // Later tiles of a sequence see more keys: hand items out dynamically.
#pragma omp for schedule(dynamic, 1)
    for (int64_t i = 0; i < num_items; ++i) {
      const Item& it = items[i];
      const int64_t num_queries = p.query_start[it.s + 1] - p.query_start[it.s];
      const int64_t pos0 = p.context_lens[it.s] - num_queries - p.query_start[it.s];
      rows.clear();
      for (int64_t t = it.t0; t < it.t1; ++t)
        for (int64_t h = it.g * group; h < (it.g + 1) * group; ++h)
          rows.push_back({p.q + (t * p.num_q_heads + h) * D, p.out + (t * p.num_q_heads + h) * D,
                          nullptr, 0, pos0 + t + 1});
      detail::attend_rows(p.k_cache, p.v_cache, p.block_tables + it.s * p.max_blocks_per_seq, L,
                          it.g, p.scale, rows, scratch);
    }
  }
}

}  // namespace macserve::kernels::cpu
