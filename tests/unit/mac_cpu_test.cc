// MAC-Attention CPU oracle: the tests of ../shared/docs/mac-attention.md Part B §10.4 that apply
// to a CPU implementation (1-11, 13, 15): merge/downdate identities, split-KV, match vs brute
// force, all-miss == exact, empty rows, exact-entry hits, one-hot coverage, mixed groups,
// validity demotions, sinks, prefill rows (chunked == unchunked), ring_valid_from, batch
// invariance.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <numeric>
#include <random>
#include <vector>

#include "macserve/kernels/attention.h"
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
  int64_t row(int64_t s, int64_t pos, int64_t h) const {
    return (s * cfg.window + pos % cfg.window) * Hq + h;
  }
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
    k::cpu::attn_range(q, kc.data(), vc.data(), table(s), L, h / (Hq / Hkv), a, b, scale(),
                       o.data(), lse);
    return o;
  }
  float scale() const { return 1.0f / std::sqrt(float(D)); }

  struct Step {
    std::vector<float> out;
    std::vector<k::MacHeadDecision> dec;
    std::vector<int64_t> kv_read;
  };
  // One decode token per listed sequence at position ctx[i] - 1.
  Step decode(const std::vector<int32_t>& seqs, const std::vector<int32_t>& ctx,
              const std::vector<float>& q_post, const std::vector<float>& q_pre,
              std::vector<int32_t> valid_from = {}) {
    const int64_t n = int64_t(seqs.size());
    if (valid_from.empty()) valid_from.assign(n, 0);
    std::vector<int32_t> qs(n + 1), bt, slots(seqs), rows_from(n, 1 << 30);
    std::iota(qs.begin(), qs.end(), 0);
    for (int32_t s : seqs) bt.insert(bt.end(), table(s), table(s) + max_blocks);
    std::vector<int8_t> modes(n, k::kMacDecode);
    Step st{std::vector<float>(n * Hq * D, NAN), std::vector<k::MacHeadDecision>(n * Hq),
            std::vector<int64_t>(n)};
    k::MacAttentionParams p{q_post.data(),
                            q_pre.data(),
                            kc.data(),
                            vc.data(),
                            st.out.data(),
                            qs.data(),
                            ctx.data(),
                            bt.data(),
                            modes.data(),
                            slots.data(),
                            valid_from.data(),
                            rows_from.data(),
                            n,
                            max_blocks,
                            Hq,
                            scale(),
                            L,
                            cfg,
                            ring(),
                            st.dec.data(),
                            st.kv_read.data()};
    k::cpu::mac_attention(p);
    return st;
  }
  // Prefill chunk of sequence s: positions [start, start + n), rows for positions >= rows_from.
  std::vector<float> prefill(int32_t s, int64_t start, int64_t n, const float* q_post,
                             const float* q_pre, int32_t rows_from) {
    std::vector<int32_t> qs = {0, int32_t(n)}, ctx = {int32_t(start + n)}, slots = {s}, vf = {0},
                         rf = {rows_from};
    std::vector<int32_t> bt(table(s), table(s) + max_blocks);
    std::vector<int8_t> modes = {k::kMacExact};
    std::vector<float> out(n * Hq * D, NAN);
    k::MacAttentionParams p{q_post,    q_pre,      kc.data(), vc.data(),    out.data(),
                            qs.data(), ctx.data(), bt.data(), modes.data(), slots.data(),
                            vf.data(), rf.data(),  1,         max_blocks,   Hq,
                            scale(),   L,          cfg,       ring(),       nullptr,
                            nullptr};
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
  const int64_t m = 40;                         // candidates [32, 40): slots wrap
  auto q_post = w.randn(D);
  std::vector<float> q_pre = {0.0f, 0.0f, 0.0f, 0.0f};
  // Rows far away, except: positions 33 and 37 tie at distance 1.0; position 35 sits at
  // exactly 2.0.
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
        for (int64_t d = 0; d < D; ++d)
          d2 += std::pow(double(qpre[h * D + d]) - wr.rq(0, x, h)[d], 2);
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

// §10.4-4 and 5: all-miss (t = 1, context below gen_min, short contexts) equals exact attention;
// rows are exact over [min(F, E_m), E_m) with q_pre stored exactly; r >= m + 1 gives empty rows.
TEST(MacCpu, AllMissEqualsExactAndWritesExactRows) {
  struct Case {
    float t;
    int64_t gen_min;
    int64_t r;
    int64_t F;
    int64_t m;
  };
  for (const Case& c :
       {Case{1.0f, 0, 8, 0, 60}, Case{0.45f, 1000, 8, 0, 60}, Case{0.45f, 0, 100, 0, 60},
        Case{1.0f, 0, 8, 3, 60}, Case{1.0f, 0, 62, 5, 60}}) {
    World w(4, 2, 16, 80, 1, config(c.t, 16, c.r, c.gen_min, c.F));
    // Make the ring attractive: rows equal to the query would hit if matching were allowed (with
    // r > m every earlier row is empty, as the kernel itself would have written them).
    auto qp = w.randn(4 * 16), qpre = w.randn(4 * 16);
    for (int64_t x = c.m - 16; x < c.m; ++x)
      for (int64_t h = 0; h < 4; ++h) {
        std::copy(qpre.begin() + h * 16, qpre.begin() + (h + 1) * 16, w.rq(0, x, h));
        w.rl(0, x, h) = c.r > c.m ? kNegInf : 0.0f;
      }
    auto st = w.decode({0}, {int32_t(c.m + 1)}, qp, qpre);
    const int64_t E_m = std::max<int64_t>(c.m + 1 - c.r, 0);
    for (int64_t h = 0; h < 4; ++h) {
      EXPECT_FALSE(st.dec[h].hit);
      float l;
      auto ex = w.exact(0, qp.data() + h * 16, h, 0, c.m + 1, &l);
      EXPECT_LT(rel_l2(st.out.data() + h * 16, ex.data(), 16), 1e-6) << "head " << h;
      auto row = w.exact(0, qp.data() + h * 16, h, std::min(c.F, E_m), E_m, &l);
      if (E_m <= std::min(c.F, E_m)) {
        EXPECT_EQ(w.rl(0, c.m, h), kNegInf);
        for (int64_t d = 0; d < 16; ++d) EXPECT_EQ(w.ro(0, c.m, h)[d], 0.0f);
      } else {
        EXPECT_LT(rel_l2(w.ro(0, c.m, h), row.data(), 16), 1e-6);
        EXPECT_NEAR(w.rl(0, c.m, h), l, 1e-5);
      }
      for (int64_t d = 0; d < 16; ++d) EXPECT_EQ(w.rq(0, c.m, h)[d], qpre[h * 16 + d]);
    }
  }
}

// A decode miss without a sink computes its output as one row over [0, m + 1) with the ring row
// taken on the way: bit for bit what --attention full (cpu::paged_attention) gives, whether the
// step holds one sequence (one q head per work item) or many (the q heads of a kv head together).
TEST(MacCpu, DecodeMissEqualsFullAttentionBitForBit) {
  const int64_t Hq = 4, Hkv = 2, D = 64, seqs = 9;
  World w(Hq, Hkv, D, 300, seqs, config(1.0f, 32, 40));
  std::vector<int32_t> ids(seqs), ctx(seqs);
  std::iota(ids.begin(), ids.end(), 0);
  for (int64_t s = 0; s < seqs; ++s) ctx[s] = int32_t(150 + 17 * s);
  const auto qp = w.randn(seqs * Hq * D), qpre = w.randn(seqs * Hq * D);
  std::vector<float> full(qp.size(), NAN);
  {
    std::vector<int32_t> qs(seqs + 1);
    std::iota(qs.begin(), qs.end(), 0);
    k::PagedAttentionParams pp{qp.data(),    w.kc.data(), w.vc.data(),     full.data(),
                               qs.data(),    ctx.data(),  w.tables.data(), seqs,
                               w.max_blocks, Hq,          w.scale(),       w.L};
    k::cpu::paged_attention(pp);
  }
  auto batch = w.decode(ids, ctx, qp, qpre);
  EXPECT_EQ(0, std::memcmp(batch.out.data(), full.data(), full.size() * sizeof(float)));
  for (int64_t s : {0, 5}) {
    auto alone =
        w.decode({int32_t(s)}, {ctx[s]},
                 std::vector<float>(qp.begin() + s * Hq * D, qp.begin() + (s + 1) * Hq * D),
                 std::vector<float>(qpre.begin() + s * Hq * D, qpre.begin() + (s + 1) * Hq * D));
    EXPECT_EQ(0, std::memcmp(alone.out.data(), full.data() + s * Hq * D, Hq * D * sizeof(float)))
        << "sequence " << s;
    for (int64_t h = 0; h < Hq; ++h) {  // the row: exact attention over [0, E_m)
      float l;
      auto row = w.exact(s, qp.data() + (s * Hq + h) * D, h, 0, ctx[s] - 40, &l);
      EXPECT_LT(rel_l2(w.ro(s, ctx[s] - 1, h), row.data(), D), 1e-6);
      EXPECT_NEAR(w.rl(s, ctx[s] - 1, h), l, 1e-5);
    }
  }
}

// §10.4-6: a hit on an exact entry equals exact attention and writes the exact row.
TEST(MacCpu, ExactEntryHitEqualsExact) {
  for (int64_t F : {0, 3}) {
    for (int64_t lag : {1, 5, 16}) {
      World w(2, 1, 16, 120, 1, config(0.45f, 16, 8, 0, F));
      const int64_t m = 100, p = m - lag;
      auto qp = w.randn(2 * 16), qpre = w.randn(2 * 16);
      const int64_t E_p = p + 1 - 8, E_m = m + 1 - 8;
      for (int64_t h = 0; h < 2; ++h) {
        float l;
        auto entry = w.exact(0, qp.data() + h * 16, h, F, E_p, &l);
        std::copy(entry.begin(), entry.end(), w.ro(0, p, h));
        w.rl(0, p, h) = l;
        std::copy(qpre.begin() + h * 16, qpre.begin() + (h + 1) * 16, w.rq(0, p, h));
      }
      auto st = w.decode({0}, {int32_t(m + 1)}, qp, qpre);
      for (int64_t h = 0; h < 2; ++h) {
        ASSERT_TRUE(st.dec[h].hit);
        EXPECT_EQ(st.dec[h].matched, p);
        float l;
        auto ex = w.exact(0, qp.data() + h * 16, h, 0, m + 1, &l);
        EXPECT_LT(rel_l2(st.out.data() + h * 16, ex.data(), 16), 1e-5)
            << "F " << F << " lag " << lag;
        auto row = w.exact(0, qp.data() + h * 16, h, F, E_m, &l);
        EXPECT_LT(rel_l2(w.ro(0, m, h), row.data(), 16), 1e-5);
        EXPECT_NEAR(w.rl(0, m, h), l, 1e-4);
      }
      // Telemetry: the group read [E_p, m + 1) plus the sink, not the whole context.
      EXPECT_EQ(st.kv_read[0], m + 1 - E_p + F);
    }
  }
}

// §10.4-7: one-hot coverage. q = 0 makes every score equal; V_j = e_j. The output must weigh
// every key in [0, m] by exactly 1/(m+1): no key dropped or counted twice at F, E_p, E_m, m.
TEST(MacCpu, OneHotCoverageHasNoGapsOrDoubles) {
  const int64_t D = 128;
  for (int64_t F : {0, 2}) {
    for (int64_t r : {1, 4}) {
      for (int64_t m : {20, 63, 100}) {
        for (int64_t lag : {1, 3, 16}) {
          World w(1, 1, D, 128, 1, config(0.45f, 16, r, 0, F));
          for (int64_t j = 0; j < 128; ++j) {
            std::fill(w.v_at(0, j, 0), w.v_at(0, j, 0) + D, 0.0f);
            w.v_at(0, j, 0)[j] = 1.0f;
          }
          const int64_t p = m - lag;
          std::vector<float> q(D, 0.0f);
          // The entry for p: uniform over [F, E_p), built by the kernel's own range attention.
          const int64_t E_p = std::max<int64_t>(p + 1 - r, 0);
          float l;
          auto entry = w.exact(0, q.data(), 0, std::min(F, E_p), E_p, &l);
          std::copy(entry.begin(), entry.end(), w.ro(0, p, 0));
          w.rl(0, p, 0) = l;
          std::fill(w.rq(0, p, 0), w.rq(0, p, 0) + D, 0.0f);
          auto st = w.decode({0}, {int32_t(m + 1)}, q, q);
          SCOPED_TRACE(testing::Message()
                       << "F " << F << " r " << r << " m " << m << " lag " << lag);
          ASSERT_EQ(bool(st.dec[0].hit), E_p >= F && l > kNegInf);
          for (int64_t j = 0; j < D; ++j)
            EXPECT_NEAR(st.out[j], j <= m ? 1.0 / (m + 1) : 0.0, 1e-6) << "key " << j;
          // The written row covers exactly [F, E_m) uniformly: never the sink, never the tail.
          const int64_t E_m = std::max<int64_t>(m + 1 - r, 0);
          const int64_t lo = std::min(F, E_m);
          for (int64_t j = 0; j < D; ++j)
            EXPECT_NEAR(w.ro(0, m, 0)[j], j >= lo && j < E_m ? 1.0 / (E_m - lo) : 0.0, 1e-6)
                << "row key " << j;
        }
      }
    }
  }
}

// §10.4-8: mixed groups of every pattern for group sizes 2, 4, 8: hit heads reuse, miss heads are
// exact, and a KV group reads the whole context as soon as one of its heads misses.
TEST(MacCpu, MixedGroupsOfEveryPattern) {
  for (int64_t G : {2, 4, 8}) {
    for (int64_t pattern = 0; pattern < (int64_t{1} << G); ++pattern) {
      World w(G, 1, 16, 100, 1, config(0.45f, 16, 8));
      const int64_t m = 90, p = 85, E_p = p + 1 - 8;
      auto qp = w.randn(G * 16), qpre = w.randn(G * 16);
      for (int64_t h = 0; h < G; ++h) {
        const bool hit = (pattern >> h) & 1;
        float l;
        // Hit heads: an entry computed by a different query (so reuse differs from exact);
        // miss heads: the row is far away.
        auto other = w.randn(16);
        auto entry = w.exact(0, other.data(), h, 0, E_p, &l);
        std::copy(entry.begin(), entry.end(), w.ro(0, p, h));
        w.rl(0, p, h) = l;
        for (int64_t d = 0; d < 16; ++d)
          w.rq(0, p, h)[d] = qpre[h * 16 + d] + (hit ? 0.01f : 50.0f);
      }
      auto st = w.decode({0}, {int32_t(m + 1)}, qp, qpre);
      for (int64_t h = 0; h < G; ++h) {
        const bool hit = (pattern >> h) & 1;
        ASSERT_EQ(bool(st.dec[h].hit), hit) << "G " << G << " pattern " << pattern << " head " << h;
        float l;
        auto ex = w.exact(0, qp.data() + h * 16, h, 0, m + 1, &l);
        const double err = rel_l2(st.out.data() + h * 16, ex.data(), 16);
        if (hit)
          EXPECT_GT(err, 1e-4);  // reused a foreign summary: not exact
        else
          EXPECT_LT(err, 1e-6);
      }
      const bool all_hit = pattern == (int64_t{1} << G) - 1;
      EXPECT_EQ(st.kv_read[0], all_hit ? m + 1 - E_p : m + 1);
    }
  }
}

// §10.4-9: an invalid nearest row never wins (the next valid one does); E_p < F demotes to miss.
TEST(MacCpu, ValidityRules) {
  World w(1, 1, 8, 64, 1, config(0.2f, 16, 4));
  auto qp = w.randn(8), qpre = w.randn(8);
  std::copy(qpre.begin(), qpre.end(), w.rq(0, 50, 0));  // exact match, but invalid
  w.rl(0, 50, 0) = kNegInf;
  for (int64_t d = 0; d < 8; ++d) w.rq(0, 45, 0)[d] = qpre[d] + 0.1f;  // near and valid
  w.rl(0, 45, 0) = 0.0f;
  auto st = w.decode({0}, {56}, qp, qpre);
  EXPECT_TRUE(st.dec[0].hit);
  EXPECT_EQ(st.dec[0].matched, 45);
  World ws(1, 1, 8, 64, 1, config(0.2f, 16, 12, 0, /*F=*/10));
  std::copy(qpre.begin(), qpre.end(), ws.rq(0, 15, 0));  // E_p = 4 < F = 10
  ws.rl(0, 15, 0) = 0.0f;
  auto st2 = ws.decode({0}, {20}, qp, qpre);
  EXPECT_FALSE(st2.dec[0].hit);
}

// §10.4-10: sinks. Two steps: a miss writes an exact row without [0, F); the next step hits it.
TEST(MacCpu, SinkRecurrenceMissThenHit) {
  const int64_t D = 128, F = 3, r = 4;
  World w(1, 1, D, 128, 1, config(0.45f, 16, r, 0, F));
  for (int64_t j = 0; j < 128; ++j) {
    std::fill(w.v_at(0, j, 0), w.v_at(0, j, 0) + D, 0.0f);
    w.v_at(0, j, 0)[j] = 1.0f;
  }
  std::vector<float> q(D, 0.0f);
  auto st1 = w.decode({0}, {61}, q, q);  // empty ring: miss at m = 60
  EXPECT_FALSE(st1.dec[0].hit);
  for (int64_t j = 0; j < F; ++j) EXPECT_EQ(w.ro(0, 60, 0)[j], 0.0f) << "sink key in the row";
  auto st2 = w.decode({0}, {62}, q, q);  // m = 61 hits row 60 (distance 0)
  ASSERT_TRUE(st2.dec[0].hit);
  EXPECT_EQ(st2.dec[0].matched, 60);
  for (int64_t j = 0; j < D; ++j) EXPECT_NEAR(st2.out[j], j <= 61 ? 1.0 / 62 : 0.0, 1e-6) << j;
}

// §10.4-11: prefill rows for the last M prompt positions equal attention over [min(F,E), E),
// E = max(i + 1 - r, 0), at slots i mod M; chunked prefill gives identical rows (bit for bit);
// short prompts; the outputs are bit for bit the plain paged kernel's (what --attention full
// gives).
TEST(MacCpu, PrefillRowsDirectAndChunkInvariant) {
  for (int64_t P : {3, 10, 37}) {
    for (int64_t F : {0, 2}) {
      const int64_t M = 16, r = 4, Hq = 2, D = 8;
      World whole(Hq, 1, D, 64, 1, config(0.45f, M, r, 0, F));
      auto qp = whole.randn(P * Hq * D), qpre = whole.randn(P * Hq * D);
      const int32_t rows_from = int32_t(std::max<int64_t>(0, P - M));
      auto out = whole.prefill(0, 0, P, qp.data(), qpre.data(), rows_from);
      for (int64_t i = rows_from; i < P; ++i)
        for (int64_t h = 0; h < Hq; ++h) {
          const int64_t E = std::max<int64_t>(i + 1 - r, 0);
          float l;
          auto row = whole.exact(0, qp.data() + (i * Hq + h) * D, h, std::min(F, E), E, &l);
          if (l > kNegInf) {  // blocked float32 in the kernel, double in attn_range
            EXPECT_NEAR(whole.rl(0, i, h), l, 1e-5);
            EXPECT_LT(rel_l2(whole.ro(0, i, h), row.data(), D), 1e-6);
          } else {
            EXPECT_EQ(whole.rl(0, i, h), kNegInf);
          }
          for (int64_t d = 0; d < D; ++d)
            EXPECT_EQ(whole.rq(0, i, h)[d], qpre[(i * Hq + h) * D + d]);
          auto ex = whole.exact(0, qp.data() + (i * Hq + h) * D, h, 0, i + 1, &l);
          EXPECT_LT(rel_l2(out.data() + (i * Hq + h) * D, ex.data(), D), 1e-6);
        }
      {
        std::vector<int32_t> qs = {0, int32_t(P)}, ctx = {int32_t(P)};
        std::vector<float> plain(out.size(), NAN);
        k::PagedAttentionParams pp{qp.data(),        whole.kc.data(),
                                   whole.vc.data(),  plain.data(),
                                   qs.data(),        ctx.data(),
                                   whole.table(0),   1,
                                   whole.max_blocks, Hq,
                                   whole.scale(),    whole.L};
        k::cpu::paged_attention(pp);
        EXPECT_EQ(0, std::memcmp(plain.data(), out.data(), out.size() * sizeof(float)));
      }
      for (int64_t chunk : {1, 5, 16}) {
        World part(Hq, 1, D, 64, 1, config(0.45f, M, r, 0, F));
        part.kc = whole.kc, part.vc = whole.vc, part.tables = whole.tables;
        for (int64_t s = 0; s < P; s += chunk) {
          const int64_t n = std::min(chunk, P - s);
          part.prefill(0, s, n, qp.data() + s * Hq * D, qpre.data() + s * Hq * D, rows_from);
        }
        EXPECT_EQ(part.ring_q, whole.ring_q) << "P " << P << " chunk " << chunk;
        EXPECT_EQ(part.ring_o, whole.ring_o) << "P " << P << " chunk " << chunk;
        EXPECT_EQ(part.ring_lse, whole.ring_lse) << "P " << P << " chunk " << chunk;
      }
    }
  }
}

// §10.4-13: rows before ring_valid_from (a previous owner's) are never matched.
TEST(MacCpu, RingValidFromHidesStaleRows) {
  World w(1, 1, 8, 64, 1, config(0.45f, 16, 4));
  auto qp = w.randn(8), qpre = w.randn(8);
  std::copy(qpre.begin(), qpre.end(), w.rq(0, 40, 0));  // a perfect (stale) match
  w.rl(0, 40, 0) = 0.0f;
  EXPECT_TRUE(w.decode({0}, {46}, qp, qpre, {0}).dec[0].hit);
  std::copy(qpre.begin(), qpre.end(), w.rq(0, 40, 0));
  w.rl(0, 40, 0) = 0.0f;
  auto st = w.decode({0}, {46}, qp, qpre, {41});
  EXPECT_FALSE(st.dec[0].hit);
  EXPECT_EQ(st.dec[0].matched, -1);
}

// §10.4-15: a request's decisions, outputs and rows do not depend on its batch-mates or order.
TEST(MacCpu, BatchInvariance) {
  World w(4, 2, 16, 120, 3, config(0.3f, 32, 8));
  std::vector<std::vector<float>> qps, qpres;
  for (int s = 0; s < 3; ++s) {
    for (int64_t x = 60; x < 100; ++x)
      for (int64_t h = 0; h < 4; ++h) {
        auto v = w.randn(16, 0.5f);
        std::copy(v.begin(), v.end(), w.rq(s, x, h));
        auto o = w.randn(16);
        std::copy(o.begin(), o.end(), w.ro(s, x, h));
        w.rl(s, x, h) = 1.0f;
      }
    qps.push_back(w.randn(4 * 16));
    qpres.push_back(w.randn(4 * 16, 0.5f));
  }
  const auto q_before = w.ring_q;
  const auto ring_before = w.ring_o;
  const auto lse_before = w.ring_lse;
  auto alone = w.decode({1}, {100}, qps[1], qpres[1]);
  const auto row_alone = std::vector<float>(w.ro(1, 99, 0), w.ro(1, 99, 0) + 4 * 16);
  w.ring_q = q_before, w.ring_o = ring_before, w.ring_lse = lse_before;
  std::vector<float> qp_all, qpre_all;
  for (int s : {2, 1, 0}) {
    qp_all.insert(qp_all.end(), qps[s].begin(), qps[s].end());
    qpre_all.insert(qpre_all.end(), qpres[s].begin(), qpres[s].end());
  }
  auto batch = w.decode({2, 1, 0}, {100, 100, 100}, qp_all, qpre_all);
  for (int64_t i = 0; i < 4 * 16; ++i) EXPECT_EQ(batch.out[4 * 16 + i], alone.out[i]);
  for (int64_t h = 0; h < 4; ++h) {
    EXPECT_EQ(batch.dec[4 + h].hit, alone.dec[h].hit);
    EXPECT_EQ(batch.dec[4 + h].matched, alone.dec[h].matched);
  }
  EXPECT_EQ(std::vector<float>(w.ro(1, 99, 0), w.ro(1, 99, 0) + 4 * 16), row_alone);
  int hits = 0;
  for (const auto& d : alone.dec) hits += d.hit;
  EXPECT_GT(hits, 0) << "the test should exercise hits";
}

// §10.4-12 (CPU part): a long trajectory of queries that wander around a fixed direction (a
// stationary AR(1) process, as real queries are stationary within a text), with chained hits at
// t = 0.45. The error against exact attention must stay bounded along the chains (no growth from
// the first to the last steps); a bf16 ring adds little over fp32.
TEST(MacCpu, LongTrajectoryErrorStaysBounded) {
  const int64_t D = 32, Hq = 2, steps = 900, start = 100;
  std::vector<double> err_fp32, err_bf16;
  int64_t hits = 0;
  for (bool bf16 : {false, true}) {
    World w(Hq, 1, D, start + steps + 1, 1, config(0.45f, 64, 16));
    w.cfg.ring_bf16 = bf16;
    std::vector<uint16_t> q16, o16;
    if (bf16) {  // bf16 rings are u16 arrays
      q16.assign(w.ring_q.size(), 0);
      o16.assign(w.ring_o.size(), 0);
    }
    std::normal_distribution<float> noise(0.0f, 0.1f * std::sqrt(1.0f - 0.9f * 0.9f));
    std::mt19937 rng(11);
    const std::vector<float> base = w.randn(Hq * D, 0.5f);
    std::vector<float> x(Hq * D, 0.0f), q(Hq * D);
    std::vector<double>& errs = bf16 ? err_bf16 : err_fp32;
    for (int64_t m = start; m < start + steps; ++m) {
      for (std::size_t i = 0; i < q.size(); ++i) {
        x[i] = 0.9f * x[i] + noise(rng);  // stationary, std 0.1 per coordinate
        q[i] = base[i] + x[i];
      }
      std::vector<int32_t> qs = {0, 1}, ctx = {int32_t(m + 1)}, slots = {0}, vf = {0},
                           rf = {1 << 30};
      std::vector<int32_t> bt(w.table(0), w.table(0) + w.max_blocks);
      std::vector<int8_t> modes = {k::kMacDecode};
      std::vector<float> out(Hq * D);
      std::vector<k::MacHeadDecision> dec(Hq);
      k::MacRing ring = bf16 ? k::MacRing{q16.data(), o16.data(), w.ring_lse.data(), 1} : w.ring();
      k::MacAttentionParams p{
          q.data(),  q.data(),     w.kc.data(),  w.vc.data(), out.data(), qs.data(),  ctx.data(),
          bt.data(), modes.data(), slots.data(), vf.data(),   rf.data(),  1,          w.max_blocks,
          Hq,        w.scale(),    w.L,          w.cfg,       ring,       dec.data(), nullptr};
      k::cpu::mac_attention(p);
      for (const auto& d : dec) hits += d.hit;
      double e = 0;
      for (int64_t h = 0; h < Hq; ++h) {
        float l;
        auto ex = w.exact(0, q.data() + h * D, h, 0, m + 1, &l);
        e = std::max(e, rel_l2(out.data() + h * D, ex.data(), D));
      }
      errs.push_back(e);
    }
  }
  auto mean = [](const std::vector<double>& v, std::size_t a, std::size_t b) {
    double s = 0;
    for (std::size_t i = a; i < b; ++i) s += v[i];
    return s / double(b - a);
  };
  const double early = mean(err_fp32, 100, 300), late = mean(err_fp32, 700, 900);
  EXPECT_GT(hits, 2 * steps * Hq * 8 / 10) << "most heads should hit";
  EXPECT_LT(*std::max_element(err_fp32.begin(), err_fp32.end()), 0.25);
  EXPECT_LT(late, 1.5 * early + 1e-3) << "error grows along the chains";
  EXPECT_LT(mean(err_bf16, 0, 900), mean(err_fp32, 0, 900) + 0.01);
  std::printf(
      "trajectory: %lld hits of %lld; rel. L2: fp32 mean %.2e (early %.2e, late %.2e, max %.2e), "
      "bf16 mean %.2e\n",
      static_cast<long long>(hits), static_cast<long long>(2 * steps * Hq), mean(err_fp32, 0, 900),
      early, late, *std::max_element(err_fp32.begin(), err_fp32.end()), mean(err_bf16, 0, 900));
}

}  // namespace
