// Paged causal attention, float32, one pass over the keys with an online softmax, blocked over
// query rows and keys (attention_rows.h). Parallel over (sequence, query tile, kv head).
// GQA: q head h reads kv head h / (num_q_heads / num_kv_heads).
#include "macserve/kernels/attention.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <utility>
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

// A row's online-softmax state is D + 2 floats: m (running max), l (sum of weights), acc[D]
// (unnormalised output). m = -inf, l = 0 when empty.
void reset(float* st, int64_t D) {
  st[0] = -std::numeric_limits<float>::infinity();
  std::fill(st + 1, st + D + 2, 0.0f);
}

// total := total (+) seg. The only way two segment states meet, always in segment order. l is 0
// only for an empty state (the largest score's weight is 1).
void fold(float* total, const float* seg, int64_t D) {
  if (seg[1] == 0.0f) return;
  if (total[1] == 0.0f) {
    std::copy(seg, seg + D + 2, total);
    return;
  }
  const float m = std::max(total[0], seg[0]);
  const float a = std::exp(total[0] - m), b = std::exp(seg[0] - m);
  total[0] = m;
  total[1] = std::fma(total[1], a, seg[1] * b);
  for (int64_t d = 0; d < D; ++d) total[2 + d] = std::fma(total[2 + d], a, seg[2 + d] * b);
}

// Normalised output and lse of a state.
void finish(const float* st, int64_t D, float* out, float* lse) {
  const float inv = st[1] > 0.0f ? 1.0f / st[1] : 0.0f;
  for (int64_t d = 0; d < D; ++d) out[d] = st[2 + d] * inv;
  if (lse != nullptr)
    *lse = st[1] > 0.0f ? st[0] + std::log(st[1]) : -std::numeric_limits<float>::infinity();
}

// The segment a row's prefix ends strictly inside, whose partial state the prefix needs; -1 when
// there is none (no prefix, or one made of whole segments).
int64_t partial_segment(const AttentionRow& r) {
  return r.prefix_out != nullptr && r.prefix_end % kKeySegment != 0 ? r.prefix_end / kKeySegment
                                                                    : -1;
}

// The segments [first, last) that hold any row's keys (first == last when there are none).
std::pair<int64_t, int64_t> segment_span(const std::vector<AttentionRow>& rows) {
  int64_t first = std::numeric_limits<int64_t>::max(), last = 0;
  for (const AttentionRow& r : rows)
    if (r.begin < r.end) {
      first = std::min(first, r.begin / kKeySegment);
      last = std::max(last, (r.end + kKeySegment - 1) / kKeySegment);
    }
  return first < last ? std::pair{first, last} : std::pair{last, last};
}

// The states of `rows` over segments [seg_lo, seg_hi): row i's keys in segment k go to
// states + i * row_stride + (k - seg_lo) * (D + 2). A row whose prefix ends strictly inside one of
// these segments also gets that segment's state over its keys before prefix_end in
// partial + i * (D + 2). Blocks are visited in key order and every row of the call updates its
// state from each block while the block sits in L1.
void segment_states(const float* k_cache, const float* v_cache, const int32_t* block_table,
                    const PagedKvLayout& L, int64_t kv_head, float scale,
                    const std::vector<AttentionRow>& rows, int64_t seg_lo, int64_t seg_hi,
                    float* states, int64_t row_stride, float* partial) {
  const int64_t D = L.head_dim;
  const auto n_rows = static_cast<int64_t>(rows.size());
  int64_t first = std::numeric_limits<int64_t>::max(), last = 0;
  for (int64_t i = 0; i < n_rows; ++i) {
    const AttentionRow& r = rows[i];
    for (int64_t k = seg_lo; k < seg_hi; ++k)
      reset(states + i * row_stride + (k - seg_lo) * (D + 2), D);
    if (const int64_t kp = partial_segment(r); kp >= seg_lo && kp < seg_hi)
      reset(partial + i * (D + 2), D);
    if (r.begin < r.end) {
      first = std::min(first, std::max(r.begin, seg_lo * kKeySegment));
      last = std::max(last, std::min(r.end, seg_hi * kKeySegment));
    }
  }
  const float* keys[kKeyBlock];
  const float* values[kKeyBlock];
  const auto row_of = [&](const float* cache, int64_t key) {
    const int64_t slot =
        static_cast<int64_t>(block_table[key / L.block_size]) * L.block_size + key % L.block_size;
    return cache + L.offset(slot, kv_head);
  };
  for (int64_t j0 = first < last ? first / kKeyBlock * kKeyBlock : last; j0 < last;
       j0 += kKeyBlock) {
    const int64_t n = std::min(kKeyBlock, last - j0);
    for (int64_t j = 0; j < n; ++j) {
      keys[j] = row_of(k_cache, j0 + j);
      values[j] = row_of(v_cache, j0 + j);
    }
    // The next block's keys and values start on their way from memory (KV pages are scattered, so
    // the hardware prefetcher restarts at every page).
    for (int64_t key = j0 + kKeyBlock; key < std::min(j0 + 2 * kKeyBlock, last); ++key) {
      const float* kp = row_of(k_cache, key);
      const float* vp = row_of(v_cache, key);
      for (int64_t d = 0; d < D; d += 16) {
        __builtin_prefetch(kp + d);
        __builtin_prefetch(vp + d);
      }
    }
    const int64_t k = j0 / kKeySegment;  // a block lies in one segment
    for (int64_t i = 0; i < n_rows; ++i) {
      const AttentionRow& r = rows[i];
      const int64_t lo = std::max(r.begin, j0) - j0;
      const int64_t hi = std::min(r.end, j0 + n) - j0;
      if (lo >= hi) continue;
      float* st = states + i * row_stride + (k - seg_lo) * (D + 2);
      if (partial_segment(r) == k && r.prefix_end > j0 &&
          r.prefix_end <= j0 + n) {  // the prefix ends in this block, inside the segment
        float* pt = partial + i * (D + 2);
        std::copy(st, st + D + 2, pt);
        const int64_t pe = r.prefix_end - j0;
        if (pe > lo)
          attend_block(r.q, keys + lo, values + lo, pe - lo, D, scale, pt[0], pt[1], pt + 2);
      }
      attend_block(r.q, keys + lo, values + lo, hi - lo, D, scale, st[0], st[1], st + 2);
    }
  }
}

// Folds segment k of row r into its total; emits the row's prefix when it ends at or inside
// segment k (tmp: D + 2 floats of scratch).
void fold_step(AttentionRow& r, int64_t k, const float* seg, const float* partial, float* total,
               float* tmp, int64_t D) {
  if (r.prefix_out != nullptr) {
    if (r.prefix_end <= k * kKeySegment) {
      finish(total, D, r.prefix_out, r.prefix_lse);
      r.prefix_out = nullptr;
    } else if (partial_segment(r) == k) {
      std::copy(total, total + D + 2, tmp);
      fold(tmp, partial, D);
      finish(tmp, D, r.prefix_out, r.prefix_lse);
      r.prefix_out = nullptr;
    }
  }
  fold(total, seg, D);
}

void finish_row(AttentionRow& r, const float* total, int64_t D) {
  finish(total, D, r.out, r.lse);
  if (r.prefix_out != nullptr) {  // a prefix reaching the end of the row's keys
    finish(total, D, r.prefix_out, r.prefix_lse);
    r.prefix_out = nullptr;
  }
}

}  // namespace

void attend_rows(const float* k_cache, const float* v_cache, const int32_t* block_table,
                 const PagedKvLayout& L, int64_t kv_head, float scale,
                 std::vector<AttentionRow>& rows, std::vector<float>& scratch) {
  const int64_t D = L.head_dim, S = D + 2;
  const auto n_rows = static_cast<int64_t>(rows.size());
  // Per row: its total, its current segment's state, its prefix's partial segment; then tmp.
  scratch.resize(static_cast<std::size_t>((3 * n_rows + 1) * S));
  float* total = scratch.data();
  float* seg = total + n_rows * S;
  float* partial = seg + n_rows * S;
  float* tmp = partial + n_rows * S;
  for (int64_t i = 0; i < n_rows; ++i) reset(total + i * S, D);
  const auto [first, last] = segment_span(rows);
  for (int64_t k = first; k < last; ++k) {
    segment_states(k_cache, v_cache, block_table, L, kv_head, scale, rows, k, k + 1, seg, S,
                   partial);
    for (int64_t i = 0; i < n_rows; ++i)
      fold_step(rows[i], k, seg + i * S, partial + i * S, total + i * S, tmp, D);
  }
  for (int64_t i = 0; i < n_rows; ++i) finish_row(rows[i], total + i * S, D);
}

void attend_groups(const float* k_cache, const float* v_cache, const PagedKvLayout& L, float scale,
                   std::vector<RowGroup>& groups) {
  const auto num_groups = static_cast<int64_t>(groups.size());
  const int64_t want = int64_t{4} * omp_get_max_threads();
  if (num_groups >= want || omp_get_max_threads() == 1) {
#pragma omp parallel if (num_groups > 1)
    {
      std::vector<float> scratch;
#pragma omp for schedule(dynamic, 1)
      for (int64_t g = 0; g < num_groups; ++g)
        attend_rows(k_cache, v_cache, groups[g].block_table, L, groups[g].kv_head, scale,
                    groups[g].rows, scratch);
    }
    return;
  }
  // Few groups: each group's segments are cut into chunks computed in parallel, every segment's
  // states kept apart; then each row folds its segments in order. The same states and the same
  // folds as attend_rows, so the same bits.
  const int64_t D = L.head_dim, S = D + 2;
  struct Layout {
    int64_t first, last, states, partial;
  };
  std::vector<Layout> lay(static_cast<std::size_t>(num_groups));
  struct Chunk {
    int64_t g, lo, hi;
  };
  std::vector<Chunk> chunks;
  int64_t floats = 0, num_rows = 0;
  const int64_t per_group = (want + num_groups - 1) / std::max<int64_t>(num_groups, 1);
  for (int64_t g = 0; g < num_groups; ++g) {
    const auto [first, last] = segment_span(groups[g].rows);
    const auto n_rows = static_cast<int64_t>(groups[g].rows.size());
    lay[g] = {first, last, floats, floats + n_rows * (last - first) * S};
    floats += n_rows * (last - first + 1) * S;
    num_rows += n_rows;
    const int64_t nseg = last - first, parts = std::min(nseg, per_group);
    for (int64_t c = 0; c < parts; ++c)
      chunks.push_back({g, first + nseg * c / parts, first + nseg * (c + 1) / parts});
  }
  std::vector<float> buf(static_cast<std::size_t>(floats));
  std::vector<std::pair<int64_t, int64_t>> row_ids;  // (group, row)
  row_ids.reserve(static_cast<std::size_t>(num_rows));
  for (int64_t g = 0; g < num_groups; ++g)
    for (int64_t i = 0; i < static_cast<int64_t>(groups[g].rows.size()); ++i)
      row_ids.emplace_back(g, i);
  const auto num_chunks = static_cast<int64_t>(chunks.size());
#pragma omp parallel
  {
#pragma omp for schedule(dynamic, 1)
    for (int64_t c = 0; c < num_chunks; ++c) {
      const Chunk& ch = chunks[c];
      const RowGroup& grp = groups[ch.g];
      const Layout& ly = lay[ch.g];
      segment_states(k_cache, v_cache, grp.block_table, L, grp.kv_head, scale, grp.rows, ch.lo,
                     ch.hi, buf.data() + ly.states + (ch.lo - ly.first) * S,
                     (ly.last - ly.first) * S, buf.data() + ly.partial);
    }
    std::vector<float> total(static_cast<std::size_t>(S)), tmp(static_cast<std::size_t>(S));
#pragma omp for schedule(static)
    for (int64_t r = 0; r < num_rows; ++r) {
      const auto [g, i] = row_ids[r];
      const Layout& ly = lay[g];
      AttentionRow& row = groups[g].rows[i];
      const float* states = buf.data() + ly.states + i * (ly.last - ly.first) * S;
      reset(total.data(), D);
      for (int64_t k = ly.first; k < ly.last; ++k)
        fold_step(row, k, states + (k - ly.first) * S, buf.data() + ly.partial + i * S,
                  total.data(), tmp.data(), D);
      finish_row(row, total.data(), D);
    }
  }
}

}  // namespace detail

void paged_attention(const PagedAttentionParams& p) {
  using detail::kQueryTile;
  const PagedKvLayout& L = p.layout;
  const int64_t D = L.head_dim;
  const int64_t group = p.num_q_heads / L.num_kv_heads;
  // Groups: each sequence's tokens in tiles of kQueryTile, times the kv heads (the q heads of a kv
  // head share its key loads). attend_groups splits long key ranges when there are few groups.
  std::vector<detail::RowGroup> groups;
  for (int64_t s = 0; s < p.num_seqs; ++s) {
    const int64_t num_queries = p.query_start[s + 1] - p.query_start[s];
    const int64_t pos0 = p.context_lens[s] - num_queries - p.query_start[s];
    for (int64_t t0 = p.query_start[s]; t0 < p.query_start[s + 1]; t0 += kQueryTile)
      for (int64_t g = 0; g < L.num_kv_heads; ++g) {
        detail::RowGroup& grp =
            groups.emplace_back(detail::RowGroup{p.block_tables + s * p.max_blocks_per_seq, g, {}});
        for (int64_t t = t0; t < std::min<int64_t>(p.query_start[s + 1], t0 + kQueryTile); ++t)
          for (int64_t h = g * group; h < (g + 1) * group; ++h)
            grp.rows.push_back({p.q + (t * p.num_q_heads + h) * D,
                                p.out + (t * p.num_q_heads + h) * D, nullptr, 0, pos0 + t + 1});
      }
  }
  detail::attend_groups(p.k_cache, p.v_cache, L, p.scale, groups);
}

}  // namespace macserve::kernels::cpu
