// Paged causal attention, float32, one pass over the keys with an online softmax, blocked over
// query rows and keys (attention_rows.h). Parallel over (sequence, query tile, kv head).
// GQA: q head h reads kv head h / (num_q_heads / num_kv_heads).
#include "macserve/kernels/attention.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#endif

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

#if defined(__AVX2__) && defined(__FMA__)
// e^x for x <= 0 (scores minus their running max), 8 lanes: x = n ln2 + r, |r| <= ln2 / 2, e^r by a
// degree-6 polynomial, 2^n through the exponent bits; x < -87.3 gives 0. Relative error ~2 ulp.
inline __m256 exp_nonpositive(__m256 x) {
  const __m256 tiny = _mm256_cmp_ps(x, _mm256_set1_ps(-87.3f), _CMP_LT_OQ);
  x = _mm256_max_ps(x, _mm256_set1_ps(-87.3f));
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);  // ln2 split in two parts
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 y = _mm256_set1_ps(1.9875691500e-4f);
  y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(1.3981999507e-3f));
  y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(8.3334519073e-3f));
  y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(4.1665795894e-2f));
  y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(1.6666665459e-1f));
  y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(5.0000001201e-1f));
  y = _mm256_fmadd_ps(y, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
  const __m256i pow2n =
      _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  y = _mm256_mul_ps(y, _mm256_castsi256_ps(pow2n));
  return _mm256_andnot_ps(tiny, y);
}

// Scores of 8 keys: one vector of q . k_j. Each key's 8 lanes hold d = l mod 8 partial sums,
// summed by a fixed tree of horizontal adds. D is a multiple of 8.
inline __m256 dot8(const float* q, const float* const* k, int64_t D) {
  __m256 a[8];
  for (auto& v : a) v = _mm256_setzero_ps();
  for (int64_t d = 0; d < D; d += 8) {
    const __m256 qv = _mm256_loadu_ps(q + d);
    for (int j = 0; j < 8; ++j) a[j] = _mm256_fmadd_ps(qv, _mm256_loadu_ps(k[j] + d), a[j]);
  }
  const __m256 u0 = _mm256_hadd_ps(_mm256_hadd_ps(a[0], a[1]), _mm256_hadd_ps(a[2], a[3]));
  const __m256 u1 = _mm256_hadd_ps(_mm256_hadd_ps(a[4], a[5]), _mm256_hadd_ps(a[6], a[7]));
  return _mm256_add_ps(_mm256_permute2f128_ps(u0, u1, 0x20), _mm256_permute2f128_ps(u0, u1, 0x31));
}
#endif

inline float dot(const float* a, const float* b, int64_t n) {
  float s = 0.0f;
  for (int64_t d = 0; d < n; ++d) s = std::fma(a[d], b[d], s);
  return s;
}

// The scores of keys [0, n) of a block, scaled; -inf for [n, kKeyBlock).
void block_scores(const float* q, const float* const* keys, int64_t n, int64_t D, float scale,
                  float* s) {
  int64_t j = 0;
#if defined(__AVX2__) && defined(__FMA__)
  if (D % 8 == 0)
    for (; j + 8 <= n; j += 8)
      _mm256_storeu_ps(s + j, _mm256_mul_ps(dot8(q, keys + j, D), _mm256_set1_ps(scale)));
#endif
  for (; j < n; ++j) s[j] = dot(q, keys[j], D) * scale;
  for (; j < kKeyBlock; ++j) s[j] = -std::numeric_limits<float>::infinity();
}

// max over s[0, kKeyBlock) (exact in any order).
float block_max(const float* s) {
#if defined(__AVX2__) && defined(__FMA__)
  __m256 v = _mm256_loadu_ps(s);
  for (int64_t j = 8; j < kKeyBlock; j += 8) v = _mm256_max_ps(v, _mm256_loadu_ps(s + j));
  __m128 h = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  h = _mm_max_ps(h, _mm_movehl_ps(h, h));
  h = _mm_max_ss(h, _mm_movehdup_ps(h));
  return _mm_cvtss_f32(h);
#else
  return *std::max_element(s, s + kKeyBlock);
#endif
}

// w[j] = e^(s[j] - m) for j < n, w[j] = 0 for n <= j < kKeyBlock (s[j] = -inf there); returns the
// sum of w by a fixed tree (8 lanes over the block's four 8-key groups, then across lanes).
float block_weights(const float* s, float m, int64_t n, float* w) {
#if defined(__AVX2__) && defined(__FMA__)
  __m256 sum = _mm256_setzero_ps();
  for (int64_t j = 0; j < kKeyBlock; j += 8) {
    __m256 v = _mm256_setzero_ps();
    // Scores past n are -inf (block_scores), whose weights come out 0.
    if (j < n) v = exp_nonpositive(_mm256_sub_ps(_mm256_loadu_ps(s + j), _mm256_set1_ps(m)));
    _mm256_storeu_ps(w + j, v);
    sum = _mm256_add_ps(sum, v);
  }
  __m128 h = _mm_add_ps(_mm256_castps256_ps128(sum), _mm256_extractf128_ps(sum, 1));
  h = _mm_add_ps(h, _mm_movehl_ps(h, h));
  h = _mm_add_ss(h, _mm_movehdup_ps(h));
  return _mm_cvtss_f32(h);
#else
  float total = 0.0f;
  for (int64_t j = 0; j < kKeyBlock; ++j) {
    w[j] = j < n ? std::exp(s[j] - m) : 0.0f;
    total += w[j];
  }
  return total;
#endif
}

// Keys [0, n) of a block for one row with running max m, sum l and unnormalised output acc.
void attend_block(const float* q, const float* const* keys, const float* const* values, int64_t n,
                  int64_t D, float scale, float& m, float& l, float* acc) {
  float s[kKeyBlock], w[kKeyBlock];
  block_scores(q, keys, n, D, scale, s);
  const float top = block_max(s);
  if (top > m) {
    const float correction = std::exp(m - top);  // exp(-inf) = 0 on the first block
    l *= correction;
    for (int64_t d = 0; d < D; ++d) acc[d] *= correction;
    m = top;
  }
  l += block_weights(s, m, n, w);
  // Each acc[d] adds w[j] v_j[d] in key order; 64 dims at a time stay in registers over the keys.
  int64_t d = 0;
#if defined(__AVX2__) && defined(__FMA__)
  for (; d + 64 <= D; d += 64) {
    __m256 a[8];
    for (int64_t i = 0; i < 8; ++i) a[i] = _mm256_loadu_ps(acc + d + 8 * i);
    for (int64_t j = 0; j < n; ++j) {
      const __m256 wj = _mm256_set1_ps(w[j]);
      const float* v = values[j] + d;
      for (int64_t i = 0; i < 8; ++i) a[i] = _mm256_fmadd_ps(wj, _mm256_loadu_ps(v + 8 * i), a[i]);
    }
    for (int64_t i = 0; i < 8; ++i) _mm256_storeu_ps(acc + d + 8 * i, a[i]);
  }
  for (; d + 8 <= D; d += 8) {
    __m256 a = _mm256_loadu_ps(acc + d);
    for (int64_t j = 0; j < n; ++j)
      a = _mm256_fmadd_ps(_mm256_set1_ps(w[j]), _mm256_loadu_ps(values[j] + d), a);
    _mm256_storeu_ps(acc + d, a);
  }
#endif
  for (; d < D; ++d)
    for (int64_t j = 0; j < n; ++j) acc[d] = std::fma(w[j], values[j][d], acc[d]);
}

// Normalised output and lse of a state (m, l, acc[D]).
void finish(const float* st, int64_t D, float* out, float* lse) {
  const float inv = st[1] > 0.0f ? 1.0f / st[1] : 0.0f;
  for (int64_t d = 0; d < D; ++d) out[d] = st[2 + d] * inv;
  if (lse != nullptr)
    *lse = st[1] > 0.0f ? st[0] + std::log(st[1]) : -std::numeric_limits<float>::infinity();
}

}  // namespace

void attend_rows(const float* k_cache, const float* v_cache, const int32_t* block_table,
                 const PagedKvLayout& L, int64_t kv_head, float scale,
                 std::vector<AttentionRow>& rows, std::vector<float>& scratch) {
  const int64_t D = L.head_dim;
  const auto n_rows = static_cast<int64_t>(rows.size());
  // Per row: m, l, then acc[D]; one more state at the end for prefixes.
  scratch.assign(static_cast<std::size_t>((n_rows + 1) * (D + 2)), 0.0f);
  float* tmp = scratch.data() + n_rows * (D + 2);
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
      AttentionRow& r = rows[i];
      const int64_t lo = std::max(r.begin, j0) - j0;
      const int64_t hi = std::min(r.end, j0 + n) - j0;
      float* st = scratch.data() + i * (D + 2);
      if (r.prefix_out != nullptr && r.prefix_end <= j0 + n) {  // the prefix ends in this block
        std::copy(st, st + D + 2, tmp);
        const int64_t pe = std::min(r.prefix_end - j0, hi);
        if (pe > lo)
          attend_block(r.q, keys + lo, values + lo, pe - lo, D, scale, tmp[0], tmp[1], tmp + 2);
        finish(tmp, D, r.prefix_out, r.prefix_lse);
        r.prefix_out = nullptr;
      }
      if (lo >= hi) continue;
      attend_block(r.q, keys + lo, values + lo, hi - lo, D, scale, st[0], st[1], st + 2);
    }
  }
  for (int64_t i = 0; i < n_rows; ++i) {
    const float* st = scratch.data() + i * (D + 2);
    finish(st, D, rows[i].out, rows[i].lse);
    if (rows[i].prefix_out != nullptr) {  // a prefix reaching the end of the row's keys
      finish(st, D, rows[i].prefix_out, rows[i].prefix_lse);
      rows[i].prefix_out = nullptr;
    }
  }
}

}  // namespace detail

void paged_attention(const PagedAttentionParams& p) {
  using detail::kQueryTile;
  const PagedKvLayout& L = p.layout;
  const int64_t D = L.head_dim;
  const int64_t group = p.num_q_heads / L.num_kv_heads;
  // Work items: each sequence's tokens in tiles of kQueryTile, times the kv heads (the q heads of a
  // kv head share its key loads). Too few items to keep every thread busy (a small decode batch):
  // one q head per item instead. Either way each row's arithmetic is the same.
  int64_t tiles = 0;
  for (int64_t s = 0; s < p.num_seqs; ++s)
    tiles += (p.query_start[s + 1] - p.query_start[s] + kQueryTile - 1) / kQueryTile;
  const int64_t heads = tiles * L.num_kv_heads >= int64_t{4} * omp_get_max_threads() ? group : 1;
  struct Item {
    int64_t s, t0, t1, h0;
  };
  std::vector<Item> items;
  for (int64_t s = 0; s < p.num_seqs; ++s)
    for (int64_t t0 = p.query_start[s]; t0 < p.query_start[s + 1]; t0 += kQueryTile)
      for (int64_t h0 = 0; h0 < p.num_q_heads; h0 += heads)
        items.push_back({s, t0, std::min<int64_t>(p.query_start[s + 1], t0 + kQueryTile), h0});
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
        for (int64_t h = it.h0; h < it.h0 + heads; ++h)
          rows.push_back({p.q + (t * p.num_q_heads + h) * D, p.out + (t * p.num_q_heads + h) * D,
                          nullptr, 0, pos0 + t + 1});
      detail::attend_rows(p.k_cache, p.v_cache, p.block_tables + it.s * p.max_blocks_per_seq, L,
                          it.h0 / group, p.scale, rows, scratch);
    }
  }
}

}  // namespace macserve::kernels::cpu
