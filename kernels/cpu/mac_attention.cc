// MAC-Attention on the CPU in float32: the oracle for the CUDA kernels. Decode: float distances
// in a fixed order, then the blocked float kernel of paged attention (attention_rows.h) for every
// key range a step needs, and merges in double. Prefill chunks: the same kernel for the outputs
// and the direct ring rows. Results never depend on batch composition. attn_range (double, one
// key at a time) stays as the straightforward reference the tests compare against.
#include "macserve/kernels/mac_attention.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "attention_rows.h"

namespace macserve::kernels::cpu {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

inline float bf16_load(const uint16_t* p) {
  const uint32_t bits = static_cast<uint32_t>(*p) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof(f));
  return f;
}

inline uint16_t bf16_round(float f) {  // nearest even; NaN stays NaN
  uint32_t bits;
  std::memcpy(&bits, &f, sizeof(bits));
  if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((bits >> 16) | 0x40u);
  bits += 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>(bits >> 16);
}

// Typed access to one ring row (q or o) of D elements.
struct RingRow {
  void* base;
  bool bf16;
  float get(int64_t i) const {
    return bf16 ? bf16_load(static_cast<const uint16_t*>(base) + i)
                : static_cast<const float*>(base)[i];
  }
  void set(int64_t i, float v) const {
    if (bf16)
      static_cast<uint16_t*>(base)[i] = bf16_round(v);
    else
      static_cast<float*>(base)[i] = v;
  }
};

struct RingIndex {
  const MacAttentionParams& p;
  int64_t D;
  int64_t row_offset(int64_t slot, int64_t pos, int64_t h) const {
    return ((slot * p.cfg.window + pos % p.cfg.window) * p.num_q_heads + h);
  }
  RingRow q(int64_t slot, int64_t pos, int64_t h) const {
    const int64_t e = row_offset(slot, pos, h) * D;
    return {p.cfg.ring_bf16 ? static_cast<void*>(static_cast<uint16_t*>(p.ring.q) + e)
                            : static_cast<void*>(static_cast<float*>(p.ring.q) + e),
            p.cfg.ring_bf16};
  }
  RingRow o(int64_t slot, int64_t pos, int64_t h) const {
    const int64_t e = row_offset(slot, pos, h) * D;
    return {p.cfg.ring_bf16 ? static_cast<void*>(static_cast<uint16_t*>(p.ring.o) + e)
                            : static_cast<void*>(static_cast<float*>(p.ring.o) + e),
            p.cfg.ring_bf16};
  }
  float& lse(int64_t slot, int64_t pos, int64_t h) const {
    return p.ring.lse[row_offset(slot, pos, h)];
  }
};

void write_row(const RingIndex& ring, int64_t slot, int64_t pos, int64_t h, const float* q_pre,
               const float* o, float lse) {
  const RingRow rq = ring.q(slot, pos, h);
  const RingRow ro = ring.o(slot, pos, h);
  const bool empty = !(lse > kNegInf);
  for (int64_t d = 0; d < ring.D; ++d) {
    rq.set(d, q_pre[d]);
    ro.set(d, empty ? 0.0f : o[d]);
  }
  ring.lse(slot, pos, h) = empty ? kNegInf : lse;
}

float clamp_threshold(float t) { return std::min(1.0f, std::max(0.0f, std::isnan(t) ? 1.0f : t)); }

}  // namespace

void attn_range(const float* q, const float* k_cache, const float* v_cache,
                const int32_t* block_table, const PagedKvLayout& L, int64_t kv_head, int64_t begin,
                int64_t end, float scale, float* o, float* lse) {
  const int64_t D = L.head_dim;
  std::fill(o, o + D, 0.0f);
  if (end <= begin) {
    *lse = kNegInf;
    return;
  }
  std::vector<double> acc(static_cast<std::size_t>(D), 0.0);
  double mx = -std::numeric_limits<double>::infinity();
  double sum = 0.0;
  for (int64_t j = begin; j < end; ++j) {
    const int64_t slot =
        static_cast<int64_t>(block_table[j / L.block_size]) * L.block_size + j % L.block_size;
    const float* k = k_cache + L.offset(slot, kv_head);
    const float* v = v_cache + L.offset(slot, kv_head);
    double dot = 0.0;
    for (int64_t d = 0; d < D; ++d) dot += static_cast<double>(q[d]) * k[d];
    const double s = dot * scale;
    if (s > mx) {
      const double c = std::exp(mx - s);
      sum *= c;
      for (double& a : acc) a *= c;
      mx = s;
    }
    const double w = std::exp(s - mx);
    sum += w;
    for (int64_t d = 0; d < D; ++d) acc[d] += w * v[d];
  }
  for (int64_t d = 0; d < D; ++d) o[d] = static_cast<float>(acc[d] / sum);
  *lse = static_cast<float>(mx + std::log(sum));
}

void merge_state(float* o_a, float* lse_a, const float* o_b, float lse_b, int64_t dim) {
  if (!(lse_b > kNegInf)) return;
  if (!(*lse_a > kNegInf)) {
    std::copy(o_b, o_b + dim, o_a);
    *lse_a = lse_b;
    return;
  }
  const double m = std::max(*lse_a, lse_b);
  const double wa = std::exp(*lse_a - m);
  const double wb = std::exp(lse_b - m);
  for (int64_t d = 0; d < dim; ++d)
    o_a[d] = static_cast<float>((wa * o_a[d] + wb * o_b[d]) / (wa + wb));
  *lse_a = static_cast<float>(m + std::log(wa + wb));
}

void downdate_state(float* o_full, float* lse_full, const float* o_part, float lse_part,
                    int64_t dim) {
  if (!(lse_part > kNegInf)) return;  // removing nothing
  const double diff = static_cast<double>(lse_part) - *lse_full;
  const double em1 = std::expm1(diff);
  if (std::fabs(em1) <= 1e-7) {  // part is everything: the rest is empty
    std::fill(o_full, o_full + dim, 0.0f);
    *lse_full = kNegInf;
    return;
  }
  if (diff > 0) return;  // numerically inconsistent: keep the full state (reference guard)
  const double lse_rest = *lse_full + std::log(std::max(1.0 - std::exp(diff) + 1e-7, 1e-30));
  const double scale = std::exp(static_cast<double>(*lse_full) - lse_rest);
  for (int64_t d = 0; d < dim; ++d)
    o_full[d] = static_cast<float>((o_full[d] - std::exp(diff) * o_part[d]) * scale);
  *lse_full = static_cast<float>(lse_rest);
}

namespace {

// Squared L2 between the current q_pre and a stored row, in float with a fixed order: eight lanes
// over the dimensions (d mod 8), then a fixed tree, so a decision never depends on the batch.
template <typename Load>
float distance_lanes(const float* q, int64_t D, Load load) {
  float lane[8] = {};
  int64_t d = 0;
  for (; d + 8 <= D; d += 8)
    for (int64_t i = 0; i < 8; ++i) {
      const float diff = q[d + i] - load(d + i);
      lane[i] += diff * diff;
    }
  for (; d < D; ++d) {
    const float diff = q[d] - load(d);
    lane[d % 8] += diff * diff;
  }
  return ((lane[0] + lane[1]) + (lane[2] + lane[3])) + ((lane[4] + lane[5]) + (lane[6] + lane[7]));
}

float distance(const float* q, const RingRow& row, int64_t D) {
  if (row.bf16) {
    const auto* r = static_cast<const uint16_t*>(row.base);
    return distance_lanes(q, D, [r](int64_t i) { return bf16_load(r + i); });
  }
  const auto* r = static_cast<const float*>(row.base);
  return distance_lanes(q, D, [r](int64_t i) { return r[i]; });
}

// Match: the nearest valid row among [begin, m); ties go to the oldest position.
MacHeadDecision match(const RingIndex& ring, int64_t slot, int64_t h, const float* q_pre,
                      int64_t begin, int64_t m, bool eligible, double threshold) {
  MacHeadDecision dec{static_cast<int8_t>(eligible), 0, -1, std::numeric_limits<float>::infinity()};
  if (!eligible) return dec;
  float best = std::numeric_limits<float>::infinity();
  for (int64_t x = begin; x < m; ++x) {
    if (!(ring.lse(slot, x, h) > kNegInf)) continue;  // invalid rows never win (Part A #4)
    const float d2 = distance(q_pre, ring.q(slot, x, h), ring.D);
    if (d2 < best) {
      best = d2;
      dec.matched = static_cast<int32_t>(x);
    }
  }
  dec.distance = best;
  dec.hit = dec.matched >= 0 && static_cast<double>(best) < threshold;
  if (!dec.hit) dec.matched = -1;
  return dec;
}

// One decode head's plan and its partial states: `state` is the new ring row's summary, `band`
// the amended keys [E_p, E_m) of a hit, `sink` [0, min(F, E_m)) and `tail` [E_m, m + 1).
struct DecodeHead {
  MacHeadDecision dec;
  int64_t m, first_read;
  bool out_done;  // a miss with no sink: the output row was computed whole (exact attention)
  float *state, *band, *sink, *tail;
  float lse_state, lse_band, lse_sink, lse_tail;
};

// Decides head h of decode sequence s and adds the key ranges it needs to `rows`.
void plan_head(const MacAttentionParams& p, const RingIndex& ring, int64_t s, int64_t h,
               DecodeHead& w, std::vector<detail::AttentionRow>& rows) {
  const int64_t D = p.layout.head_dim;
  const int64_t t = p.query_start[s];
  const int64_t m = p.context_lens[s] - 1;  // position of the current token
  const int64_t r = p.cfg.band, F = p.cfg.sink, M = p.cfg.window;
  const int64_t E_m = std::max<int64_t>(m + 1 - r, 0);
  const int64_t slot = p.ring_slots[s];
  const float* q_post = p.q_post + (t * p.num_q_heads + h) * D;
  const float* q_pre = p.q_pre + (t * p.num_q_heads + h) * D;
  const float thr_t = 1.0f - clamp_threshold(p.cfg.threshold);
  const double threshold = 2.0 * static_cast<double>(D) * thr_t * thr_t;
  const int64_t begin =
      std::max<int64_t>({int64_t{0}, m - M, static_cast<int64_t>(p.ring_valid_from[s])});
  const bool eligible = slot >= 0 && m >= p.cfg.gen_min && begin < m;
  w.dec = match(ring, slot, h, q_pre, begin, m, eligible, threshold);
  w.m = m;
  w.first_read = 0;
  w.out_done = false;
  w.lse_state = w.lse_band = w.lse_sink = w.lse_tail = kNegInf;
  int64_t E_p = 0;
  if (w.dec.hit) {
    E_p = std::max<int64_t>(w.dec.matched + 1 - r, 0);
    if (F > 0 && E_p < F) w.dec.hit = 0;  // the row covers nothing outside the sink
  }
  const int64_t sink_end = std::min(F, E_m);
  auto add = [&](float* o, float* lse, int64_t a, int64_t b) {
    if (a < b) rows.push_back({q_post, o, lse, a, b});
  };
  if (w.dec.hit) {  // reuse row p, amend the band [E_p, E_m)
    const RingRow ro = ring.o(slot, w.dec.matched, h);
    for (int64_t d = 0; d < D; ++d) w.state[d] = ro.get(d);
    w.lse_state = ring.lse(slot, w.dec.matched, h);
    add(w.band, &w.lse_band, E_p, E_m);
    w.first_read = E_p;
  } else if (sink_end == 0) {  // exact: the output over [0, m + 1), the row its prefix [0, E_m)
    w.dec.matched = -1;
    w.out_done = true;
    rows.push_back({q_post, p.out + (t * p.num_q_heads + h) * D, nullptr, 0, m + 1, w.state,
                    &w.lse_state, E_m});
    return;
  } else {  // exact row [F, E_m) beside the sink
    w.dec.matched = -1;
    add(w.state, &w.lse_state, sink_end, E_m);
  }
  add(w.sink, &w.lse_sink, 0, sink_end);
  add(w.tail, &w.lse_tail, E_m, m + 1);
}

// After attend_rows: amend, write the ring row, complete the output.
void finish_head(const MacAttentionParams& p, const RingIndex& ring, int64_t s, int64_t h,
                 DecodeHead& w) {
  const int64_t D = p.layout.head_dim;
  const int64_t t = p.query_start[s];
  const int64_t slot = p.ring_slots[s];
  if (w.dec.hit) merge_state(w.state, &w.lse_state, w.band, w.lse_band, D);
  if (!(w.lse_state > kNegInf)) std::fill(w.state, w.state + D, 0.0f);
  if (slot >= 0)
    write_row(ring, slot, w.m, h, p.q_pre + (t * p.num_q_heads + h) * D, w.state, w.lse_state);
  if (!w.out_done) {  // Complete: sink and tail with the current query.
    float* out = p.out + (t * p.num_q_heads + h) * D;
    std::copy(w.state, w.state + D, out);
    float lse_out = w.lse_state;
    merge_state(out, &lse_out, w.sink, w.lse_sink, D);
    merge_state(out, &lse_out, w.tail, w.lse_tail, D);
  }
  if (p.decisions != nullptr) p.decisions[s * p.num_q_heads + h] = w.dec;
}

// Decode sequences: the q heads of each (sequence, kv head) are decided together, then
// attend_groups computes every key range they need (a group's keys read once for all its rows, long
// ranges spread over the threads when the batch is small). A row's bits depend on neither its group
// nor the split; a miss without a sink gives bit for bit the output of --attention full.
void decode_sequences(const MacAttentionParams& p, const RingIndex& ring,
                      std::vector<int64_t>& first_read) {
  const PagedKvLayout& L = p.layout;
  const int64_t D = L.head_dim, Hq = p.num_q_heads;
  const int64_t group = Hq / L.num_kv_heads;
  std::vector<int64_t> seqs;
  for (int64_t s = 0; s < p.num_seqs; ++s)
    if (p.modes[s] == kMacDecode) seqs.push_back(s);
  const auto num_seqs = static_cast<int64_t>(seqs.size());
  if (num_seqs == 0) return;
  std::vector<DecodeHead> work(static_cast<std::size_t>(num_seqs * Hq));
  std::vector<float> buf(static_cast<std::size_t>(num_seqs * Hq * 4 * D));
  for (int64_t i = 0; i < num_seqs * Hq; ++i) {
    float* b = buf.data() + i * 4 * D;
    work[i].state = b, work[i].band = b + D, work[i].sink = b + 2 * D, work[i].tail = b + 3 * D;
  }
  const int64_t num_groups = num_seqs * L.num_kv_heads;
  std::vector<detail::RowGroup> groups(static_cast<std::size_t>(num_groups));
#pragma omp parallel for schedule(dynamic, 1) if (num_groups > 1)
  for (int64_t g = 0; g < num_groups; ++g) {
    const int64_t si = g / L.num_kv_heads, kvh = g % L.num_kv_heads, s = seqs[si];
    groups[g].block_table = p.block_tables + s * p.max_blocks_per_seq;
    groups[g].kv_head = kvh;
    for (int64_t h = kvh * group; h < (kvh + 1) * group; ++h)
      plan_head(p, ring, s, h, work[si * Hq + h], groups[g].rows);
  }
  detail::attend_groups(p.k_cache, p.v_cache, L, p.scale, groups);
#pragma omp parallel for schedule(static) if (num_seqs * Hq > 1)
  for (int64_t i = 0; i < num_seqs * Hq; ++i) {
    const int64_t s = seqs[i / Hq], h = i % Hq;
    finish_head(p, ring, s, h, work[i]);
    first_read[s * Hq + h] = work[i].first_read;
  }
}

// Exact-mode sequences (prefill chunks): exact attention for every token and, for the chunk's
// last positions, the ring row built directly over [min(F, E), E), E = max(pos + 1 - r, 0). Both
// go through the blocked float kernel of paged attention (attention_rows.h), a tile of tokens times
// the q heads of one kv head per call, so a chunk's outputs are bit for bit what --attention full
// computes and its direct rows cost no more than the attention they sit beside.
void exact_sequences(const MacAttentionParams& p, const RingIndex& ring) {
  using detail::kQueryTile;
  const PagedKvLayout& L = p.layout;
  const int64_t D = L.head_dim;
  const int64_t group = p.num_q_heads / L.num_kv_heads;
  struct Item {
    int64_t s, t0, t1, g;
  };
  std::vector<Item> items;
  for (int64_t s = 0; s < p.num_seqs; ++s) {
    if (p.modes[s] != kMacExact) continue;
    for (int64_t t0 = p.query_start[s]; t0 < p.query_start[s + 1]; t0 += kQueryTile)
      for (int64_t g = 0; g < L.num_kv_heads; ++g)
        items.push_back({s, t0, std::min<int64_t>(p.query_start[s + 1], t0 + kQueryTile), g});
  }
  const auto num_items = static_cast<int64_t>(items.size());
#pragma omp parallel if (num_items > 1)
  {
    std::vector<detail::AttentionRow> rows;
    std::vector<float> scratch, direct;  // direct: per direct row, D floats of o then its lse
    struct Pending {
      int64_t pos, h;
      const float* q_pre;
    };
    std::vector<Pending> pending;
#pragma omp for schedule(dynamic, 1)
    for (int64_t i = 0; i < num_items; ++i) {
      const Item& it = items[i];
      const int64_t s = it.s;
      const int64_t n = p.query_start[s + 1] - p.query_start[s];
      const int64_t pos0 = p.context_lens[s] - n - p.query_start[s];
      const int64_t slot = p.ring_slots != nullptr ? p.ring_slots[s] : -1;
      rows.clear();
      pending.clear();
      direct.assign(static_cast<std::size_t>((it.t1 - it.t0) * group * (D + 1)), 0.0f);
      for (int64_t t = it.t0; t < it.t1; ++t) {
        const int64_t pos = pos0 + t;
        // Only the chunk's last M positions: an earlier one's row slot is rewritten by a later
        // token of the same chunk.
        const bool row = slot >= 0 && p.rows_from != nullptr && pos >= p.rows_from[s] &&
                         pos >= p.context_lens[s] - p.cfg.window;
        const int64_t E = std::max<int64_t>(pos + 1 - p.cfg.band, 0);
        const int64_t row_begin = std::min(p.cfg.sink, E);
        for (int64_t h = it.g * group; h < (it.g + 1) * group; ++h) {
          const float* q = p.q_post + (t * p.num_q_heads + h) * D;
          rows.push_back({q, p.out + (t * p.num_q_heads + h) * D, nullptr, 0, pos + 1});
          if (!row) continue;
          float* o = direct.data() + static_cast<int64_t>(pending.size()) * (D + 1);
          pending.push_back({pos, h, p.q_pre + (t * p.num_q_heads + h) * D});
          if (row_begin == 0) {  // [0, E) is a prefix of the output's keys: taken on the way
            rows.back().prefix_out = o, rows.back().prefix_lse = o + D, rows.back().prefix_end = E;
          } else {
            rows.push_back({q, o, o + D, row_begin, E});
          }
        }
      }
      detail::attend_rows(p.k_cache, p.v_cache, p.block_tables + s * p.max_blocks_per_seq, L, it.g,
                          p.scale, rows, scratch);
      for (std::size_t r = 0; r < pending.size(); ++r) {
        const float* o = direct.data() + static_cast<int64_t>(r) * (D + 1);
        write_row(ring, slot, pending[r].pos, pending[r].h, pending[r].q_pre, o, o[D]);
      }
    }
  }
}

}  // namespace

void mac_attention(const MacAttentionParams& p) {
  const PagedKvLayout& L = p.layout;
  const RingIndex ring{p, L.head_dim};
  const int64_t group = p.num_q_heads / L.num_kv_heads;
  // first key read per (seq, head) for decode sequences, for the KV-bytes telemetry
  std::vector<int64_t> first_read(static_cast<std::size_t>(p.num_seqs * p.num_q_heads), 0);
  exact_sequences(p, ring);
  decode_sequences(p, ring, first_read);
  if (p.kv_tokens_read == nullptr) return;
  // A KV head's keys are read once for its whole group: from the earliest start any of its heads
  // needs (0 when any head missed), plus the sink.
  for (int64_t s = 0; s < p.num_seqs; ++s) {
    const int64_t n = p.query_start[s + 1] - p.query_start[s];
    int64_t total = 0;
    for (int64_t g = 0; g < L.num_kv_heads; ++g) {
      if (p.modes[s] != kMacDecode) {
        if (n > 0) total += p.context_lens[s];
        continue;
      }
      int64_t start = p.context_lens[s];
      for (int64_t h = g * group; h < (g + 1) * group; ++h)
        start = std::min(start, first_read[s * p.num_q_heads + h]);
      total += p.context_lens[s] - start + (start > 0 ? std::min<int64_t>(p.cfg.sink, start) : 0);
    }
    p.kv_tokens_read[s] = total;
  }
}

}  // namespace macserve::kernels::cpu
