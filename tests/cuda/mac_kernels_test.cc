// The CUDA MAC-Attention kernels (kernels/cuda/mac) against the CPU float32 oracle
// (kernels/cpu/mac_attention.cc) on float copies of the same bf16 K/V and ring bytes.
// Decisions must be identical except at near-ties (kNearTie, documented in docs/perf/mac_gpu.md):
// the GPU sums squared distances in fp32, the oracle in double. Outputs and written rows within
// bf16 tolerance. Skips without a device (CI).
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <numeric>
#include <random>
#include <vector>

#include "macserve/kernels/cuda/attention.cuh"
#include "macserve/kernels/cuda/mac_attention_cuda.h"
#include "macserve/kernels/cuda/mac_force_hits_cuda.h"
#include "macserve/kernels/mac_attention.h"

namespace macserve::kernels {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();
// A decision may differ from the oracle only when its distance is within this relative distance of
// the threshold, or two candidates' distances are within it of each other (fp32 vs double sums).
constexpr double kNearTie = 1e-4;

#define CK(x) ASSERT_EQ(static_cast<int>(x), 0) << #x

bool have_device(std::string* why) {
  int n = 0;
  const cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess || n == 0) {
    *why = e != cudaSuccess ? cudaGetErrorString(e) : "no device";
    return false;
  }
  return true;
}
#define REQUIRE_DEVICE()                                                                 \
  do {                                                                                   \
    std::string why;                                                                     \
    if (!have_device(&why)) GTEST_SKIP() << "no CUDA device, GPU test skipped: " << why; \
  } while (0)

uint16_t f2bf(float f) {
  uint32_t b;
  std::memcpy(&b, &f, 4);
  if ((b & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((b >> 16) | 0x40u);
  b += 0x7fffu + ((b >> 16) & 1u);
  return static_cast<uint16_t>(b >> 16);
}
float bf2f(uint16_t h) {
  const uint32_t b = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &b, 4);
  return f;
}

template <typename T>
struct DevBuf {
  T* p = nullptr;
  size_t n = 0;
  DevBuf() = default;
  explicit DevBuf(size_t count) : n(count) {
    cudaMalloc(&p, std::max<size_t>(count, 1) * sizeof(T));
  }
  DevBuf(const DevBuf&) = delete;
  DevBuf& operator=(const DevBuf&) = delete;
  DevBuf(DevBuf&& o) noexcept : p(o.p), n(o.n) { o.p = nullptr; }
  DevBuf& operator=(DevBuf&& o) noexcept {
    std::swap(p, o.p);
    std::swap(n, o.n);
    return *this;
  }
  ~DevBuf() { cudaFree(p); }
  void up(const std::vector<T>& v) {
    cudaMemcpy(p, v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice);
  }
  std::vector<T> down() const {
    std::vector<T> v(n);
    cudaMemcpy(v.data(), p, n * sizeof(T), cudaMemcpyDeviceToHost);
    return v;
  }
};

// One layer's state shared by the CPU and GPU runs of a test.
struct World {
  int64_t S, Hkv, G, Hq, D, M, max_ctx, num_slots, blocks_per_seq;
  MacConfig cfg;
  std::vector<float> kf, vf;  // float copies of the bf16 cache
  std::vector<uint16_t> kb, vb;
  std::vector<int32_t> table;  // [S, blocks_per_seq]
  PagedKvLayout L;
  // ring as raw bytes: q and o bf16 (uint16) or f32, lse f32
  std::vector<uint8_t> rq, ro;
  std::vector<float> rlse;
  size_t elem() const { return cfg.ring_bf16 ? 2 : 4; }
  size_t row_elems() const { return static_cast<size_t>(num_slots * M * Hq * D); }
  float rget(const std::vector<uint8_t>& r, int64_t i) const {
    if (cfg.ring_bf16) return bf2f(reinterpret_cast<const uint16_t*>(r.data())[i]);
    return reinterpret_cast<const float*>(r.data())[i];
  }
  void rset(std::vector<uint8_t>& r, int64_t i, float v) {
    if (cfg.ring_bf16)
      reinterpret_cast<uint16_t*>(r.data())[i] = f2bf(v);
    else
      reinterpret_cast<float*>(r.data())[i] = v;
  }
  int64_t row(int64_t slot, int64_t pos, int64_t h) const { return (slot * M + pos % M) * Hq + h; }
};

World make_world(int64_t S, int64_t Hkv, int64_t G, int64_t D, int64_t max_ctx,
                 const MacConfig& cfg, int64_t num_slots, uint64_t seed) {
  World w;
  w.S = S, w.Hkv = Hkv, w.G = G, w.Hq = Hkv * G, w.D = D, w.M = cfg.window, w.max_ctx = max_ctx,
  w.cfg = cfg;
  w.num_slots = num_slots;
  w.blocks_per_seq = (max_ctx + 15) / 16;
  const int64_t nb = S * w.blocks_per_seq + 3;
  w.L = PagedKvLayout{nb, Hkv, 16, D};
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  const size_t kv = static_cast<size_t>(nb * Hkv * 16 * D);
  w.kb.resize(kv), w.vb.resize(kv), w.kf.resize(kv), w.vf.resize(kv);
  for (size_t i = 0; i < kv; ++i) {
    w.kb[i] = f2bf(nd(rng)), w.vb[i] = f2bf(nd(rng));
    w.kf[i] = bf2f(w.kb[i]), w.vf[i] = bf2f(w.vb[i]);
  }
  std::vector<int32_t> perm(static_cast<size_t>(nb));
  std::iota(perm.begin(), perm.end(), 0);
  std::shuffle(perm.begin(), perm.end(), rng);
  w.table.assign(perm.begin(), perm.begin() + S * w.blocks_per_seq);
  w.rq.assign(w.row_elems() * w.elem(), 0);
  w.ro.assign(w.row_elems() * w.elem(), 0);
  w.rlse.assign(static_cast<size_t>(num_slots * w.M * w.Hq), kNegInf);
  return w;
}

struct StepIn {
  std::vector<int32_t> ctx, slots, valid_from;
  std::vector<float> q_post, q_pre;  // [S, Hq, D]
};
struct StepOut {
  std::vector<float> out;
  std::vector<MacHeadDecision> dec;
  std::vector<int64_t> kv_read;
};

StepOut run_cpu(World& w, const StepIn& in) {
  StepOut o;
  const int64_t S = w.S;
  o.out.assign(static_cast<size_t>(S * w.Hq * w.D), 0.0f);
  o.dec.resize(static_cast<size_t>(S * w.Hq));
  o.kv_read.assign(static_cast<size_t>(S), 0);
  // the oracle takes active sequences only
  std::vector<int32_t> qs{0}, ctx, slots, vf, rows_from, tbl;
  std::vector<int8_t> modes;
  std::vector<float> qpost, qpre;
  std::vector<int64_t> idx;
  for (int64_t s = 0; s < S; ++s) {
    if (in.ctx[s] <= 0) continue;
    idx.push_back(s);
    qs.push_back(qs.back() + 1);
    ctx.push_back(in.ctx[s]), slots.push_back(in.slots[s]), vf.push_back(in.valid_from[s]);
    rows_from.push_back(0), modes.push_back(kMacDecode);
    tbl.insert(tbl.end(), w.table.begin() + s * w.blocks_per_seq,
               w.table.begin() + (s + 1) * w.blocks_per_seq);
    const size_t b = static_cast<size_t>(s * w.Hq * w.D), e = b + static_cast<size_t>(w.Hq * w.D);
    qpost.insert(qpost.end(), in.q_post.begin() + b, in.q_post.begin() + e);
    qpre.insert(qpre.end(), in.q_pre.begin() + b, in.q_pre.begin() + e);
  }
  const int64_t n = static_cast<int64_t>(idx.size());
  std::vector<float> out(static_cast<size_t>(n * w.Hq * w.D));
  std::vector<MacHeadDecision> dec(static_cast<size_t>(n * w.Hq));
  std::vector<int64_t> kvr(static_cast<size_t>(n));
  MacAttentionParams p{};
  p.q_post = qpost.data(), p.q_pre = qpre.data(), p.k_cache = w.kf.data(), p.v_cache = w.vf.data();
  p.out = out.data(), p.query_start = qs.data(), p.context_lens = ctx.data(),
  p.block_tables = tbl.data();
  p.modes = modes.data(), p.ring_slots = slots.data(), p.ring_valid_from = vf.data(),
  p.rows_from = rows_from.data();
  p.num_seqs = n, p.max_blocks_per_seq = w.blocks_per_seq, p.num_q_heads = w.Hq;
  p.scale = 1.0f / std::sqrt(static_cast<float>(w.D));
  p.layout = w.L, p.cfg = w.cfg;
  p.ring = MacRing{w.rq.data(), w.ro.data(), w.rlse.data(), w.num_slots};
  p.decisions = dec.data(), p.kv_tokens_read = kvr.data();
  cpu::mac_attention(p);
  for (int64_t i = 0; i < n; ++i) {
    const int64_t s = idx[i];
    std::copy(out.begin() + i * w.Hq * w.D, out.begin() + (i + 1) * w.Hq * w.D,
              o.out.begin() + s * w.Hq * w.D);
    std::copy(dec.begin() + i * w.Hq, dec.begin() + (i + 1) * w.Hq, o.dec.begin() + s * w.Hq);
    o.kv_read[s] = kvr[i];
  }
  return o;
}

// Device copy of a World (K/V, tables, ring) plus the step's buffers.
struct Gpu {
  DevBuf<uint16_t> k, v;
  DevBuf<int32_t> table, ctx, slots, vf;
  DevBuf<uint8_t> rq, ro;
  DevBuf<float> rlse, qpost, qpre, out;
  DevBuf<MacHeadDecision> dec;
  DevBuf<int64_t> kvr;
  DevBuf<cuda::MacCounters> counters;
  DevBuf<uint8_t> ws;
  int64_t ws_bytes = 0;
  int32_t chunk = 64;  // 0: adaptive
  Gpu(const World& w, int32_t chunk_tokens)
      : k(w.kb.size()),
        v(w.vb.size()),
        table(w.table.size()),
        ctx(w.S),
        slots(w.S),
        vf(w.S),
        rq(w.rq.size()),
        ro(w.ro.size()),
        rlse(w.rlse.size()),
        qpost(w.S * w.Hq * w.D),
        qpre(w.S * w.Hq * w.D),
        out(w.S * w.Hq * w.D),
        dec(w.S * w.Hq),
        kvr(w.S),
        counters(1),
        chunk(chunk_tokens) {
    k.up(w.kb), v.up(w.vb), table.up(w.table);
    ws_bytes = cuda::mac_workspace_bytes(w.S, w.Hq, w.Hkv, w.D, w.max_ctx, chunk);
    ws = DevBuf<uint8_t>(static_cast<size_t>(ws_bytes));
    cudaMemset(counters.p, 0, sizeof(cuda::MacCounters));
    upload_ring(w);
  }
  void upload_ring(const World& w) { rq.up(w.rq), ro.up(w.ro), rlse.up(w.rlse); }
  cuda::MacCudaParams params(const World& w) {
    cuda::MacCudaParams p{};
    p.q_post = qpost.p, p.q_pre = qpre.p, p.k_cache = k.p, p.v_cache = v.p, p.out = out.p,
    p.out_bf16 = false;
    p.context_lens = ctx.p, p.block_tables = table.p, p.ring_slots = slots.p,
    p.ring_valid_from = vf.p;
    p.num_seqs = w.S, p.max_blocks_per_seq = w.blocks_per_seq, p.num_q_heads = w.Hq;
    p.scale = 1.0f / std::sqrt(static_cast<float>(w.D));
    p.layout = w.L, p.cfg = w.cfg;
    p.ring = MacRing{rq.p, ro.p, rlse.p, w.num_slots};
    p.decisions = dec.p, p.kv_tokens_read = kvr.p, p.counters = counters.p, p.chunk_tokens = chunk;
    return p;
  }
  void set_inputs(const StepIn& in) {
    ctx.up(in.ctx), slots.up(in.slots), vf.up(in.valid_from), qpost.up(in.q_post),
        qpre.up(in.q_pre);
  }
  int step(const World& w, cudaStream_t st = nullptr) {
    return cuda::mac_decode(params(w), cuda::MacWorkspace{ws.p, ws_bytes}, w.max_ctx, st);
  }
  StepOut fetch() {
    StepOut o;
    o.out = out.down(), o.dec = dec.down(), o.kv_read = kvr.down();
    return o;
  }
};

double dist2(const World& w, const std::vector<uint8_t>& rq, const float* q, int64_t slot,
             int64_t pos, int64_t h) {
  double d = 0;
  const int64_t b = w.row(slot, pos, h) * w.D;
  for (int64_t i = 0; i < w.D; ++i) {
    const double x = static_cast<double>(q[i]) - w.rget(rq, b + i);
    d += x * x;
  }
  return d;
}

struct Compare {
  int64_t heads = 0, hits = 0, mismatches = 0, near_ties = 0;
  double num = 0, den = 0;          // output rel L2 over heads with equal decisions
  double row_num = 0, row_den = 0;  // written rows (o)
  int64_t lse_mismatch = 0, q_mismatch = 0;
  double rel() const { return den > 0 ? std::sqrt(num / den) : 0; }
  double row_rel() const { return row_den > 0 ? std::sqrt(row_num / row_den) : 0; }
};

// Compares one step. ring_before: the ring (q rows) the decisions were taken on.
void compare_step(const World& wc, const World& wg_ring_after,
                  const std::vector<uint8_t>& rq_before, const StepIn& in, const StepOut& c,
                  const StepOut& g, Compare& cmp) {
  const World& w = wc;
  const double omt = 1.0 - std::min(1.0f, std::max(0.0f, w.cfg.threshold));
  const double thr = 2.0 * w.D * static_cast<float>(omt) * static_cast<float>(omt);
  for (int64_t s = 0; s < w.S; ++s) {
    if (in.ctx[s] <= 0) continue;
    const int64_t m = in.ctx[s] - 1;
    for (int64_t h = 0; h < w.Hq; ++h) {
      const MacHeadDecision& a = c.dec[s * w.Hq + h];
      const MacHeadDecision& b = g.dec[s * w.Hq + h];
      ++cmp.heads;
      cmp.hits += a.hit;
      bool same = a.eligible == b.eligible && a.hit == b.hit && a.matched == b.matched;
      if (!same) {
        const float* q = in.q_pre.data() + (s * w.Hq + h) * w.D;
        const int64_t slot = in.slots[s];
        double da = a.matched >= 0 ? dist2(w, rq_before, q, slot, a.matched, h) : a.distance;
        double db = b.matched >= 0 ? dist2(w, rq_before, q, slot, b.matched, h) : b.distance;
        const bool near_thr =
            std::fabs(da - thr) <= kNearTie * thr || std::fabs(db - thr) <= kNearTie * thr;
        const bool near_pair = std::fabs(da - db) <= kNearTie * std::max(da, db);
        if (a.eligible == b.eligible && (near_thr || near_pair)) {
          ++cmp.near_ties;
        } else {
          if (cmp.mismatches < 5)
            std::printf(
                "  decision mismatch s %lld h %lld m %lld: cpu (e%d h%d p%d d%.6g) gpu (e%d h%d "
                "p%d d%.6g) thr %.6g\n",
                (long long)s, (long long)h, (long long)m, a.eligible, a.hit, a.matched, a.distance,
                b.eligible, b.hit, b.matched, b.distance, thr);
          ++cmp.mismatches;
        }
        continue;
      }
      for (int64_t d = 0; d < w.D; ++d) {
        const double x = c.out[(s * w.Hq + h) * w.D + d], y = g.out[(s * w.Hq + h) * w.D + d];
        cmp.num += (x - y) * (x - y);
        cmp.den += x * x;
        if (std::isnan(y)) cmp.num += 1e30;
      }
      if (in.slots[s] >= 0) {
        const int64_t r = w.row(in.slots[s], m, h);
        const float la = wc.rlse[r], lb = wg_ring_after.rlse[r];
        if (!((std::isinf(la) && std::isinf(lb)) ||
              std::fabs(la - lb) <= 1e-3f * std::max(1.0f, std::fabs(la))))
          ++cmp.lse_mismatch;
        for (int64_t d = 0; d < w.D; ++d) {
          const double x = wc.rget(wc.ro, r * w.D + d),
                       y = wg_ring_after.rget(wg_ring_after.ro, r * w.D + d);
          cmp.row_num += (x - y) * (x - y);
          cmp.row_den += x * x;
          if (wc.rget(wc.rq, r * w.D + d) != wg_ring_after.rget(wg_ring_after.rq, r * w.D + d))
            ++cmp.q_mismatch;
        }
      }
    }
  }
}

World ring_from_gpu(const World& w, Gpu& g) {
  World r = w;
  r.rq = g.rq.down(), r.ro = g.ro.down(), r.rlse = g.rlse.down();
  return r;
}

// Fills the ring rows of positions [lo, m) of a slot with random q / o and a finite lse (a fraction
// invalid), then sets each head's q_pre near one of them (hit) or far (miss) per `hit_mask`.
void fill_ring_and_queries(World& w, StepIn& in, int64_t s, uint32_t hit_mask, std::mt19937_64& rng,
                           bool ties) {
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::uniform_real_distribution<float> ud(0.0f, 1.0f);
  const int64_t m = in.ctx[s] - 1, slot = in.slots[s];
  const int64_t lo = std::max<int64_t>(0, m - w.M);
  const double omt = 1.0 - w.cfg.threshold;
  const float radius = static_cast<float>(std::sqrt(2.0 * w.D) * omt);  // L2 hit radius
  for (int64_t h = 0; h < w.Hq; ++h) {
    float* qpre = in.q_pre.data() + (s * w.Hq + h) * w.D;
    float* qpost = in.q_post.data() + (s * w.Hq + h) * w.D;
    for (int64_t d = 0; d < w.D; ++d) qpost[d] = nd(rng);
    if (slot >= 0) {
      for (int64_t x = lo; x < m; ++x) {
        const int64_t r = w.row(slot, x, h);
        for (int64_t d = 0; d < w.D; ++d)
          w.rset(w.rq, r * w.D + d, nd(rng)), w.rset(w.ro, r * w.D + d, nd(rng) * 0.5f);
        w.rlse[r] = ud(rng) < 0.1f ? kNegInf : 3.0f + 4.0f * ud(rng);
      }
    }
    const bool want_hit = (hit_mask >> (h % w.G)) & 1u;
    const int64_t span = m - std::max(lo, static_cast<int64_t>(in.valid_from[s]));
    if (want_hit && slot >= 0 && span > 0) {
      std::uniform_int_distribution<int64_t> pick(
          std::max(lo, static_cast<int64_t>(in.valid_from[s])), m - 1);
      const int64_t x = pick(rng);
      const int64_t r = w.row(slot, x, h);
      w.rlse[r] = 2.0f + ud(rng);
      const float noise = radius * 0.3f / std::sqrt(static_cast<float>(w.D));
      for (int64_t d = 0; d < w.D; ++d) qpre[d] = w.rget(w.rq, r * w.D + d) + noise * nd(rng);
      if (ties) {  // an identical row at another candidate position: the oldest must win
        const int64_t y = pick(rng);
        if (y != x) {
          const int64_t ry = w.row(slot, y, h);
          for (int64_t d = 0; d < w.D; ++d) w.rset(w.rq, ry * w.D + d, w.rget(w.rq, r * w.D + d));
          w.rlse[ry] = 1.0f;
        }
      }
    } else {
      for (int64_t d = 0; d < w.D; ++d) qpre[d] = 3.0f * nd(rng);
    }
  }
}

struct SingleCase {
  int64_t D, G, Hkv;
  int64_t F;
  bool ring_bf16;
  int64_t M, r;
  float t;
  std::vector<int32_t> ctx;
};

// One decode step of a batch of sequences with mixed hit patterns; checks against the oracle.
Compare single_step(const SingleCase& sc, uint64_t seed, bool ties, int32_t chunk) {
  MacConfig cfg;
  cfg.threshold = sc.t, cfg.window = sc.M, cfg.band = sc.r, cfg.gen_min = 0, cfg.sink = sc.F,
  cfg.ring_bf16 = sc.ring_bf16;
  const int64_t S = static_cast<int64_t>(sc.ctx.size());
  const int64_t max_ctx = *std::max_element(sc.ctx.begin(), sc.ctx.end());
  World w = make_world(S, sc.Hkv, sc.G, sc.D, max_ctx, cfg, S + 1, seed);
  std::mt19937_64 rng(seed * 7 + 1);
  StepIn in;
  in.ctx = sc.ctx;
  in.slots.resize(S), in.valid_from.assign(S, 0);
  in.q_post.assign(static_cast<size_t>(S * w.Hq * w.D), 0.0f), in.q_pre = in.q_post;
  for (int64_t s = 0; s < S; ++s) {
    in.slots[s] = static_cast<int32_t>(s);
    if (s % 7 == 5) in.slots[s] = -1;                                       // no ring
    if (s % 5 == 3 && in.ctx[s] > 8) in.valid_from[s] = in.ctx[s] - 1 - 6;  // gated window
  }
  for (int64_t s = 0; s < S; ++s) {
    if (in.ctx[s] <= 0) continue;
    const uint32_t mask = s == 0   ? 0xffu
                          : s == 1 ? 0u
                                   : static_cast<uint32_t>((s * 37 + 11) & ((1u << sc.G) - 1));
    fill_ring_and_queries(w, in, s, mask, rng, ties);
  }
  Compare cmp;
  Gpu g(w, chunk);
  // the spare slot S must stay untouched (inactive rows never write)
  g.set_inputs(in);
  cudaMemset(g.out.p, 0xff, g.out.n * sizeof(float));
  EXPECT_EQ(g.step(w), 0);
  EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  StepOut go = g.fetch();
  World wg = ring_from_gpu(w, g);
  const std::vector<uint8_t> rq_before = w.rq;
  StepOut co = run_cpu(w, in);
  compare_step(w, wg, rq_before, in, co, go, cmp);
  for (int64_t s = 0; s < S; ++s) {
    if (in.ctx[s] > 0) {
      EXPECT_EQ(co.kv_read[s], go.kv_read[s]) << "kv tokens read, seq " << s;
    } else {
      for (int64_t i = 0; i < w.Hq * w.D; ++i)
        EXPECT_TRUE(std::isnan(go.out[s * w.Hq * w.D + i])) << "inactive row written";
    }
  }
  // rows of slots that no active sequence owns are unchanged (the spare slot S)
  for (int64_t i = S * w.M * w.Hq; i < (S + 1) * w.M * w.Hq; ++i)
    EXPECT_TRUE(std::isinf(wg.rlse[i]));
  return cmp;
}

void report(const char* name, const Compare& c) {
  std::printf(
      "%s: heads %lld hits %lld mismatches %lld near_ties %lld out_rel_l2 %.3e row_rel_l2 %.3e "
      "lse_mis %lld q_mis %lld\n",
      name, (long long)c.heads, (long long)c.hits, (long long)c.mismatches, (long long)c.near_ties,
      c.rel(), c.row_rel(), (long long)c.lse_mismatch, (long long)c.q_mismatch);
}

void expect_ok(const Compare& c, double out_tol, double row_tol) {
  EXPECT_EQ(c.mismatches, 0);
  EXPECT_LT(c.rel(), out_tol);
  EXPECT_LT(c.row_rel(), row_tol);
  EXPECT_EQ(c.lse_mismatch, 0);
  EXPECT_EQ(c.q_mismatch, 0);
}

TEST(MacCuda, SingleStepGrid) {
  REQUIRE_DEVICE();
  int n = 0;
  for (int64_t D : {32, 64, 128})  // 32: the tiny test models' head size
    for (int64_t G : {1, 2, 3, 4, 8})
      for (int64_t F : {0, 4})
        for (bool bf16 : {true, false}) {
          SingleCase sc{D, G, G >= 4 ? 2 : 3, F, bf16, 64, 16, 0.6f, {}};
          // ring wrap (ctx > M), short contexts (< r, < M), an inactive row, long-ish contexts
          sc.ctx = {300, 1000, 17, 5, 70, 0, 2500, 64, 65, 400, 33, 129, 1, 3000, 777, 90};
          ++n;
          // every third config with adaptive chunks (0: chosen on the device from the step's work)
          const int32_t chunk = n % 3 == 0 ? 0 : 64;
          const Compare c = single_step(sc, 1000 + n, n % 2 == 0, chunk);
          char name[96];
          std::snprintf(name, sizeof(name), "single D%lld G%lld F%lld %s chunk %d", (long long)D,
                        (long long)G, (long long)F, bf16 ? "bf16" : "f32", chunk);
          report(name, c);
          expect_ok(c, 2e-3, 1e-2);
        }
}

// M 512, r 256, 32K contexts, exact ties (across the 4 match CTAs of a head's window too); fixed
// chunks, and adaptive
TEST(MacCuda, DefaultsLongContext) {
  REQUIRE_DEVICE();
  for (int64_t G : {4, 8})
    for (int32_t chunk : {512, 0}) {
      SingleCase sc{128, G, 2, 0, true, 512, 256, 0.45f, {32768, 20000, 600, 300, 2049}};
      const Compare c = single_step(sc, 77 + G, true, chunk);
      char name[64];
      std::snprintf(name, sizeof(name), "defaults G%lld chunk %d", (long long)G, chunk);
      report(name, c);
      expect_ok(c, 2e-3, 1e-2);
    }
}

// Multi-step trajectory: slowly drifting clustered queries (hits and misses), ring wrap, both
// rings evolving on their own (CPU from CPU rows, GPU from GPU rows).
void trajectory(int64_t D, int64_t G, int64_t Hkv, int64_t F, int64_t M, int steps, bool bf16,
                Compare& total, double* max_step_rel) {
  MacConfig cfg;
  cfg.threshold = 0.9f, cfg.window = M, cfg.band = 16, cfg.gen_min = 40, cfg.sink = F,
  cfg.ring_bf16 = bf16;
  const int64_t S = 3;
  const int32_t start = 60;
  World w = make_world(S, Hkv, G, D, start + steps + 1, cfg, S, 4242 + D + G);
  Gpu g(w, 64);
  std::mt19937_64 rng(99);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  const int kClusters = 6;
  std::vector<float> centers(static_cast<size_t>(kClusters * D));
  for (float& c : centers) c = nd(rng);
  StepIn in;
  in.ctx.assign(S, 0), in.slots = {0, 1, 2}, in.valid_from = {0, 0, 0};
  in.q_post.assign(static_cast<size_t>(S * w.Hq * D), 0.0f), in.q_pre = in.q_post;
  *max_step_rel = 0;
  World wg = w;
  for (int step = 0; step < steps; ++step) {
    for (int64_t s = 0; s < S; ++s) {
      in.ctx[s] = start + step + 1 - static_cast<int32_t>(s) * 7;
      if (s == 2 && step == steps / 2)
        in.valid_from[s] = in.ctx[s] - 1;  // a skipped write: gate from here
      for (int64_t h = 0; h < w.Hq; ++h) {
        const int cl =
            static_cast<int>(((step + 13 * h + 5 * s) / 25 * 2654435761u + h) % kClusters);
        for (int64_t d = 0; d < D; ++d) {
          in.q_pre[(s * w.Hq + h) * D + d] = centers[cl * D + d] + 0.03f * nd(rng);
          in.q_post[(s * w.Hq + h) * D + d] = 0.5f * centers[cl * D + d] + 0.5f * nd(rng);
        }
      }
    }
    const std::vector<uint8_t> rq_before = w.rq;
    g.set_inputs(in);
    ASSERT_EQ(g.step(w), 0);
    StepOut go = g.fetch();
    wg.rq = g.rq.down(), wg.ro = g.ro.down(), wg.rlse = g.rlse.down();
    StepOut co = run_cpu(w, in);
    Compare c;
    compare_step(w, wg, rq_before, in, co, go, c);
    *max_step_rel = std::max(*max_step_rel, c.rel());
    total.heads += c.heads, total.hits += c.hits, total.mismatches += c.mismatches,
        total.near_ties += c.near_ties;
    total.num += c.num, total.den += c.den, total.row_num += c.row_num, total.row_den += c.row_den;
    total.lse_mismatch += c.lse_mismatch, total.q_mismatch += c.q_mismatch;
  }
}

TEST(MacCuda, Trajectory2K) {
  REQUIRE_DEVICE();
  struct T {
    int64_t D, G, Hkv, F;
    bool bf16;
    int64_t M;
  };
  // M 320: each head's window scan split over 3 match CTAs (3 sequences x 8 heads is a small batch)
  for (const T& t :
       {T{128, 4, 2, 0, true, 64}, T{64, 8, 1, 4, true, 64}, T{128, 1, 4, 0, false, 64},
        T{128, 2, 2, 2, true, 64}, T{128, 4, 2, 0, true, 320}}) {
    Compare c;
    double worst = 0;
    trajectory(t.D, t.G, t.Hkv, t.F, t.M, 2000, t.bf16, c, &worst);
    char name[96];
    std::snprintf(name, sizeof(name), "trajectory D%lld G%lld F%lld M%lld %s", (long long)t.D,
                  (long long)t.G, (long long)t.F, (long long)t.M, t.bf16 ? "bf16" : "f32");
    report(name, c);
    std::printf("  worst step out_rel_l2 %.3e\n", worst);
    EXPECT_GT(c.hits, c.heads / 10);
    EXPECT_EQ(c.mismatches, 0);
    EXPECT_LT(worst, 2e-2);
    EXPECT_LT(c.row_rel(), 2e-2);
  }
}

TEST(MacCuda, AllMissEqualsFullAttentionKernel) {
  REQUIRE_DEVICE();
  for (int64_t G : {4, 8}) {
    MacConfig cfg;
    cfg.threshold = 1.0f, cfg.window = 64, cfg.band = 16, cfg.gen_min = 0;
    const std::vector<int32_t> ctxs = {5000, 17, 1, 4096, 300};
    const int64_t S = static_cast<int64_t>(ctxs.size());
    World w = make_world(S, 2, G, 128, 5000, cfg, S, 31 + G);
    std::mt19937_64 rng(5);
    StepIn in;
    in.ctx = ctxs, in.valid_from.assign(S, 0);
    for (int64_t s = 0; s < S; ++s) in.slots.push_back(static_cast<int32_t>(s));
    in.q_post.assign(static_cast<size_t>(S * w.Hq * 128), 0.0f), in.q_pre = in.q_post;
    for (int64_t s = 0; s < S; ++s) fill_ring_and_queries(w, in, s, 0xff, rng, false);
    Gpu g(w, 256);
    g.set_inputs(in);
    ASSERT_EQ(g.step(w), 0);
    const std::vector<float> mac = g.out.down();
    DevBuf<int32_t> qs(S + 1);
    std::vector<int32_t> qsh(S + 1);
    std::iota(qsh.begin(), qsh.end(), 0);
    qs.up(qsh);
    cuda::PagedAttentionCudaParams pp{};
    pp.q = g.qpost.p, pp.k_cache = g.k.p, pp.v_cache = g.v.p;
    DevBuf<float> full(S * w.Hq * 128);
    pp.out = full.p, pp.query_start = qs.p, pp.context_lens = g.ctx.p, pp.block_tables = g.table.p;
    pp.num_seqs = S, pp.num_tokens = S, pp.max_blocks_per_seq = w.blocks_per_seq,
    pp.num_q_heads = w.Hq;
    pp.scale = 1.0f / std::sqrt(128.0f), pp.layout = w.L, pp.out_bf16 = false;
    const cuda::DecodePlan plan = cuda::plan_decode(pp, 5000, 132);
    DevBuf<float> dws(static_cast<size_t>(std::max<int64_t>(plan.workspace_floats, 1)));
    ASSERT_EQ(cuda::paged_decode(pp, plan, dws.p, nullptr), 0);
    const std::vector<float> ref = full.down();
    double num = 0, den = 0;
    for (size_t i = 0; i < ref.size(); ++i)
      num += (ref[i] - mac[i]) * (ref[i] - mac[i]), den += ref[i] * ref[i];
    std::printf("all-miss vs paged_decode G%lld rel_l2 %.3e\n", (long long)G, std::sqrt(num / den));
    EXPECT_LT(std::sqrt(num / den), 1e-4);
    const std::vector<MacHeadDecision> dec = g.dec.down();
    for (const auto& d : dec) EXPECT_EQ(d.hit, 0);
  }
}

// Graph replay equals eager, and a sequence's results do not depend on its batch-mates.
TEST(MacCuda, GraphReplayAndBatchInvariance) {
  REQUIRE_DEVICE();
  MacConfig cfg;
  cfg.threshold = 0.6f, cfg.window = 64, cfg.band = 16, cfg.gen_min = 0;
  const std::vector<int32_t> ctxs = {3000, 200, 65, 1500};
  const int64_t S = static_cast<int64_t>(ctxs.size());
  World w = make_world(S, 2, 4, 128, 3000, cfg, S, 8);
  std::mt19937_64 rng(6);
  StepIn in;
  in.ctx = ctxs, in.valid_from.assign(S, 0);
  for (int64_t s = 0; s < S; ++s) in.slots.push_back(static_cast<int32_t>(s));
  in.q_post.assign(static_cast<size_t>(S * w.Hq * 128), 0.0f), in.q_pre = in.q_post;
  for (int64_t s = 0; s < S; ++s)
    fill_ring_and_queries(w, in, s, static_cast<uint32_t>(s * 5 + 3), rng, false);
  Gpu g(w, 64);
  g.set_inputs(in);
  ASSERT_EQ(g.step(w), 0);
  const std::vector<float> eager = g.out.down();
  const std::vector<float> eager_lse = g.rlse.down();
  const std::vector<uint8_t> eager_ro = g.ro.down();
  // graph: capture once, restore the ring, replay
  cudaStream_t st;
  CK(cudaStreamCreate(&st));
  g.upload_ring(w);
  cudaGraph_t graph;
  cudaGraphExec_t exec;
  CK(cudaStreamBeginCapture(st, cudaStreamCaptureModeGlobal));
  EXPECT_EQ(g.step(w, st), 0);
  CK(cudaStreamEndCapture(st, &graph));
  CK(cudaGraphInstantiate(&exec, graph, 0));
  cudaMemset(g.out.p, 0xff, g.out.n * sizeof(float));
  CK(cudaGraphLaunch(exec, st));
  CK(cudaStreamSynchronize(st));
  EXPECT_EQ(g.out.down(), eager) << "graph replay differs from eager";
  EXPECT_EQ(g.rlse.down(), eager_lse);
  EXPECT_EQ(g.ro.down(), eager_ro);
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  cudaStreamDestroy(st);
  // batch invariance: each sequence alone (others inactive) gives bit-identical output
  for (int64_t s = 0; s < S; ++s) {
    StepIn one = in;
    for (int64_t o = 0; o < S; ++o)
      if (o != s) one.ctx[o] = 0;
    g.upload_ring(w);
    g.set_inputs(one);
    ASSERT_EQ(g.step(w), 0);
    const std::vector<float> out = g.out.down();
    bool same = std::equal(out.begin() + s * w.Hq * 128, out.begin() + (s + 1) * w.Hq * 128,
                           eager.begin() + s * w.Hq * 128);
    EXPECT_TRUE(same) << "sequence " << s << " alone differs from in the batch";
  }
}

TEST(MacCuda, PrefillRowsMatchOracle) {
  REQUIRE_DEVICE();
  for (int64_t F : {0, 3}) {
    MacConfig cfg;
    cfg.window = 64, cfg.band = 16, cfg.sink = F;
    const std::vector<int32_t> ctxs = {
        300, 40, 10};  // prompts longer than M, shorter than M, shorter than r
    const int64_t S = 3, G = 4, D = 128;
    World w = make_world(S, 2, G, D, 300, cfg, S, 12 + F);
    std::vector<int32_t> qs{0};
    for (int32_t c : ctxs) qs.push_back(qs.back() + c);
    const int64_t T = qs.back();
    std::mt19937_64 rng(3);
    std::normal_distribution<float> nd(0.0f, 1.0f);
    std::vector<float> qpost(static_cast<size_t>(T * w.Hq * D)), qpre(qpost.size());
    for (auto& x : qpost) x = nd(rng);
    for (auto& x : qpre) x = nd(rng);
    std::vector<int32_t> slots{0, 1, 2}, rows_from{300 - 64, 0, 0}, vf{0, 0, 0};
    std::vector<int8_t> modes(S, kMacExact);
    // CPU
    std::vector<float> out(qpost.size());
    MacAttentionParams p{};
    p.q_post = qpost.data(), p.q_pre = qpre.data(), p.k_cache = w.kf.data(),
    p.v_cache = w.vf.data();
    p.out = out.data(), p.query_start = qs.data(), p.context_lens = ctxs.data(),
    p.block_tables = w.table.data();
    p.modes = modes.data(), p.ring_slots = slots.data(), p.ring_valid_from = vf.data(),
    p.rows_from = rows_from.data();
    p.num_seqs = S, p.max_blocks_per_seq = w.blocks_per_seq, p.num_q_heads = w.Hq,
    p.scale = 1.0f / std::sqrt(128.0f);
    p.layout = w.L, p.cfg = cfg,
    p.ring = MacRing{w.rq.data(), w.ro.data(), w.rlse.data(), w.num_slots};
    World wc = w;
    p.ring = MacRing{wc.rq.data(), wc.ro.data(), wc.rlse.data(), wc.num_slots};
    cpu::mac_attention(p);
    // GPU
    Gpu g(w, 64);
    DevBuf<float> dqpost(qpost.size()), dqpre(qpre.size());
    dqpost.up(qpost), dqpre.up(qpre);
    DevBuf<int32_t> dqs(qs.size()), dctx(S), dslots(S), drf(S);
    DevBuf<int8_t> dmodes(S);
    dqs.up(qs), dctx.up(ctxs), dslots.up(slots), drf.up(rows_from), dmodes.up(modes);
    cuda::MacPrefillRowsParams pr{};
    pr.q_post = dqpost.p, pr.q_pre = dqpre.p, pr.k_cache = g.k.p, pr.v_cache = g.v.p,
    pr.query_start = dqs.p;
    pr.context_lens = dctx.p, pr.block_tables = g.table.p, pr.ring_slots = dslots.p,
    pr.rows_from = drf.p;
    pr.modes = dmodes.p, pr.num_seqs = S, pr.num_tokens = T,
    pr.max_blocks_per_seq = w.blocks_per_seq;
    pr.num_q_heads = w.Hq, pr.scale = p.scale, pr.layout = w.L, pr.cfg = cfg;
    pr.ring = MacRing{g.rq.p, g.ro.p, g.rlse.p, w.num_slots};
    ASSERT_EQ(cuda::mac_prefill_rows(pr, nullptr), 0);
    // The Hopper kernel (F = 0 on sm_90) rounds the scaled query and P to bf16 for its MMAs, as
    // the flash prefill does for the chunk's own outputs; the per-token kernel keeps f32 scores.
    const bool wgmma = cuda::mac_prefill_rows_wgmma_supported(pr);
    const float lse_tol = wgmma ? 5e-3f : 1e-4f;
    World wg = ring_from_gpu(w, g);
    double num = 0, den = 0, lse_max = 0;
    int64_t lse_bad = 0, q_bad = 0;
    for (size_t i = 0; i < wc.rlse.size(); ++i) {
      const float a = wc.rlse[i], b = wg.rlse[i];
      const bool both_inf = std::isinf(a) && std::isinf(b) && (a < 0) == (b < 0);
      if (!both_inf) lse_max = std::max(lse_max, static_cast<double>(std::fabs(a - b)));
      if (!(both_inf || std::fabs(a - b) <= lse_tol * std::max(1.0f, std::fabs(a)))) ++lse_bad;
    }
    for (size_t i = 0; i < wc.row_elems(); ++i) {
      const double a = wc.rget(wc.ro, i), b = wg.rget(wg.ro, i);
      num += (a - b) * (a - b), den += a * a;
      if (wc.rget(wc.rq, i) != wg.rget(wg.rq, i)) ++q_bad;
    }
    std::printf(
        "prefill rows F%lld (%s): rel_l2 %.3e max |lse diff| %.3e lse_mismatch %lld "
        "q_mismatch %lld\n",
        (long long)F, wgmma ? "wgmma" : "per-token kernel", std::sqrt(num / den), lse_max,
        (long long)lse_bad, (long long)q_bad);
    EXPECT_LT(std::sqrt(num / den), wgmma ? 1e-2 : 1e-3);
    EXPECT_EQ(lse_bad, 0);
    EXPECT_EQ(q_bad, 0);
  }
}

TEST(MacCuda, ForcedHitsAndCounters) {
  REQUIRE_DEVICE();
  MacConfig cfg;
  cfg.threshold = 0.45f, cfg.window = 512, cfg.band = 256, cfg.gen_min = 0;
  const int64_t S = 16, G = 4, Hkv = 8;
  World w = make_world(S, Hkv, G, 128, 4096, cfg, S, 21);
  for (float& l : w.rlse) l = 1.0f;  // every row valid
  StepIn in;
  in.ctx.assign(S, 4096), in.valid_from.assign(S, 0);
  for (int64_t s = 0; s < S; ++s) in.slots.push_back(static_cast<int32_t>(s));
  in.q_post = std::vector<float>(static_cast<size_t>(S * w.Hq * 128), 0.1f), in.q_pre = in.q_post;
  for (bool clustered : {false, true}) {
    Gpu g(w, 256);
    g.set_inputs(in);
    cuda::MacForceHits force;
    force.hit_rate = 0.5f, force.clustered = clustered, force.seed = 7, force.lag = 64;
    ASSERT_EQ(cuda::mac_decode_forced_hits(
                  g.params(w), force, cuda::MacWorkspace{g.ws.p, g.ws_bytes}, w.max_ctx, nullptr),
              0);
    const std::vector<MacHeadDecision> dec = g.dec.down();
    const cuda::MacCounters c = g.counters.down()[0];
    int64_t hits = 0, mixed = 0;
    for (int64_t s = 0; s < S; ++s)
      for (int64_t k = 0; k < Hkv; ++k) {
        int gh = 0;
        for (int64_t j = 0; j < G; ++j) gh += dec[s * w.Hq + k * G + j].hit;
        hits += gh;
        mixed += gh > 0 && gh < G;
      }
    std::printf(
        "forced 0.5 %s: hits %lld / %lld, mixed groups %lld, counters heads %llu hits %llu kv %llu "
        "/ %llu\n",
        clustered ? "clustered" : "independent", (long long)hits, (long long)(S * w.Hq),
        (long long)mixed, c.heads, c.hit_heads, c.kv_tokens_read, c.kv_tokens_full);
    EXPECT_EQ(static_cast<int64_t>(c.hit_heads), hits);
    EXPECT_EQ(static_cast<int64_t>(c.heads), S * w.Hq);
    EXPECT_GT(hits, S * w.Hq / 4);
    EXPECT_LT(hits, 3 * S * w.Hq / 4);
    if (clustered)
      EXPECT_EQ(mixed, 0);
    else
      EXPECT_GT(mixed, 0);
  }
}

}  // namespace
}  // namespace macserve::kernels
