// MAC-Attention decode, launch 2 of 4: the schedule (mac_attention_cuda.h). One CTA takes every
// head's decision from its match CTAs, sizes the chunks and writes the step's task list in run
// order for the partials, plus the per-sequence and aggregate telemetry.
#include <cuda_runtime.h>

#include <climits>
#include <cmath>
#include <cstdint>

#include "../cuda_util.cuh"
#include "mac_common.cuh"

namespace macserve::kernels::cuda::mac_detail {
namespace {

constexpr int kScheduleThreads = 1024;
// Adaptive chunks: keys per resident partial CTA in one round before the step takes more rounds.
constexpr long long kRoundTokens = 8192;

// A 32-bit mix of three words: the forced draws of the benchmark hook.
__device__ __forceinline__ uint32_t hash3(uint32_t a, uint32_t b, uint32_t c) {
  uint32_t h = a * 0x9E3779B1u ^ (b + 0x7F4A7C15u) * 0x85EBCA77u ^ (c + 0x165667B1u) * 0xC2B2AE3Du;
  h ^= h >> 16;
  h *= 0x7FEB352Du;
  h ^= h >> 15;
  h *= 0x846CA68Bu;
  h ^= h >> 16;
  return h;
}

// Benchmark hook (mac_force_hits_cuda.h): an eligible head's decision replaced by a draw with the
// forced hit rate; a forced hit matches position m - lag when that row is valid.
__device__ __forceinline__ void force_decision(const MacCudaParams& p, const MacForceHits& force,
                                               const MatchWindow& win, int s, int h,
                                               MacHeadDecision& dec) {
  if (force.hit_rate < 0.0f) return;
  const int Hq = static_cast<int>(p.num_q_heads);
  const int G = Hq / static_cast<int>(p.layout.num_kv_heads);
  const int M = static_cast<int>(p.cfg.window);
  const int m = win.m;
  const uint32_t who = force.clustered ? static_cast<uint32_t>(h / G) : static_cast<uint32_t>(h);
  const float u =
      static_cast<float>(
          hash3(force.seed + static_cast<uint32_t>(m), static_cast<uint32_t>(s), who) >> 8) *
      (1.0f / 16777216.0f);
  const int x = m - force.lag;
  const bool ok = x >= win.begin && x < m &&
                  p.ring.lse[(static_cast<int64_t>(win.slot) * M + x % M) * Hq + h] > -INFINITY;
  dec.hit = u < force.hit_rate && ok;
  dec.matched = dec.hit ? x : -1;
}

// Head h of decode sequence s: its decision from the match CTAs' candidates (kForced: then the
// benchmark hook's draw), and its first needed key. Returns {eligible, hit} for the counters.
template <bool kForced>
__device__ int2 decide_head(const MacCudaParams& p, const WsLayout& w, int s, int h,
                            const MacForceHits& force) {
  const int Hq = static_cast<int>(p.num_q_heads);
  const int D = static_cast<int>(p.layout.head_dim);
  const int r = static_cast<int>(p.cfg.band), F = static_cast<int>(p.cfg.sink);
  const MatchWindow win = match_window(p, s);
  const int m = win.m;
  MacHeadDecision dec{static_cast<int8_t>(win.eligible), 0, -1, INFINITY};
  if (win.eligible) {
    unsigned long long best = ~0ull;
    const unsigned long long* cand =
        w.match_best + (static_cast<int64_t>(s) * Hq + h) * kMaxMatchSplits;
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

__device__ __forceinline__ int chunks_of(int b, int e, int C) {
  return e > b ? (e - 1) / C - b / C + 1 : 0;
}
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
__device__ __forceinline__ void emit_chunk(int4* tasks, int gi, int b, int e, int C, int kind,
                                           int j, int out0, int long_at, int short_at) {
  const int k = b / C + j;
  const int lo = max(b, k * C),
            hi =
                static_cast<int>(min(static_cast<long long>(e), static_cast<long long>(k + 1) * C));
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
__device__ __forceinline__ GroupRanges group_ranges(const MacCudaParams& p, const WsLayout& w,
                                                    int gi) {
  const int Hkv = static_cast<int>(p.layout.num_kv_heads), Hq = static_cast<int>(p.num_q_heads),
            G = Hq / Hkv;
  const int s = gi / Hkv, g = gi % Hkv;
  GroupRanges x;
  x.ctx = decodes(p, s) ? p.context_lens[s] : 0;
  if (x.ctx <= 0) return x;
  x.E_m = max(x.ctx - static_cast<int>(p.cfg.band), 0);
  x.Fp = min(static_cast<int>(p.cfg.sink), x.E_m);
  x.start = x.E_m;
#pragma unroll 8
  for (int h = 0; h < G; ++h)
    x.start = min(x.start, w.head_start[static_cast<int64_t>(s) * Hq + g * G + h]);
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
__device__ __forceinline__ void schedule_body(const MacCudaParams& p, const WsLayout& w,
                                              const MacForceHits& force) {
  __shared__ int2 warp_tot[kScheduleThreads / 32];
  __shared__ int carry, carry_long;
  const int tid = threadIdx.x;
  const int Hkv = static_cast<int>(p.layout.num_kv_heads);
  const int n_groups = static_cast<int>(p.num_seqs) * Hkv;
  __shared__ unsigned long long work;
  __shared__ int longest;
  __shared__ unsigned long long n_heads, n_eligible, n_hits;
  if (tid == 0)
    carry = 0, carry_long = 0, work = 0, longest = 0, n_heads = 0, n_eligible = 0, n_hits = 0;
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
    // per CTA, then up to 8 (the sinks and tails, short, run after them). Measured on the H200
    // (docs/perf/log/gpu_runs.md, run 8; docs/perf/mac_gpu.md, "Chunk rules"): a task has ~5-7 us
    // of fixed cost, and long tasks left over for a second round cost up to a whole task time.
    const long long slots = max(w.slots, 1), L = max(longest, 1),
                    total = static_cast<long long>(work);
    const long long n_long = max(1LL, total / L);
    const long long rounds =
        min(8LL, max(1LL, (total + slots * kRoundTokens - 1) / (slots * kRoundTokens)));
    const long long pieces = max(1LL, rounds * slots / n_long);
    const long long c_long = ((L + pieces - 1) / pieces + 15) / 16 * 16;
    // never more than 2 x rounds x slots chunks, however short the longest row part
    const long long c_work =
        ((total + 2 * rounds * slots - 1) / (2 * rounds * slots) + 15) / 16 * 16;
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
        n_long = long_chunks_of(x.start, x.E_m, C) + long_chunks_of(0, x.Fp, C) +
                 long_chunks_of(x.E_m, x.ctx, C);
        w.group_reads[gi] = static_cast<int64_t>(x.ctx - x.start) + x.Fp;
      } else {
        w.group_reads[gi] = 0;
      }
    }
    const int n = n_row + n_sink + n_tail;
    const int2 inc =
        block_scan(make_int2(n, n_long), warp_tot);  // inclusive, over the round's groups
    const int at = carry + inc.x - n, at_long = carry_long + inc.y - n_long;
    if (gi < n_groups)
      w.groups[gi] =
          GroupInfo{at, n_row, n_sink, n_tail, at_long, at - at_long, x.start, x.E_m, x.Fp, x.ctx};
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
          emit_chunk(w.tasks, gi, f.start, f.e_m, C, kRowPart, j, f.task_begin, f.long_begin,
                     short_at);
        else if (j < f.n_row + f.n_sink)
          emit_chunk(w.tasks, gi, 0, f.fp, C, kSink, j - f.n_row, f.task_begin + f.n_row,
                     f.long_begin + l_row, short_at + f.n_row - l_row);
        else
          emit_chunk(w.tasks, gi, f.e_m, f.ctx, C, kTail, j - f.n_row - f.n_sink,
                     f.task_begin + f.n_row + f.n_sink, f.long_begin + l_row + l_sink,
                     short_at + f.n_row - l_row + f.n_sink - l_sink);
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
    if (p.kv_tokens_read != nullptr)
      p.kv_tokens_read[s] = dec ? total : static_cast<int64_t>(max(ctx, 0)) * Hkv;
    if (p.counters != nullptr && dec) {
      atomicAdd(&p.counters->kv_tokens_read, static_cast<unsigned long long>(total));
      atomicAdd(&p.counters->kv_tokens_full, static_cast<unsigned long long>(ctx) * Hkv);
    }
  }
}

__global__ void __launch_bounds__(kScheduleThreads) schedule_kernel(MacCudaParams p, WsLayout w) {
  schedule_body<false>(p, w, MacForceHits{});
}
// Benchmark hook (mac_decode_forced_hits): the same with every eligible head's decision drawn.
__global__ void __launch_bounds__(kScheduleThreads)
    schedule_forced_kernel(MacCudaParams p, WsLayout w, MacForceHits force) {
  schedule_body<true>(p, w, force);
}

}  // namespace

int launch_schedule(const MacCudaParams& p, const WsLayout& w, const MacForceHits* force,
                    cudaStream_t st) {
  if (force != nullptr)
    schedule_forced_kernel<<<1, kScheduleThreads, 0, st>>>(p, w, *force);
  else
    schedule_kernel<<<1, kScheduleThreads, 0, st>>>(p, w);
  return detail::last_error();
}

}  // namespace macserve::kernels::cuda::mac_detail
