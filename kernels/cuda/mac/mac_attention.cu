// MAC-Attention decode on CUDA: match, schedule, split-KV partials, merge + ring write; prefill rows.
// Interface and semantics: kernels/include/macserve/kernels/cuda/mac_attention_cuda.h. The CPU
// oracle is kernels/cpu/mac_attention.cc; decisions agree with it except at near-ties (fp32 sums
// here, double there).
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdint>

#include "../cuda_util.cuh"
#include "mac_impl.cuh"
#include "macserve/kernels/cuda/mac_attention_cuda.h"
#include "macserve/kernels/cuda/mac_force_hits_cuda.h"

namespace macserve::kernels::cuda {
namespace {

using namespace mac_detail;

constexpr int kMatchThreads = 256;  // 32 candidate groups of 8 lanes (16 B each), 4 candidates each per pass
constexpr int kScheduleThreads = 1024;
// Adaptive chunks: keys per resident partial CTA in one round before the step takes more rounds.
constexpr long long kRoundTokens = 8192;

inline int64_t align256(int64_t x) { return (x + 255) / 256 * 256; }

// Tasks of a step: with a fixed chunk, every group's three ranges in chunks. Adaptive (chunk 0):
// work / C < 2 x rounds x slots <= 16 x slots (C >= longest / pieces and work / longest <
// n_long + 1; C is also raised so that work / C <= 2 x rounds x slots whatever the longest), plus
// at most two partial chunks per range, three ranges per group.
int64_t max_tasks_for(int64_t S, int64_t Hkv, int64_t max_ctx, int32_t chunk, int32_t slots) {
  if (chunk <= 0) return 16LL * slots + 6 * S * Hkv + 1;
  return S * Hkv * ((max_ctx + chunk - 1) / chunk + 3);
}

WsLayout layout_ws(void* base, int64_t S, int64_t Hq, int64_t Hkv, int64_t D, int64_t max_ctx, int32_t chunk,
                   int32_t slots) {
  WsLayout w{};
  w.max_tasks = max_tasks_for(S, Hkv, max_ctx, chunk, slots);
  w.slots = slots;
  const int64_t G = Hq / Hkv;
  char* p = static_cast<char*>(base);
  int64_t off = 0;
  auto take = [&](int64_t bytes) {
    char* r = p == nullptr ? nullptr : p + off;
    off += align256(bytes);
    return r;
  };
  w.task_count = reinterpret_cast<int32_t*>(take(sizeof(int32_t)));
  w.task_next = reinterpret_cast<int32_t*>(take(sizeof(int32_t)));
  w.match_best = reinterpret_cast<unsigned long long*>(take(S * Hq * kMaxMatchSplits * sizeof(unsigned long long)));
  w.groups = reinterpret_cast<GroupInfo*>(take(S * Hkv * sizeof(GroupInfo)));
  w.group_reads = reinterpret_cast<int64_t*>(take(S * Hkv * sizeof(int64_t)));
  w.head_start = reinterpret_cast<int32_t*>(take(S * Hq * sizeof(int32_t)));
  w.tasks = reinterpret_cast<int4*>(take(w.max_tasks * sizeof(int4)));
  w.part_o = reinterpret_cast<float*>(take(w.max_tasks * G * D * sizeof(float)));
  w.part_lse = reinterpret_cast<float*>(take(w.max_tasks * G * sizeof(float)));
  w.bytes = off;
  return w;
}

__device__ __forceinline__ float bf16_bits_to_float(uint32_t bits16) { return __uint_as_float(bits16 << 16); }

// kN (8 or 4) consecutive elements of a ring row as floats (16- or 8-byte loads).
template <bool kBf16, int kN>
__device__ __forceinline__ void load_n(const void* base, int64_t elem, float* out) {
  static_assert(kN == 8 || kN == 4, "8 or 4 elements");
  if constexpr (kBf16 && kN == 8) {
    const uint4 v = *reinterpret_cast<const uint4*>(static_cast<const uint16_t*>(base) + elem);
    const uint32_t w[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      out[2 * i] = bf16_bits_to_float(w[i] & 0xffffu);
      out[2 * i + 1] = bf16_bits_to_float(w[i] >> 16);
    }
  } else if constexpr (kBf16) {
    const uint2 v = *reinterpret_cast<const uint2*>(static_cast<const uint16_t*>(base) + elem);
    out[0] = bf16_bits_to_float(v.x & 0xffffu), out[1] = bf16_bits_to_float(v.x >> 16);
    out[2] = bf16_bits_to_float(v.y & 0xffffu), out[3] = bf16_bits_to_float(v.y >> 16);
  } else {
#pragma unroll
    for (int i = 0; i < kN; i += 4) {
      const float4 a = *reinterpret_cast<const float4*>(static_cast<const float*>(base) + elem + i);
      out[i] = a.x, out[i + 1] = a.y, out[i + 2] = a.z, out[i + 3] = a.w;
    }
  }
}

template <bool kBf16>
__device__ __forceinline__ float ring_get(const void* base, int64_t i) {
  if constexpr (kBf16) return bf16_bits_to_float(static_cast<const uint16_t*>(base)[i]);
  else return static_cast<const float*>(base)[i];
}
// Whether sequence s decodes in this launch, and its token row (mixed steps: token_index / modes).
__device__ __forceinline__ bool decodes(const MacCudaParams& p, int s) {
  return p.context_lens[s] > 0 && (p.modes == nullptr || p.modes[s] == kMacDecode);
}
// (d, pos) ordering: smaller distance, then the older position.
__device__ __forceinline__ bool better(float d, int pos, float bd, int bpos) {
  return d < bd || (d == bd && pos < bpos);
}

__device__ __forceinline__ uint32_t hash3(uint32_t a, uint32_t b, uint32_t c) {
  uint32_t h = a * 0x9E3779B1u ^ (b + 0x7F4A7C15u) * 0x85EBCA77u ^ (c + 0x165667B1u) * 0xC2B2AE3Du;
  h ^= h >> 16;
  h *= 0x7FEB352Du;
  h ^= h >> 15;
  h *= 0x846CA68Bu;
  h ^= h >> 16;
  return h;
}

// ---- 1. match ---------------------------------------------------------------------------------
// The window of decode sequence s, [begin, m), and whether it may match at all.
struct MatchWindow {
  int m = 0, begin = 0, slot = -1;
  bool eligible = false;
};
__device__ __forceinline__ MatchWindow match_window(const MacCudaParams& p, int s) {
  MatchWindow x;
  x.m = p.context_lens[s] - 1;
  x.slot = p.ring_slots[s];
  x.begin = max(max(0, x.m - static_cast<int>(p.cfg.window)), p.ring_valid_from[s]);
  x.eligible = x.slot >= 0 && x.m >= p.cfg.gen_min && x.begin < x.m;
  return x;
}
// Hit iff d^2 < 2 D (1 - t)^2 (t clamped to [0, 1]; NaN: 1).
__device__ __forceinline__ float hit_threshold(const MacCudaParams& p, int D) {
  const float tc = fminf(1.0f, fmaxf(0.0f, isnan(p.cfg.threshold) ? 1.0f : p.cfg.threshold));
  const float omt = 1.0f - tc;
  return static_cast<float>(2.0 * D * static_cast<double>(omt) * omt);
}

// One CTA per (share of the window, q head, sequence): the share's nearest valid ring row, written
// as (distance bits << 32) | position to match_best; the schedule kernel takes the smallest.
template <bool kBf16, int D>
__global__ void __launch_bounds__(kMatchThreads) match_kernel(MacCudaParams p, WsLayout w) {
  const int split = blockIdx.x, h = blockIdx.y, s = blockIdx.z, tid = threadIdx.x;
  if (!decodes(p, s)) return;  // inactive (padded) row, or an exact sequence of a mixed step
  const MatchWindow win = match_window(p, s);
  if (!win.eligible) return;  // the schedule kernel reads nothing of this head
  const int Hq = static_cast<int>(p.num_q_heads);
  const int M = static_cast<int>(p.cfg.window);
  const int m = win.m, begin = win.begin;
  const float thr = hit_threshold(p, D);
  const int share = (m - begin + gridDim.x - 1) / gridDim.x;
  const int lo = begin + split * share, hi = min(m, lo + share);

  float best_d = INFINITY;
  int best_pos = INT_MAX;
  constexpr int kElems = D >= 64 ? 8 : D / 8;  // per lane and chunk (8 lanes per candidate)
  constexpr int kChunkDims = 8 * kElems;       // 64 (32 when D is 32)
  constexpr int kChunks = D / kChunkDims;
  constexpr int kGroups = kMatchThreads / 8;
  const int lane8 = tid & 7, cand = tid >> 3;  // candidate groups of 8 lanes
  float q[kChunks][kElems];
  const float* qp = p.q_pre + (token_of(p, s) * Hq + h) * D;
#pragma unroll
  for (int c = 0; c < kChunks; ++c)
#pragma unroll
    for (int e = 0; e < kElems; e += 4) {
      const float4 a = *reinterpret_cast<const float4*>(qp + c * kChunkDims + lane8 * kElems + e);
      q[c][e] = a.x, q[c][e + 1] = a.y, q[c][e + 2] = a.z, q[c][e + 3] = a.w;
    }
  const int64_t slot_row0 = static_cast<int64_t>(win.slot) * M;
  // kU candidates per lane group and pass, their loads issued together (a pass is latency
  // bound). Each candidate's sum is taken in the same order as one at a time, so decisions do
  // not depend on kU or on the split.
  constexpr int kU = 4;
  for (int base = lo; base < hi; base += kGroups * kU) {  // uniform trip count: shuffles see full warps
    int xs[kU];
    int64_t row[kU];
    bool valid[kU];
    float acc[kU];
#pragma unroll
    for (int j = 0; j < kU; ++j) {
      xs[j] = base + cand + kGroups * j;
      row[j] = (slot_row0 + (xs[j] < hi ? xs[j] : begin) % M) * Hq + h;
      acc[j] = 0.0f;
    }
#pragma unroll
    for (int j = 0; j < kU; ++j) valid[j] = xs[j] < hi && p.ring.lse[row[j]] > -INFINITY;  // invalid rows never win
#pragma unroll
    for (int c = 0; c < kChunks; ++c) {
      float v[kU][kElems];
#pragma unroll
      for (int j = 0; j < kU; ++j)
        if (c == 0 ? xs[j] < hi : valid[j])  // the first chunk beside the lse load; later ones if still needed
          load_n<kBf16, kElems>(p.ring.q, row[j] * D + c * kChunkDims + lane8 * kElems, v[j]);
#pragma unroll
      for (int j = 0; j < kU; ++j) {
        if (valid[j]) {
#pragma unroll
          for (int i = 0; i < kElems; ++i) {
            const float df = q[c][i] - v[j][i];
            acc[j] = fmaf(df, df, acc[j]);
          }
        }
        // reduce the partial sum over the candidate's 8 lanes (aligned groups of 8)
        float t = acc[j];
        t += __shfl_xor_sync(0xffffffffu, t, 1);
        t += __shfl_xor_sync(0xffffffffu, t, 2);
        t += __shfl_xor_sync(0xffffffffu, t, 4);
        if (c + 1 < kChunks) {
          // early exit: the partial sum is a lower bound; at or above the threshold it cannot
          // hit (and a candidate that cannot hit never decides the outcome)
          if (valid[j] && t >= thr) {
            if (better(t, xs[j], best_d, best_pos)) best_d = t, best_pos = xs[j];
            valid[j] = false;
          }
        } else if (valid[j]) {
          if (better(t, xs[j], best_d, best_pos)) best_d = t, best_pos = xs[j];
        }
      }
    }
  }
  // argmin over the block
#pragma unroll
  for (int o = 8; o < 32; o <<= 1) {
    const float od = __shfl_xor_sync(0xffffffffu, best_d, o);
    const int op = __shfl_xor_sync(0xffffffffu, best_pos, o);
    if (better(od, op, best_d, best_pos)) best_d = od, best_pos = op;
  }
  __shared__ float sd[kMatchThreads / 32];
  __shared__ int sp[kMatchThreads / 32];
  if ((tid & 31) == 0) sd[tid >> 5] = best_d, sp[tid >> 5] = best_pos;
  __syncthreads();
  if (tid == 0)
    for (int i = 1; i < kMatchThreads / 32; ++i)
      if (better(sd[i], sp[i], best_d, best_pos)) best_d = sd[i], best_pos = sp[i];
  if (tid != 0) return;
  // distances are >= 0 (or +inf), so their bits order as the floats do; NaN never won above
  w.match_best[(static_cast<int64_t>(s) * Hq + h) * kMaxMatchSplits + split] =
      best_pos == INT_MAX ? ~0ull
                          : (static_cast<unsigned long long>(__float_as_uint(best_d)) << 32) |
                                static_cast<uint32_t>(best_pos);
}

// Benchmark hook (mac_force_hits_cuda.h): an eligible head's decision replaced by a draw with the
// forced hit rate; a forced hit matches position m - lag when that row is valid.
__device__ __forceinline__ void force_decision(const MacCudaParams& p, const MacForceHits& force,
                                               const MatchWindow& win, int s, int h, MacHeadDecision& dec) {
  if (force.hit_rate < 0.0f) return;
  const int Hq = static_cast<int>(p.num_q_heads);
  const int G = Hq / static_cast<int>(p.layout.num_kv_heads);
  const int M = static_cast<int>(p.cfg.window);
  const int m = win.m;
  const uint32_t who = force.clustered ? static_cast<uint32_t>(h / G) : static_cast<uint32_t>(h);
  const float u = static_cast<float>(hash3(force.seed + static_cast<uint32_t>(m), static_cast<uint32_t>(s), who) >> 8) *
                  (1.0f / 16777216.0f);
  const int x = m - force.lag;
  const bool ok =
      x >= win.begin && x < m && p.ring.lse[(static_cast<int64_t>(win.slot) * M + x % M) * Hq + h] > -INFINITY;
  dec.hit = u < force.hit_rate && ok;
  dec.matched = dec.hit ? x : -1;
}

// Head h of decode sequence s: its decision from the match CTAs' candidates (kForced: then the
// benchmark hook's draw), and its first needed key. Returns {eligible, hit} for the counters.
template <bool kForced>
__device__ int2 decide_head(const MacCudaParams& p, const WsLayout& w, int s, int h, const MacForceHits& force) {
  const int Hq = static_cast<int>(p.num_q_heads);
  const int D = static_cast<int>(p.layout.head_dim);
  const int r = static_cast<int>(p.cfg.band), F = static_cast<int>(p.cfg.sink);
  const MatchWindow win = match_window(p, s);
  const int m = win.m;
  MacHeadDecision dec{static_cast<int8_t>(win.eligible), 0, -1, INFINITY};
  if (win.eligible) {
    unsigned long long best = ~0ull;
    const unsigned long long* cand = w.match_best + (static_cast<int64_t>(s) * Hq + h) * kMaxMatchSplits;
#pragma unroll
    for (int k = 0; k < kMaxMatchSplits; ++k)
      if (k < w.match_splits) best = min(best, cand[k]);
    const int best_pos = best == ~0ull ? INT_MAX : static_cast<int>(best & 0xffffffffull);
    dec.distance = best == ~0ull ? INFINITY : __uint_as_float(static_cast<uint32_t>(best >> 32));
    dec.hit = best_pos != INT_MAX && dec.distance < hit_threshold(p, D);
    dec.matched = dec.hit ? best_pos : -1;
    if constexpr (kForced) force_decision(p, force, win, s, h, dec);
  }
  const int E_m = max(m + 1 - r, 0);
  int start = min(F, E_m);
  if (dec.hit) {
    const int E_p = max(dec.matched + 1 - r, 0);
    if (F > 0 && E_p < F) {
      dec.hit = 0;  // the row covers nothing outside the sink
      dec.matched = -1;
    } else {
      start = E_p;
    }
  }
  p.decisions[static_cast<int64_t>(s) * Hq + h] = dec;
  w.head_start[static_cast<int64_t>(s) * Hq + h] = start;
  return make_int2(win.eligible, dec.hit);
}

// ---- 2. schedule ------------------------------------------------------------------------------
__device__ __forceinline__ int chunks_of(int b, int e, int C) { return e > b ? (e - 1) / C - b / C + 1 : 0; }
// A chunk at least C / 2 long is "long": long chunks run before every short one.
__device__ __forceinline__ int is_long(int len, int C) { return 2 * len >= C ? 1 : 0; }
__device__ __forceinline__ int long_chunks_of(int b, int e, int C) {
  if (e <= b) return 0;
  const int k0 = b / C, k1 = (e - 1) / C;
  if (k0 == k1) return is_long(e - b, C);
  return k1 - k0 - 1 + is_long((k0 + 1) * C - b, C) + is_long(e - k1 * C, C);
}
// Chunk j of range [b, e) (cut at multiples of C) of group gi: its partial-output slot is out0 + j
// (the merge folds a group's slots in order), its place in the run order long_at + (long chunks of
// the range before it) if it is long, else short_at + (short chunks before it).
__device__ __forceinline__ void emit_chunk(int4* tasks, int gi, int b, int e, int C, int kind, int j, int out0,
                                           int long_at, int short_at) {
  const int k = b / C + j;
  const int lo = max(b, k * C), hi = static_cast<int>(min(static_cast<long long>(e), static_cast<long long>(k + 1) * C));
  const int longs_before = j == 0 ? 0 : long_chunks_of(b, k * C, C);
  const int at = is_long(hi - lo, C) ? long_at + longs_before : short_at + j - longs_before;
  tasks[at] = make_int4(gi, lo, hi, ((out0 + j) << 2) | kind);
}

// The keys group gi reads this step: ctx 0 when its sequence does not decode here; otherwise the
// row part [start, E_m) (start = the group's smallest head start), the sink [0, Fp) and the tail
// [E_m, ctx).
struct GroupRanges {
  int ctx = 0, start = 0, E_m = 0, Fp = 0;
};
__device__ __forceinline__ GroupRanges group_ranges(const MacCudaParams& p, const WsLayout& w, int gi) {
  const int Hkv = static_cast<int>(p.layout.num_kv_heads), Hq = static_cast<int>(p.num_q_heads), G = Hq / Hkv;
  const int s = gi / Hkv, g = gi % Hkv;
  GroupRanges x;
  x.ctx = decodes(p, s) ? p.context_lens[s] : 0;
  if (x.ctx <= 0) return x;
  x.E_m = max(x.ctx - static_cast<int>(p.cfg.band), 0);
  x.Fp = min(static_cast<int>(p.cfg.sink), x.E_m);
  x.start = x.E_m;
#pragma unroll 8
  for (int h = 0; h < G; ++h) x.start = min(x.start, w.head_start[static_cast<int64_t>(s) * Hq + g * G + h]);
  return x;
}

// Inclusive scan of (a, b) pairs over the CTA's kScheduleThreads threads: shuffles within each
// warp, then warp 0 scans the warp totals (two barriers). warp_tot: kScheduleThreads / 32 entries
// of shared memory, free again after the second barrier's readers are done (the caller's next
// barrier).
__device__ __forceinline__ int2 warp_scan(int2 v, int lane) {  // inclusive, over the warp's lanes
  for (int o = 1; o < 32; o <<= 1) {
    const int a = __shfl_up_sync(0xffffffffu, v.x, o), b = __shfl_up_sync(0xffffffffu, v.y, o);
    if (lane >= o) v.x += a, v.y += b;
  }
  return v;
}
__device__ __forceinline__ int2 block_scan(int2 v, int2* warp_tot) {
  static_assert(kScheduleThreads == 32 * 32, "warp 0 scans one total per warp");
  const int lane = threadIdx.x & 31, wid = static_cast<int>(threadIdx.x >> 5);
  v = warp_scan(v, lane);
  if (lane == 31) warp_tot[wid] = v;
  __syncthreads();
  if (wid == 0) warp_tot[lane] = warp_scan(warp_tot[lane], lane);
  __syncthreads();
  if (wid > 0) v.x += warp_tot[wid - 1].x, v.y += warp_tot[wid - 1].y;
  return v;
}

// The schedule kernel's body; kForced: the benchmark hook's decisions (force).
template <bool kForced>
__device__ __forceinline__ void schedule(const MacCudaParams& p, const WsLayout& w, const MacForceHits& force) {
  __shared__ int2 warp_tot[kScheduleThreads / 32];
  __shared__ int carry, carry_long;
  const int tid = threadIdx.x;
  const int Hkv = static_cast<int>(p.layout.num_kv_heads);
  const int n_groups = static_cast<int>(p.num_seqs) * Hkv;
  __shared__ unsigned long long work;
  __shared__ int longest;
  __shared__ unsigned long long n_heads, n_eligible, n_hits;
  if (tid == 0) carry = 0, carry_long = 0, work = 0, longest = 0, n_heads = 0, n_eligible = 0, n_hits = 0;
  __syncthreads();
  {  // every decode head's decision and first key, from its match CTAs
    const int Hq = static_cast<int>(p.num_q_heads);
    unsigned c_heads = 0, c_eligible = 0, c_hits = 0;
    for (int i = tid; i < p.num_seqs * Hq; i += kScheduleThreads) {
      if (!decodes(p, i / Hq)) continue;
      const int2 e = decide_head<kForced>(p, w, i / Hq, i % Hq, force);
      c_heads += 1, c_eligible += e.x, c_hits += e.y;
    }
    if (p.counters != nullptr) {
      c_heads = detail::warp_sum_u32(c_heads), c_eligible = detail::warp_sum_u32(c_eligible);
      c_hits = detail::warp_sum_u32(c_hits);
      if ((tid & 31) == 0 && c_heads > 0) {
        atomicAdd(&n_heads, static_cast<unsigned long long>(c_heads));
        atomicAdd(&n_eligible, static_cast<unsigned long long>(c_eligible));
        atomicAdd(&n_hits, static_cast<unsigned long long>(c_hits));
      }
    }
  }
  __syncthreads();  // head starts are visible to the whole CTA
  if (tid == 0 && p.counters != nullptr && n_heads > 0) {
    atomicAdd(&p.counters->heads, n_heads);
    atomicAdd(&p.counters->eligible_heads, n_eligible);
    atomicAdd(&p.counters->hit_heads, n_hits);
  }
  // A batch of at most kScheduleThreads groups keeps each group's ranges in its thread's registers
  // for every pass below (a pass then reads no global memory for them).
  const bool cached = n_groups <= kScheduleThreads;
  GroupRanges mine;
  if (cached && tid < n_groups) mine = group_ranges(p, w, tid);
  auto ranges = [&](int gi) { return cached ? mine : group_ranges(p, w, gi); };
  int C = p.chunk_tokens;
  if (C <= 0) {
    // Adaptive, from the step's real work (every group's keys, as the decisions left them) and
    // its longest row part, so a step where a few groups miss spreads them over every CTA as well
    // as an all-miss step does (chunk_tokens in mac_attention_cuda.h). (A sequence's chunks then
    // depend on its batch-mates' work.)
    for (int gi = tid; gi < n_groups; gi += kScheduleThreads) {
      const GroupRanges x = ranges(gi);
      if (x.ctx <= 0) continue;
      atomicAdd(&work, static_cast<unsigned long long>(x.ctx - x.start + x.Fp));
      atomicMax(&longest, x.E_m - x.start);
    }
    __syncthreads();
    // The long ranges (at most work / longest of them) in equal pieces that fill `rounds` whole
    // rounds of the resident partial CTAs: one round unless there are more than kRoundTokens keys
    // per CTA, then up to 8 (the sinks and tails, short, run after them). Measured on the H200 (see
    // docs/perf): a task has ~5-7 us of fixed cost, and long tasks left over for a second round cost
    // up to a whole task time.
    const long long slots = max(w.slots, 1), L = max(longest, 1), total = static_cast<long long>(work);
    const long long n_long = max(1LL, total / L);
    const long long rounds = min(8LL, max(1LL, (total + slots * kRoundTokens - 1) / (slots * kRoundTokens)));
    const long long pieces = max(1LL, rounds * slots / n_long);
    const long long c_long = ((L + pieces - 1) / pieces + 15) / 16 * 16;
    // never more than 2 x rounds x slots chunks, however short the longest row part
    const long long c_work = ((total + 2 * rounds * slots - 1) / (2 * rounds * slots) + 15) / 16 * 16;
    C = static_cast<int>(min(max(128LL, max(c_long, c_work)), 1LL << 30));
  }
  // Each group's chunks in order (row part, sink, tail) own partial-output slots [at, at + n); the
  // task list runs every group's long chunks first, then the short ones (sinks, tails, hit groups'
  // row parts), so a short task, not a long one, is what is left for the end of the step. First
  // the counts and their scans (a thread per group), then the tasks (a warp per group, a lane per
  // chunk: a missing group at batch 1 has hundreds).
  for (int round = 0; round < n_groups; round += kScheduleThreads) {
    const int gi = round + tid;
    int n_row = 0, n_sink = 0, n_tail = 0, n_long = 0;
    GroupRanges x;
    if (gi < n_groups) {
      x = ranges(gi);
      if (x.ctx > 0) {
        n_row = chunks_of(x.start, x.E_m, C);
        n_sink = chunks_of(0, x.Fp, C);
        n_tail = chunks_of(x.E_m, x.ctx, C);
        n_long = long_chunks_of(x.start, x.E_m, C) + long_chunks_of(0, x.Fp, C) + long_chunks_of(x.E_m, x.ctx, C);
        w.group_reads[gi] = static_cast<int64_t>(x.ctx - x.start) + x.Fp;
      } else {
        w.group_reads[gi] = 0;
      }
    }
    const int n = n_row + n_sink + n_tail;
    const int2 inc = block_scan(make_int2(n, n_long), warp_tot);  // inclusive, over the round's groups
    const int at = carry + inc.x - n, at_long = carry_long + inc.y - n_long;
    if (gi < n_groups) w.groups[gi] = GroupInfo{at, n_row, n_sink, n_tail, at_long, at - at_long, x.start, x.E_m, x.Fp, x.ctx};
    __syncthreads();
    if (tid == kScheduleThreads - 1) carry += inc.x, carry_long += inc.y;
    __syncthreads();
  }
  {
    const int lane = tid & 31;
    for (int gi = tid >> 5; gi < n_groups; gi += kScheduleThreads / 32) {
      const GroupInfo f = w.groups[gi];
      const int n = f.n_row + f.n_sink + f.n_tail;
      if (n == 0) continue;
      const int l_row = long_chunks_of(f.start, f.e_m, C), l_sink = long_chunks_of(0, f.fp, C);
      const int short_at = carry_long + f.short_before;
      for (int j = lane; j < n; j += 32) {
        if (j < f.n_row)
          emit_chunk(w.tasks, gi, f.start, f.e_m, C, kRowPart, j, f.task_begin, f.long_begin, short_at);
        else if (j < f.n_row + f.n_sink)
          emit_chunk(w.tasks, gi, 0, f.fp, C, kSink, j - f.n_row, f.task_begin + f.n_row, f.long_begin + l_row,
                     short_at + f.n_row - l_row);
        else
          emit_chunk(w.tasks, gi, f.e_m, f.ctx, C, kTail, j - f.n_row - f.n_sink, f.task_begin + f.n_row + f.n_sink,
                     f.long_begin + l_row + l_sink, short_at + f.n_row - l_row + f.n_sink - l_sink);
      }
    }
  }
  if (tid == 0) *w.task_count = carry, *w.task_next = 0;
  __syncthreads();  // group_reads of every group written
  // per-sequence and aggregate KV telemetry
  for (int s = tid; s < p.num_seqs; s += kScheduleThreads) {
    int64_t total = 0;
#pragma unroll 8
    for (int g = 0; g < Hkv; ++g) total += w.group_reads[s * Hkv + g];
    const bool dec = decodes(p, s);
    const int ctx = p.context_lens[s];
    if (p.kv_tokens_read != nullptr) p.kv_tokens_read[s] = dec ? total : static_cast<int64_t>(max(ctx, 0)) * Hkv;
    if (p.counters != nullptr && dec) {
      atomicAdd(&p.counters->kv_tokens_read, static_cast<unsigned long long>(total));
      atomicAdd(&p.counters->kv_tokens_full, static_cast<unsigned long long>(ctx) * Hkv);
    }
  }
}

__global__ void __launch_bounds__(kScheduleThreads) schedule_kernel(MacCudaParams p, WsLayout w) {
  schedule<false>(p, w, MacForceHits{});
}
// Benchmark hook (mac_decode_forced_hits): the same with every eligible head's decision drawn.
__global__ void __launch_bounds__(kScheduleThreads)
    schedule_forced_kernel(MacCudaParams p, WsLayout w, MacForceHits force) {
  schedule<true>(p, w, force);
}

// ---- 3. split-KV partials: mac_impl.cuh / mac_partial_d<D>.cu -------------------------------

// ---- 4. merge + ring write + output -----------------------------------------------------------
// One pass over a head's chunk slots [t0, t0 + n): the row part [t0, t0 + n_row) folded into
// (o, lse) (which holds the hit summary, or 0 and -inf), the rest (sink, tail) into (o_x, lse_x).
// By the whole CTA of D threads: each class's largest lse first (the threads split the loads), then
// the weights exp(lse_k - max) into shared memory a tile at a time. The weighted sums run
// kMergeLanes slots at once: thread t takes dims [8c, 8c + 8) (c = t % (D / 8), two 16-byte loads
// per slot) of every kMergeLanes-th slot from r = t / (D / 8). A head with hundreds of chunks (a
// miss at batch 1) so waits for an eighth of the dependent load rounds of one thread per dim (ptxas
// keeps only about two loads of a thread in flight, however the loop is unrolled). The lanes' sums
// then meet in shared memory, in lane order, and every thread ends with dim d = t. An empty chunk
// has lse -inf, o 0, weight 0; a class without any key stays (0, -inf).
constexpr int kMergeTile = 256;
constexpr int kMergeLanes = 8;  // slots summed at once: D threads = kMergeLanes x (D / 8) lanes of 8 dims
constexpr int kMergeBatch = 4;  // slots a thread loads before it sums them

struct Acc8 {
  float4 a, b;  // dims [8c, 8c + 4), [8c + 4, 8c + 8)
};
__device__ __forceinline__ void fma8(Acc8& acc, float wt, const float4 x, const float4 y) {
  acc.a.x = fmaf(wt, x.x, acc.a.x), acc.a.y = fmaf(wt, x.y, acc.a.y), acc.a.z = fmaf(wt, x.z, acc.a.z);
  acc.a.w = fmaf(wt, x.w, acc.a.w), acc.b.x = fmaf(wt, y.x, acc.b.x), acc.b.y = fmaf(wt, y.y, acc.b.y);
  acc.b.z = fmaf(wt, y.z, acc.b.z), acc.b.w = fmaf(wt, y.w, acc.b.w);
}

// acc += wts[k] * po[k], W += wts[k] over k = k0, k0 + kMergeLanes, ... < end, kMergeBatch slots
// loaded before they are summed; the last, partial batch is guarded (its out-of-range entries
// weigh 0 and load nothing).
template <bool kGuarded>
__device__ __forceinline__ void sum_batch(Acc8& acc, float& W, const float4* po, int64_t stride, const float* wts,
                                          int k0, int end) {
  const float4 zero = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
  float4 x[kMergeBatch], y[kMergeBatch];
  float wt[kMergeBatch];
#pragma unroll
  for (int u = 0; u < kMergeBatch; ++u) {
    const int k = k0 + u * kMergeLanes;
    const bool in = !kGuarded || k < end;
    x[u] = in ? __ldg(po + k * stride) : zero;
    y[u] = in ? __ldg(po + k * stride + 1) : zero;
    wt[u] = in ? wts[k] : 0.0f;
  }
#pragma unroll
  for (int u = 0; u < kMergeBatch; ++u) W += wt[u], fma8(acc, wt[u], x[u], y[u]);
}
__device__ __forceinline__ void sum_slots(Acc8& acc, float& W, const float4* po, int64_t stride, const float* wts,
                                          int k0, int end) {
  for (; k0 + (kMergeBatch - 1) * kMergeLanes < end; k0 += kMergeBatch * kMergeLanes)
    sum_batch<false>(acc, W, po, stride, wts, k0, end);
  if (k0 < end) sum_batch<true>(acc, W, po, stride, wts, k0, end);
}

__device__ __forceinline__ void fold_chunks(float& o, float& lse, float& o_x, float& lse_x, const WsLayout& w, int t0,
                                            int n_row, int n, int G, int hl, int D, int d) {
  __shared__ float wts[kMergeTile];
  __shared__ float warp_mx[2][4];
  __shared__ Acc8 sums[2][kMergeLanes][16];  // [row part | rest][lane r][c]: D / 8 <= 16
  __shared__ float wsum[2][kMergeLanes];
  o_x = 0.0f, lse_x = -INFINITY;
  if (n == 0) return;
  float mr = -INFINITY, mx = -INFINITY;
  for (int k = d; k < n; k += D) {
    const float l = w.part_lse[static_cast<int64_t>(t0 + k) * G + hl];
    if (k < n_row) mr = fmaxf(mr, l);
    else mx = fmaxf(mx, l);
  }
  mr = detail::warp_max(mr), mx = detail::warp_max(mx);
  if (D > 32) {
    if ((d & 31) == 0) warp_mx[0][d >> 5] = mr, warp_mx[1][d >> 5] = mx;
    __syncthreads();
    for (int i = 0; i < D / 32; ++i) mr = fmaxf(mr, warp_mx[0][i]), mx = fmaxf(mx, warp_mx[1][i]);
  }
  mr = fmaxf(mr, lse);
  const bool any_r = mr > -INFINITY, any_x = mx > -INFINITY;
  const int cols = D / 8, c = d % cols, r = d / cols;
  const float4 zero = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
  float Wr = 0.0f, Wx = 0.0f;
  Acc8 Or{zero, zero}, Ox{zero, zero};
  for (int base = 0; base < n; base += kMergeTile) {
    const int m = min(kMergeTile, n - base);
    __syncthreads();  // the previous tile's weights (or warp_mx) have been read
    for (int k = d; k < m; k += D) {
      const bool row = base + k < n_row;
      const float ref = row ? mr : mx;
      wts[k] = (row ? any_r : any_x) ? expf(w.part_lse[static_cast<int64_t>(t0 + base + k) * G + hl] - ref) : 0.0f;
    }
    __syncthreads();
    const float4* po =
        reinterpret_cast<const float4*>(w.part_o + (static_cast<int64_t>(t0 + base) * G + hl) * D) + 2 * c;
    const int64_t stride = static_cast<int64_t>(G) * D / 4;  // float4s from one slot to the next
    const int split = min(max(n_row - base, 0), m);           // tile entries [0, split) are row-part chunks
    sum_slots(Or, Wr, po, stride, wts, r, split);
    sum_slots(Ox, Wx, po, stride, wts, split + (r - split % kMergeLanes + kMergeLanes) % kMergeLanes, m);
  }
  sums[0][r][c] = Or, sums[1][r][c] = Ox;
  if (c == 0) wsum[0][r] = Wr, wsum[1][r] = Wx;
  __syncthreads();
  const int dc = d / 8, dj = d % 8;  // dim d = 8 dc + dj
  float sr = any_r ? expf(lse - mr) * o : 0.0f, sx = 0.0f;
  Wr = any_r ? expf(lse - mr) : 0.0f, Wx = 0.0f;
  for (int i = 0; i < kMergeLanes; ++i) {
    sr += reinterpret_cast<const float*>(&sums[0][i][dc])[dj];
    sx += reinterpret_cast<const float*>(&sums[1][i][dc])[dj];
    Wr += wsum[0][i], Wx += wsum[1][i];
  }
  if (any_r) o = sr / Wr, lse = mr + logf(Wr);
  if (any_x) o_x = sx / Wx, lse_x = mx + logf(Wx);
}

template <bool kBf16>
__global__ void merge_kernel(MacCudaParams p, WsLayout w) {
  const int h = blockIdx.x, s = blockIdx.y, d = threadIdx.x;
  if (!decodes(p, s)) return;
  const int ctx = p.context_lens[s];
  const int Hq = static_cast<int>(p.num_q_heads), Hkv = static_cast<int>(p.layout.num_kv_heads), G = Hq / Hkv;
  const int D = static_cast<int>(p.layout.head_dim), M = static_cast<int>(p.cfg.window);
  const int m = ctx - 1, g = h / G, hl = h % G;
  const MacHeadDecision dec = p.decisions[static_cast<int64_t>(s) * Hq + h];
  const int slot = p.ring_slots[s];
  const GroupInfo gi = w.groups[static_cast<int64_t>(s) * Hkv + g];
  float o = 0.0f, lse = -INFINITY;
  if (dec.hit) {
    const int64_t row = (static_cast<int64_t>(slot) * M + dec.matched % M) * Hq + h;
    o = ring_get<kBf16>(p.ring.o, row * D + d);
    lse = p.ring.lse[row];
  }
  float o_x, lse_x;
  fold_chunks(o, lse, o_x, lse_x, w, gi.task_begin, gi.n_row, gi.n_row + gi.n_sink + gi.n_tail, G, hl, D, d);
  const int64_t qi = (token_of(p, s) * Hq + h) * D + d;
  if (slot >= 0) {
    __syncthreads();  // row p may share row m's ring slot (p = m - M): every read precedes the write
    const int64_t row = (static_cast<int64_t>(slot) * M + m % M) * Hq + h;
    const bool empty = !(lse > -INFINITY);
    ring_store(p.ring.q, kBf16, row * D + d, p.q_pre[qi]);
    ring_store(p.ring.o, kBf16, row * D + d, empty ? 0.0f : o);
    if (d == 0) p.ring.lse[row] = empty ? -INFINITY : lse;
  }
  // output = row (+) sink and tail
  const float mm = fmaxf(lse, lse_x);
  if (mm > -INFINITY) {
    const float a = expf(lse - mm), b = expf(lse_x - mm);
    o = (a * o + b * o_x) / (a + b);
  }
  detail::store(p.out, p.out_bf16, qi, o);
}

}  // namespace

bool mac_supported(int64_t head_dim, int64_t group, int64_t block_size) {
  return (head_dim == 32 || head_dim == 64 || head_dim == 128) && group >= 1 && group <= 8 && block_size == 16;
}

namespace {

// CTAs of the persistent partial kernel resident on the current device at once (its grid), for
// this head_dim and group size (the cp.async ring in shared memory bounds it).
int partial_slots(int64_t head_dim, int64_t group) {
  if (!mac_supported(head_dim, group, 16)) return 1;
  const int G = static_cast<int>(group);
  return head_dim == 32 ? partial_slots_d32(G) : head_dim == 64 ? partial_slots_d64(G) : partial_slots_d128(G);
}

}  // namespace

int64_t mac_workspace_bytes(int64_t num_seqs, int64_t num_q_heads, int64_t num_kv_heads, int64_t head_dim,
                            int64_t max_context_len, int32_t chunk_tokens) {
  const int64_t G = num_q_heads / std::max<int64_t>(num_kv_heads, 1);
  const int32_t slots = chunk_tokens > 0 ? 0 : partial_slots(head_dim, G);
  return layout_ws(nullptr, num_seqs, num_q_heads, num_kv_heads, head_dim, max_context_len, chunk_tokens, slots).bytes;
}

namespace {

// The four launches of mac_decode; force: the benchmark hook's, or null (production).
int decode_step(const MacCudaParams& params, const MacForceHits* force, const MacWorkspace& ws,
                int64_t max_context_len, Stream stream) {
  if (params.num_seqs == 0) return 0;
  const auto st = detail::as_stream(stream);
  const int64_t Hq = params.num_q_heads, Hkv = params.layout.num_kv_heads, D = params.layout.head_dim;
  const int G = static_cast<int>(Hq / Hkv);
  if (!mac_supported(D, G, params.layout.block_size) || params.chunk_tokens < 0 || params.chunk_tokens % 16 != 0)
    return static_cast<int>(cudaErrorInvalidValue);
  const MacCudaParams& p = params;
  const int32_t slots = p.chunk_tokens > 0 ? 0 : partial_slots(D, G);
  WsLayout w = layout_ws(ws.base, p.num_seqs, Hq, Hkv, D, max_context_len, p.chunk_tokens, slots);
  if (w.bytes > ws.bytes) return static_cast<int>(cudaErrorInvalidValue);
  // Match: at small batch each head's window is split over several CTAs (shares of at least one
  // pass of 128 candidates) so the latency-bound scan has about two CTAs per SM.
  const int sms = device_sms();
  const int64_t heads = std::max<int64_t>(1, Hq * p.num_seqs);
  const int64_t by_rows = (p.cfg.window + kMatchThreads / 2 - 1) / (kMatchThreads / 2);
  w.match_splits = static_cast<int32_t>(
      std::clamp<int64_t>(std::min<int64_t>((2 * sms + heads - 1) / heads, by_rows), 1, kMaxMatchSplits));
  const dim3 match_grid(static_cast<unsigned>(w.match_splits), static_cast<unsigned>(Hq),
                        static_cast<unsigned>(p.num_seqs));
  const dim3 heads_grid(static_cast<unsigned>(Hq), static_cast<unsigned>(p.num_seqs));
  if (D == 32) {
    if (p.cfg.ring_bf16) match_kernel<true, 32><<<match_grid, kMatchThreads, 0, st>>>(p, w);
    else match_kernel<false, 32><<<match_grid, kMatchThreads, 0, st>>>(p, w);
  } else if (D == 64) {
    if (p.cfg.ring_bf16) match_kernel<true, 64><<<match_grid, kMatchThreads, 0, st>>>(p, w);
    else match_kernel<false, 64><<<match_grid, kMatchThreads, 0, st>>>(p, w);
  } else {
    if (p.cfg.ring_bf16) match_kernel<true, 128><<<match_grid, kMatchThreads, 0, st>>>(p, w);
    else match_kernel<false, 128><<<match_grid, kMatchThreads, 0, st>>>(p, w);
  }
  if (force != nullptr) schedule_forced_kernel<<<1, kScheduleThreads, 0, st>>>(p, w, *force);
  else schedule_kernel<<<1, kScheduleThreads, 0, st>>>(p, w);
  const int rc = D == 32 ? launch_partials_d32(p, w, G, st)
                 : D == 64 ? launch_partials_d64(p, w, G, st)
                           : launch_partials_d128(p, w, G, st);
  if (rc != 0) return rc;
  if (p.cfg.ring_bf16) merge_kernel<true><<<heads_grid, static_cast<unsigned>(D), 0, st>>>(p, w);
  else merge_kernel<false><<<heads_grid, static_cast<unsigned>(D), 0, st>>>(p, w);
  return detail::last_error();
}

}  // namespace

int mac_decode(const MacCudaParams& p, const MacWorkspace& ws, int64_t max_context_len, Stream stream) {
  return decode_step(p, nullptr, ws, max_context_len, stream);
}

int mac_decode_forced_hits(const MacCudaParams& p, const MacForceHits& force, const MacWorkspace& ws,
                           int64_t max_context_len, Stream stream) {
  return decode_step(p, &force, ws, max_context_len, stream);
}

int mac_prefill_rows(const MacPrefillRowsParams& p, Stream stream) {
  if (p.num_tokens == 0 || p.num_seqs == 0) return 0;
  const auto st = detail::as_stream(stream);
  const int64_t D = p.layout.head_dim;
  const int G = static_cast<int>(p.num_q_heads / p.layout.num_kv_heads);
  if (!mac_supported(D, G, p.layout.block_size)) return static_cast<int>(cudaErrorInvalidValue);
  return D == 32 ? launch_rows_d32(p, G, st) : D == 64 ? launch_rows_d64(p, G, st) : launch_rows_d128(p, G, st);
}

}  // namespace macserve::kernels::cuda
