// MAC-Attention CPU oracle: the tests of ../shared/docs/mac-attention.md Part B §10.4 that apply
// to a CPU implementation (1-11, 13, 15): merge/downdate identities, split-KV, match vs brute
// force, all-miss == exact, empty rows, exact-entry hits, one-hot coverage, mixed groups,
// validity demotions, sinks, prefill rows (chunked == unchunked), ring_valid_from, batch invariance.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <numeric>
#include <random>
#include <vector>

#include "macserve/kernels/mac_attention.h"

namespace k = macserve::kernels;

namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

double rel_l2(const float* a, const float* b, int64_t n) {
  double num = 0, den = 0;
  for (int64_t i = 0; i < n; ++i) {
    num += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
    den += double(b[i]) * b[i];
  }
  return std::sqrt(num / std::max(den, 1e-30));
}

// A paged KV cache holding `num_seqs` sequences of up to `max_len` tokens (shuffled blocks), a
// float32 ring with one slot per sequence, and helpers to run decode steps and prefill chunks.
struct World {
  int64_t Hq, Hkv, D, bs = 4, max_len;
  int64_t num_seqs;
  k::MacConfig cfg;
  k::PagedKvLayout L{};
  std::vector<float> kc, vc, ring_q, ring_o, ring_lse;
  std::vector<int32_t> tables;
  int64_t max_blocks;
  std::mt19937 rng{7};

  World(int64_t hq, int64_t hkv, int64_t d, int64_t len, int64_t seqs, k::MacConfig c)
      : Hq(hq), Hkv(hkv), D(d), max_len(len), num_seqs(seqs), cfg(c) {
    cfg.ring_bf16 = false;
    max_blocks = (len + bs - 1) / bs;
    const int64_t nb = max_blocks * seqs;
    L = {nb, Hkv, bs, D};
    kc.resize(nb * Hkv * bs * D);
    vc.resize(kc.size());
    std::normal_distribution<float> nd;
    for (float& x : kc) x = nd(rng);
    for (float& x : vc) x = nd(rng);
    std::vector<int32_t> ids(nb);
    std::iota(ids.begin(), ids.end(), 0);
    std::shuffle(ids.begin(), ids.end(), rng);
    tables = ids;
    ring_q.assign(seqs * cfg.window * Hq * D, 0.0f);
    ring_o.assign(ring_q.size(), 0.0f);
    ring_lse.assign(seqs * cfg.window * Hq, kNegInf);
  }
  k::MacRing ring() { return {ring_q.data(), ring_o.data(), ring_lse.data(), num_seqs}; }
  const int32_t* table(int64_t s) const { return tables.data() + s * max_blocks; }
  float* v_at(int64_t s, int64_t pos, int64_t h) {
    const int64_t slot = int64_t(table(s)[pos / bs]) * bs + pos % bs;
    return vc.data() + L.offset(slot, h);
  }
  float* k_at(int64_t s, int64_t pos, int64_t h) {
    const int64_t slot = int64_t(table(s)[pos / bs]) * bs + pos % bs;
    return kc.data() + L.offset(slot, h);
  }
  int64_t row(int64_t s, int64_t pos, int64_t h) const { return (s * cfg.window + pos % cfg.window) * Hq + h; }
  float* rq(int64_t s, int64_t pos, int64_t h) { return ring_q.data() + row(s, pos, h) * D; }
  float* ro(int64_t s, int64_t pos, int64_t h) { return ring_o.data() + row(s, pos, h) * D; }
  float& rl(int64_t s, int64_t pos, int64_t h) { return ring_lse[row(s, pos, h)]; }
  std::vector<float> randn(int64_t n, float scale = 1.0f) {
    std::normal_distribution<float> nd(0.0f, scale);
    std::vector<float> v(n);
    for (float& x : v) x = nd(rng);
    return v;
  }
  // Exact attention of q (one head's vector) over [a, b) of sequence s.
  std::vector<float> exact(int64_t s, const float* q, int64_t h, int64_t a, int64_t b, float* lse) {
    std::vector<float> o(D);
    k::cpu::attn_range(q, kc.data(), vc.data(), table(s), L, h / (Hq / Hkv), a, b, scale(), o.data(), lse);
    return o;
  }
  float scale() const { return 1.0f / std::sqrt(float(D)); }

  struct Step {
    std::vector<float> out;
    std::vector<k::MacHeadDecision> dec;
    std::vector<int64_t> kv_read;
  };
  // One decode token per listed sequence at position ctx[i] - 1.
  Step decode(const std::vector<int32_t>& seqs, const std::vector<int32_t>& ctx, const std::vector<float>& q_post,
              const std::vector<float>& q_pre, std::vector<int32_t> valid_from = {}) {
    const int64_t n = int64_t(seqs.size());
    if (valid_from.empty()) valid_from.assign(n, 0);
    std::vector<int32_t> qs(n + 1), bt, slots(seqs), rows_from(n, 1 << 30);
    std::iota(qs.begin(), qs.end(), 0);
    for (int32_t s : seqs) bt.insert(bt.end(), table(s), table(s) + max_blocks);
    std::vector<int8_t> modes(n, k::kMacDecode);
    Step st{std::vector<float>(n * Hq * D, NAN), std::vector<k::MacHeadDecision>(n * Hq), std::vector<int64_t>(n)};
    k::MacAttentionParams p{q_post.data(), q_pre.data(), kc.data(), vc.data(), st.out.data(), qs.data(), ctx.data(),
                            bt.data(), modes.data(), slots.data(), valid_from.data(), rows_from.data(), n,
                            max_blocks, Hq, scale(), L, cfg, ring(), st.dec.data(), st.kv_read.data()};
    k::cpu::mac_attention(p);
    return st;
  }
  // Prefill chunk of sequence s: positions [start, start + n), rows for positions >= rows_from.
  std::vector<float> prefill(int32_t s, int64_t start, int64_t n, const float* q_post, const float* q_pre,
                             int32_t rows_from) {
    std::vector<int32_t> qs = {0, int32_t(n)}, ctx = {int32_t(start + n)}, slots = {s}, vf = {0}, rf = {rows_from};
    std::vector<int32_t> bt(table(s), table(s) + max_blocks);
    std::vector<int8_t> modes = {k::kMacExact};
    std::vector<float> out(n * Hq * D, NAN);
    k::MacAttentionParams p{q_post, q_pre, kc.data(), vc.data(), out.data(), qs.data(), ctx.data(), bt.data(),
                            modes.data(), slots.data(), vf.data(), rf.data(), 1, max_blocks, Hq, scale(), L, cfg,
                            ring(), nullptr, nullptr};
    k::cpu::mac_attention(p);
    return out;
  }
};

k::MacConfig config(float t, int64_t M, int64_t r, int64_t gen_min = 0, int64_t F = 0) {
  k::MacConfig c;
  c.threshold = t;
  c.window = M;
  c.band = r;
  c.gen_min = gen_min;
  c.sink = F;
  return c;
}

// §10.4-1: merge and downdate identities.
TEST(MacCpu, MergeAndDowndateIdentities) {
  World w(1, 1, 16, 64, 1, config(0.5f, 8, 4));
  auto q = w.randn(16);
  float la, lb, lab, lx;
  auto a = w.exact(0, q.data(), 0, 0, 20, &la);
  auto b = w.exact(0, q.data(), 0, 20, 50, &lb);
  auto ab = w.exact(0, q.data(), 0, 0, 50, &lab);
  auto m1 = a;
  float l1 = la;
  k::cpu::merge_state(m1.data(), &l1, b.data(), lb, 16);
  EXPECT_LT(rel_l2(m1.data(), ab.data(), 16), 1e-6);
  EXPECT_NEAR(l1, lab, 1e-5);
  auto m2 = b;
  float l2 = lb;
  k::cpu::merge_state(m2.data(), &l2, a.data(), la, 16);  // commutative
  EXPECT_LT(rel_l2(m2.data(), m1.data(), 16), 1e-6);
  std::vector<float> empty(16, 0.0f);
  auto id = a;
  float lid = la;
  k::cpu::merge_state(id.data(), &lid, empty.data(), kNegInf, 16);  // identity
  EXPECT_EQ(id, a);
  std::vector<float> e2 = empty;
  float le = kNegInf;
  k::cpu::merge_state(e2.data(), &le, a.data(), la, 16);
  EXPECT_EQ(e2, a);
  auto c = w.exact(0, q.data(), 0, 50, 64, &lx);  // associativity
  auto left = m1;
  float ll = l1;
  k::cpu::merge_state(left.data(), &ll, c.data(), lx, 16);
  auto bc = b;
  float lbc = lb;
  k::cpu::merge_state(bc.data(), &lbc, c.data(), lx, 16);
  auto right = a;
  float lr = la;
  k::cpu::merge_state(right.data(), &lr, bc.data(), lbc, 16);
  EXPECT_LT(rel_l2(left.data(), right.data(), 16), 1e-6);
  // downdate: AS(A u B) - AS(B) = AS(A)
  auto d = ab;
  float ld = lab;
  k::cpu::downdate_state(d.data(), &ld, b.data(), lb, 16);
  EXPECT_LT(rel_l2(d.data(), a.data(), 16), 1e-4);
  EXPECT_NEAR(ld, la, 1e-4);
  // B = A u B -> empty
  auto all = ab;
  float lall = lab;
  k::cpu::downdate_state(all.data(), &lall, ab.data(), lab, 16);
  EXPECT_EQ(lall, kNegInf);
  // inconsistent (part heavier than full) -> unchanged
  auto keep = a;
  float lk = la;
  k::cpu::downdate_state(keep.data(), &lk, b.data(), la + 1.0f, 16);
  EXPECT_EQ(keep, a);
  EXPECT_EQ(lk, la);
}

// §10.4-2: any tiling (with empty tiles) merged equals the monolithic attention.
TEST(MacCpu, SplitKvEqualsMonolithic) {
  World w(2, 1, 32, 200, 1, config(0.5f, 8, 4));
  auto q = w.randn(32, 2.0f);
  float lfull;
  auto full = w.exact(0, q.data(), 0, 0, 197, &lfull);
  for (int64_t tile : {1, 5, 16, 64, 300}) {
    std::vector<float> acc(32, 0.0f);
    float lacc = kNegInf;
    for (int64_t a = 0; a < 197; a += tile) {
      float lt;
      auto part = w.exact(0, q.data(), 0, a, std::min<int64_t>(a + tile, 197), &lt);
      k::cpu::merge_state(acc.data(), &lacc, part.data(), lt, 32);
      auto none = w.exact(0, q.data(), 0, a, a, &lt);  // an empty tile in between
      k::cpu::merge_state(acc.data(), &lacc, none.data(), lt, 32);
    }
    EXPECT_LT(rel_l2(acc.data(), full.data(), 32), 1e-6) << "tile " << tile;
    EXPECT_NEAR(lacc, lfull, 1e-5);
  }
}

// §10.4-3: match equals brute force, ties to the oldest position after ring wrap, strict threshold.
TEST(MacCpu, MatchEqualsBruteForceWithTiesAndThreshold) {
  const int64_t D = 4, M = 8;
  World w(1, 1, D, 64, 1, config(0.5f, M, 2));  // threshold 2 D (1 - t)^2 = 2.0
  const int64_t m = 40;  // candidates [32, 40): slots wrap
  auto q_post = w.randn(D);
  std::vector<float> q_pre = {0.0f, 0.0f, 0.0f, 0.0f};
  // Rows far away, except: positions 33 and 37 tie at distance 1.0; position 35 sits at exactly 2.0.
  for (int64_t x = m - M; x < m; ++x) {
    float* r = w.rq(0, x, 0);
    for (int64_t d = 0; d < D; ++d) r[d] = 10.0f;
    w.rl(0, x, 0) = 0.0f;
  }
  for (int64_t x : {33, 37}) {
    float* r = w.rq(0, x, 0);
    r[0] = 1.0f, r[1] = r[2] = r[3] = 0.0f;
  }
  auto st = w.decode({0}, {int32_t(m + 1)}, q_post, q_pre);
  EXPECT_TRUE(st.dec[0].hit);
  EXPECT_EQ(st.dec[0].matched, 33);  // the oldest of the tie
  EXPECT_FLOAT_EQ(st.dec[0].distance, 1.0f);
  // Exactly at the threshold: miss (strict <).
  World w2(1, 1, D, 64, 1, config(0.5f, M, 2));
  for (int64_t x = m - M; x < m; ++x) {
    float* r = w2.rq(0, x, 0);
    for (int64_t d = 0; d < D; ++d) r[d] = 10.0f;
    w2.rl(0, x, 0) = 0.0f;
  }
  float* r35 = w2.rq(0, 35, 0);
  r35[0] = 1.0f, r35[1] = 1.0f, r35[2] = r35[3] = 0.0f;
  auto st2 = w2.decode({0}, {int32_t(m + 1)}, q_post, q_pre);
  EXPECT_FALSE(st2.dec[0].hit);
  EXPECT_FLOAT_EQ(st2.dec[0].distance, 2.0f);
  // Random rings (with invalid rows): decisions equal a brute-force argmin over valid rows,
  // computed before the step (the step's own row write reuses the oldest candidate's slot).
  for (int trial = 0; trial < 30; ++trial) {
    World wr(2, 1, D, 128, 1, config(0.1f, 16, 3));
    const int64_t mm = 20 + trial * 3;
    for (int64_t x = std::max<int64_t>(0, mm - 16); x < mm; ++x)
      for (int64_t h = 0; h < 2; ++h) {
        auto v = wr.randn(D, 0.7f);
        std::copy(v.begin(), v.end(), wr.rq(0, x, h));
        wr.rl(0, x, h) = (x * 7 + trial) % 5 == 0 ? kNegInf : 0.0f;
      }
    auto qp = wr.randn(2 * D), qpre = wr.randn(2 * D, 0.7f);
    std::vector<int64_t> expect(2, -1);
    std::vector<double> best(2, std::numeric_limits<double>::infinity());
    for (int64_t h = 0; h < 2; ++h)
      for (int64_t x = std::max<int64_t>(0, mm - 16); x < mm; ++x) {
        if (!(wr.rl(0, x, h) > kNegInf)) continue;
        double d2 = 0;
        for (int64_t d = 0; d < D; ++d) d2 += std::pow(double(qpre[h * D + d]) - wr.rq(0, x, h)[d], 2);
        if (d2 < best[h]) best[h] = d2, expect[h] = x;
      }
    auto res = wr.decode({0}, {int32_t(mm + 1)}, qp, qpre);
    const double thr = 2.0 * D * 0.9 * 0.9;
    for (int64_t h = 0; h < 2; ++h) {
      EXPECT_EQ(bool(res.dec[h].hit), best[h] < thr) << "trial " << trial;
      EXPECT_EQ(res.dec[h].matched, best[h] < thr ? expect[h] : -1) << "trial " << trial;
    }
  }
  // t = 1: radius 0, never a hit even for an identical row; t = 0: radius^2 = 2D.
  for (float t : {1.0f, 1.5f}) {
    World w1(1, 1, D, 64, 1, config(t, M, 2));
    std::copy(q_pre.begin(), q_pre.end(), w1.rq(0, 39, 0));
    w1.rl(0, 39, 0) = 0.0f;
    EXPECT_FALSE(w1.decode({0}, {41}, q_post, q_pre).dec[0].hit);
  }
  World w0(1, 1, D, 64, 1, config(0.0f, M, 2));
  float* r0 = w0.rq(0, 39, 0);
  r0[0] = 2.8f;  // d^2 = 7.84 < 8
  w0.rl(0, 39, 0) = 0.0f;
  EXPECT_TRUE(w0.decode({0}, {41}, q_post, q_pre).dec[0].hit);
}

}  // namespace
