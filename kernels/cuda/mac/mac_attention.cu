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
#include "macserve/kernels/cuda/mac_attention_cuda.h"

namespace macserve::kernels::cuda {
namespace {

constexpr int kPartialThreads = 128;
constexpr int kTile = 64;           // keys per shared-memory tile in the partial kernel
constexpr int kMatchThreads = 128;  // 16 candidates in flight, 8 lanes (16 B each) per candidate
constexpr int kScheduleThreads = 1024;

enum TaskKind : int { kRowPart = 0, kSink = 1, kTail = 2 };

struct GroupInfo {
  int32_t task_begin;
  int32_t n_row, n_sink, n_tail;
};

// Workspace layout (every part 256-byte aligned).
struct WsLayout {
  int32_t* task_count;  // [1]
  GroupInfo* groups;    // [S * Hkv]
  int64_t* group_reads; // [S * Hkv]
  int32_t* head_start;  // [S * Hq]
  int4* tasks;          // [max_tasks] {group index, begin, end, kind}
  float* part_o;        // [max_tasks, G, D]
  float* part_lse;      // [max_tasks, G]
  int64_t max_tasks;
  int64_t bytes;
};

inline int64_t align256(int64_t x) { return (x + 255) / 256 * 256; }

int64_t max_tasks_for(int64_t S, int64_t Hkv, int64_t max_ctx, int32_t chunk) {
  return S * Hkv * ((max_ctx + chunk - 1) / chunk + 3);
}

WsLayout layout_ws(void* base, int64_t S, int64_t Hq, int64_t Hkv, int64_t D, int64_t max_ctx, int32_t chunk) {
  WsLayout w{};
  w.max_tasks = max_tasks_for(S, Hkv, max_ctx, chunk);
  const int64_t G = Hq / Hkv;
  char* p = static_cast<char*>(base);
  int64_t off = 0;
  auto take = [&](int64_t bytes) {
    char* r = p == nullptr ? nullptr : p + off;
    off += align256(bytes);
    return r;
  };
  w.task_count = reinterpret_cast<int32_t*>(take(sizeof(int32_t)));
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
template <bool kBf16>
__device__ __forceinline__ void ring_set(void* base, int64_t i, float v) {
  if constexpr (kBf16) static_cast<__nv_bfloat16*>(base)[i] = __float2bfloat16(v);
  else static_cast<float*>(base)[i] = v;
}

// Whether sequence s decodes in this launch, and its token row (mixed steps: token_index / modes).
__device__ __forceinline__ bool decodes(const MacCudaParams& p, int s) {
  return p.context_lens[s] > 0 && (p.modes == nullptr || p.modes[s] == kMacDecode);
}
__device__ __forceinline__ int64_t token_of(const MacCudaParams& p, int s) {
  return p.token_index != nullptr ? p.token_index[s] : s;
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
template <bool kBf16, int D>
__global__ void __launch_bounds__(kMatchThreads) match_kernel(MacCudaParams p, int32_t* head_start) {
  const int h = blockIdx.x, s = blockIdx.y, tid = threadIdx.x;
  if (!decodes(p, s)) return;  // inactive (padded) row, or an exact sequence of a mixed step
  const int ctx = p.context_lens[s];
  const int Hq = static_cast<int>(p.num_q_heads);
  const int G = Hq / static_cast<int>(p.layout.num_kv_heads);
  const int m = ctx - 1;
  const int M = static_cast<int>(p.cfg.window), r = static_cast<int>(p.cfg.band), F = static_cast<int>(p.cfg.sink);
  const int slot = p.ring_slots[s];
  const int begin = max(max(0, m - M), p.ring_valid_from[s]);
  const bool eligible = slot >= 0 && m >= p.cfg.gen_min && begin < m;
  const float tc = fminf(1.0f, fmaxf(0.0f, isnan(p.cfg.threshold) ? 1.0f : p.cfg.threshold));
  const float omt = 1.0f - tc;
  const float thr = static_cast<float>(2.0 * D * static_cast<double>(omt) * omt);

  float best_d = INFINITY;
  int best_pos = INT_MAX;
  if (eligible) {
    constexpr int kElems = D >= 64 ? 8 : D / 8;  // per lane and chunk (8 lanes per candidate)
    constexpr int kChunkDims = 8 * kElems;       // 64 (32 when D is 32)
    constexpr int kChunks = D / kChunkDims;
    const int lane8 = tid & 7, cand = tid >> 3;  // 16 candidate groups of 8 lanes
    float q[kChunks][kElems];
    const float* qp = p.q_pre + (token_of(p, s) * Hq + h) * D;
#pragma unroll
    for (int c = 0; c < kChunks; ++c)
#pragma unroll
      for (int e = 0; e < kElems; e += 4) {
        const float4 a = *reinterpret_cast<const float4*>(qp + c * kChunkDims + lane8 * kElems + e);
        q[c][e] = a.x, q[c][e + 1] = a.y, q[c][e + 2] = a.z, q[c][e + 3] = a.w;
      }
    const int64_t slot_row0 = static_cast<int64_t>(slot) * M;
    for (int base = begin; base < m; base += 16) {  // uniform trip count: shuffles see full warps
      const int x = base + cand;
      const int64_t row = (slot_row0 + x % M) * Hq + h;
      bool active = x < m && p.ring.lse[x < m ? row : 0] > -INFINITY;  // invalid rows never win
      float acc = 0.0f;
#pragma unroll
      for (int c = 0; c < kChunks; ++c) {
        if (active) {
          float v[kElems];
          load_n<kBf16, kElems>(p.ring.q, row * D + c * kChunkDims + lane8 * kElems, v);
#pragma unroll
          for (int i = 0; i < kElems; ++i) {
            const float df = q[c][i] - v[i];
            acc = fmaf(df, df, acc);
          }
        }
        // reduce the partial sum over the candidate's 8 lanes (aligned groups of 8)
        float t = acc;
        t += __shfl_xor_sync(0xffffffffu, t, 1);
        t += __shfl_xor_sync(0xffffffffu, t, 2);
        t += __shfl_xor_sync(0xffffffffu, t, 4);
        if (c + 1 < kChunks) {
          // early exit: the partial sum is a lower bound; at or above the threshold it cannot hit
          // (and a candidate that cannot hit never decides the outcome)
          if (active && t >= thr) {
            if (better(t, x, best_d, best_pos)) best_d = t, best_pos = x;
            active = false;
          }
        } else if (active) {
          if (better(t, x, best_d, best_pos)) best_d = t, best_pos = x;
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
      for (int w = 1; w < kMatchThreads / 32; ++w)
        if (better(sd[w], sp[w], best_d, best_pos)) best_d = sd[w], best_pos = sp[w];
  }
  if (tid != 0) return;
  MacHeadDecision dec{static_cast<int8_t>(eligible), 0, -1, best_d};
  if (eligible) {
    dec.hit = best_pos != INT_MAX && best_d < thr;
    dec.matched = dec.hit ? best_pos : -1;
    if (p.force.hit_rate >= 0.0f) {  // benchmark-only override
      const uint32_t who = p.force.clustered ? static_cast<uint32_t>(h / G) : static_cast<uint32_t>(h);
      const float u = static_cast<float>(hash3(p.force.seed + static_cast<uint32_t>(m), static_cast<uint32_t>(s), who) >> 8) *
                      (1.0f / 16777216.0f);
      const int x = m - p.force.lag;
      const bool ok = x >= begin && x < m &&
                      p.ring.lse[(static_cast<int64_t>(slot) * M + x % M) * Hq + h] > -INFINITY;
      dec.hit = u < p.force.hit_rate && ok;
      dec.matched = dec.hit ? x : -1;
    }
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
  head_start[static_cast<int64_t>(s) * Hq + h] = start;
  if (p.counters != nullptr) {
    atomicAdd(&p.counters->heads, 1ull);
    if (eligible) atomicAdd(&p.counters->eligible_heads, 1ull);
    if (dec.hit) atomicAdd(&p.counters->hit_heads, 1ull);
  }
}

// ---- 2. schedule ------------------------------------------------------------------------------
__device__ __forceinline__ int chunks_of(int b, int e, int C) { return e > b ? (e - 1) / C - b / C + 1 : 0; }

__device__ void emit_chunks(int4* tasks, int at, int gi, int b, int e, int C, int kind) {
  if (e <= b) return;
  for (int k = b / C; k * C < e; ++k) tasks[at++] = make_int4(gi, max(b, k * C), min(e, (k + 1) * C), kind);
}

__global__ void __launch_bounds__(kScheduleThreads) schedule_kernel(MacCudaParams p, WsLayout w) {
  __shared__ int scan[kScheduleThreads];
  __shared__ int carry;
  const int tid = threadIdx.x;
  const int Hkv = static_cast<int>(p.layout.num_kv_heads), Hq = static_cast<int>(p.num_q_heads), G = Hq / Hkv;
  const int n_groups = static_cast<int>(p.num_seqs) * Hkv;
  const int r = static_cast<int>(p.cfg.band), F = static_cast<int>(p.cfg.sink), C = p.chunk_tokens;
  if (tid == 0) carry = 0;
  __syncthreads();
  for (int round = 0; round < n_groups; round += kScheduleThreads) {
    const int gi = round + tid;
    int n_row = 0, n_sink = 0, n_tail = 0, start = 0, E_m = 0, Fp = 0, ctx = 0;
    if (gi < n_groups) {
      const int s = gi / Hkv, g = gi % Hkv;
      ctx = decodes(p, s) ? p.context_lens[s] : 0;
      if (ctx > 0) {
        const int m = ctx - 1;
        E_m = max(m + 1 - r, 0);
        Fp = min(F, E_m);
        start = E_m;
        for (int h = 0; h < G; ++h) start = min(start, w.head_start[static_cast<int64_t>(s) * Hq + g * G + h]);
        n_row = chunks_of(start, E_m, C);
        n_sink = chunks_of(0, Fp, C);
        n_tail = chunks_of(E_m, m + 1, C);
        w.group_reads[gi] = static_cast<int64_t>(m + 1 - start) + Fp;
      } else {
        w.group_reads[gi] = 0;
      }
    }
    const int n = n_row + n_sink + n_tail;
    scan[tid] = n;
    __syncthreads();
    for (int o = 1; o < kScheduleThreads; o <<= 1) {  // inclusive Hillis-Steele scan
      const int v = tid >= o ? scan[tid - o] : 0;
      __syncthreads();
      scan[tid] += v;
      __syncthreads();
    }
    const int at = carry + scan[tid] - n;
    if (gi < n_groups) {
      w.groups[gi] = GroupInfo{at, n_row, n_sink, n_tail};
      if (ctx > 0) {
        emit_chunks(w.tasks, at, gi, start, E_m, C, kRowPart);
        emit_chunks(w.tasks, at + n_row, gi, 0, Fp, C, kSink);
        emit_chunks(w.tasks, at + n_row + n_sink, gi, E_m, ctx, C, kTail);
      }
    }
    __syncthreads();
    if (tid == kScheduleThreads - 1) carry += scan[tid];
    __syncthreads();
  }
  if (tid == 0) *w.task_count = carry;
  // per-sequence and aggregate KV telemetry
  for (int s = tid; s < p.num_seqs; s += kScheduleThreads) {
    int64_t total = 0;
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

// ---- 3. split-KV partial attention of one KV group over [begin, end) -------------------------
// Shared memory of one CTA: the group's G queries (pre-scaled), a K tile (rows padded by 16 B so
// that threads reading different rows hit different banks), a V tile, the tile's scores.
template <int D, int G>
struct PartialSmem {
  float q[G][D];
  __nv_bfloat16 k[kTile][D + 8];
  __nv_bfloat16 v[kTile][D];
  float sc[G][kTile];
  float m_run[G], l_run[G], alpha[G];
  int hstart[G];
};

// Attention of the group's heads over keys [b, e) with per-head mask j >= hstart[h]; leaves the
// normalised output in acc (this thread's dim d = tid % D for heads h = tid / D + k * (128 / D))
// and m_run / l_run in shared memory.
template <int D, int G>
__device__ void attend_range(PartialSmem<D, G>& sm, const __nv_bfloat16* kc, const __nv_bfloat16* vc,
                             const int32_t* table, const PagedKvLayout& L, int kvh, int b, int e,
                             float (&acc)[(G + kPartialThreads / D - 1) / (kPartialThreads / D)]) {
  constexpr int kTpd = kPartialThreads / D;  // threads per dim (1 at D = 128, 2 at D = 64)
  constexpr int kHpt = (G + kTpd - 1) / kTpd;
  constexpr int kVec = D / 8;                 // 16-byte pieces per row
  const int tid = threadIdx.x;
  const int d = tid % D, h0 = tid / D;
#pragma unroll
  for (int i = 0; i < kHpt; ++i) acc[i] = 0.0f;
  if (tid < G) sm.m_run[tid] = -INFINITY, sm.l_run[tid] = 0.0f;
  const int64_t bstride = L.num_kv_heads * L.block_size * D, hoff = static_cast<int64_t>(kvh) * L.block_size * D;
  for (int t0 = b; t0 < e; t0 += kTile) {
    const int n = min(kTile, e - t0);
    __syncthreads();  // previous tile consumed (and m_run initialised)
    for (int idx = tid; idx < n * kVec; idx += kPartialThreads) {
      const int j = idx / kVec, c = idx % kVec;
      const int tok = t0 + j;
      const int64_t off = static_cast<int64_t>(table[tok >> 4]) * bstride + hoff + (tok & 15) * D + c * 8;
      *reinterpret_cast<uint4*>(&sm.k[j][c * 8]) = *reinterpret_cast<const uint4*>(kc + off);
      *reinterpret_cast<uint4*>(&sm.v[j][c * 8]) = *reinterpret_cast<const uint4*>(vc + off);
    }
    __syncthreads();
    {  // scores: thread -> key j = tid % 64, heads tid / 64 + 2k
      const int j = tid % kTile;
      for (int h = tid / kTile; h < G; h += kPartialThreads / kTile) {
        float s = -INFINITY;
        if (j < n && t0 + j >= sm.hstart[h]) {
          float dot = 0.0f;
#pragma unroll
          for (int c = 0; c < kVec; ++c) {
            const uint4 kv = *reinterpret_cast<const uint4*>(&sm.k[j][c * 8]);
            const uint32_t wds[4] = {kv.x, kv.y, kv.z, kv.w};
#pragma unroll
            for (int i = 0; i < 4; ++i) {
              dot = fmaf(sm.q[h][c * 8 + 2 * i], bf16_bits_to_float(wds[i] & 0xffffu), dot);
              dot = fmaf(sm.q[h][c * 8 + 2 * i + 1], bf16_bits_to_float(wds[i] >> 16), dot);
            }
          }
          s = dot;
        }
        sm.sc[h][j] = s;
      }
    }
    __syncthreads();
    {  // online softmax: warp w owns heads w, w + 4
      const int warp = tid >> 5, lane = tid & 31;
      for (int h = warp; h < G; h += kPartialThreads / 32) {
        const float s0 = sm.sc[h][lane], s1 = sm.sc[h][lane + 32];
        const float mx = detail::warp_max(fmaxf(s0, s1));
        const float m_old = sm.m_run[h];
        const float m_new = fmaxf(m_old, mx);
        float p0 = 0.0f, p1 = 0.0f, alpha = 1.0f;
        if (m_new > -INFINITY) {
          p0 = __expf(s0 - m_new);
          p1 = __expf(s1 - m_new);
          alpha = __expf(m_old - m_new);
        }
        const float sum = detail::warp_sum(p0 + p1);
        sm.sc[h][lane] = p0;
        sm.sc[h][lane + 32] = p1;
        __syncwarp();
        if (lane == 0) {
          sm.alpha[h] = alpha;
          sm.m_run[h] = m_new;
          sm.l_run[h] = sm.l_run[h] * alpha + sum;
        }
      }
    }
    __syncthreads();
#pragma unroll
    for (int i = 0; i < kHpt; ++i) {  // P x V
      const int h = h0 + i * kTpd;
      if (h < G) {
        float a = acc[i] * sm.alpha[h];
        for (int j = 0; j < n; ++j) a = fmaf(sm.sc[h][j], __bfloat162float(sm.v[j][d]), a);
        acc[i] = a;
      }
    }
  }
  __syncthreads();
}

template <int D, int G>
__global__ void __launch_bounds__(kPartialThreads) partial_kernel(MacCudaParams p, WsLayout w) {
  constexpr int kTpd = kPartialThreads / D;
  constexpr int kHpt = (G + kTpd - 1) / kTpd;
  __shared__ PartialSmem<D, G> sm;
  const int tid = threadIdx.x, d = tid % D, h0 = tid / D;
  const int Hkv = static_cast<int>(p.layout.num_kv_heads), Hq = static_cast<int>(p.num_q_heads);
  const int count = *w.task_count;
  const auto* kc = static_cast<const __nv_bfloat16*>(p.k_cache);
  const auto* vc = static_cast<const __nv_bfloat16*>(p.v_cache);
  for (int t = blockIdx.x; t < count; t += gridDim.x) {
    const int4 task = w.tasks[t];
    const int gi = task.x, s = gi / Hkv, g = gi % Hkv;
    __syncthreads();  // the previous task's shared state is no longer read
    const float* q = p.q_post + (token_of(p, s) * Hq + g * G) * D;
    for (int i = tid; i < G * D; i += kPartialThreads) sm.q[i / D][i % D] = q[i] * p.scale;
    if (tid < G)
      sm.hstart[tid] = task.w == kRowPart ? w.head_start[static_cast<int64_t>(s) * Hq + g * G + tid] : 0;
    float acc[kHpt];
    attend_range<D, G>(sm, kc, vc, p.block_tables + static_cast<int64_t>(s) * p.max_blocks_per_seq, p.layout, g,
                       task.y, task.z, acc);
#pragma unroll
    for (int i = 0; i < kHpt; ++i) {
      const int h = h0 + i * kTpd;
      if (h < G) {
        const float l = sm.l_run[h];
        w.part_o[(static_cast<int64_t>(t) * G + h) * D + d] = l > 0.0f ? acc[i] / l : 0.0f;
        if (d == 0) w.part_lse[static_cast<int64_t>(t) * G + h] = l > 0.0f ? sm.m_run[h] + logf(l) : -INFINITY;
      }
    }
  }
}

// ---- 4. merge + ring write + output -----------------------------------------------------------
__device__ __forceinline__ void merge_into(float& o, float& lse, float ob, float lb) {
  if (!(lb > -INFINITY)) return;
  if (!(lse > -INFINITY)) {
    o = ob;
    lse = lb;
    return;
  }
  const float mx = fmaxf(lse, lb);
  const float wa = expf(lse - mx), wb = expf(lb - mx);
  o = (wa * o + wb * ob) / (wa + wb);
  lse = mx + logf(wa + wb);
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
  int t = gi.task_begin;
  for (int k = 0; k < gi.n_row; ++k, ++t)
    merge_into(o, lse, w.part_o[(static_cast<int64_t>(t) * G + hl) * D + d], w.part_lse[static_cast<int64_t>(t) * G + hl]);
  const int64_t qi = (token_of(p, s) * Hq + h) * D + d;
  if (slot >= 0) {
    __syncthreads();  // row p may share row m's ring slot (p = m - M): every read precedes the write
    const int64_t row = (static_cast<int64_t>(slot) * M + m % M) * Hq + h;
    const bool empty = !(lse > -INFINITY);
    ring_set<kBf16>(p.ring.q, row * D + d, p.q_pre[qi]);
    ring_set<kBf16>(p.ring.o, row * D + d, empty ? 0.0f : o);
    if (d == 0) p.ring.lse[row] = empty ? -INFINITY : lse;
  }
  for (int k = 0; k < gi.n_sink + gi.n_tail; ++k, ++t)
    merge_into(o, lse, w.part_o[(static_cast<int64_t>(t) * G + hl) * D + d], w.part_lse[static_cast<int64_t>(t) * G + hl]);
  detail::store(p.out, p.out_bf16, qi, o);
}

// ---- prefill rows -----------------------------------------------------------------------------
template <int D, int G, bool kBf16>
__global__ void __launch_bounds__(kPartialThreads) prefill_rows_kernel(MacPrefillRowsParams p) {
  constexpr int kTpd = kPartialThreads / D;
  constexpr int kHpt = (G + kTpd - 1) / kTpd;
  __shared__ PartialSmem<D, G> sm;
  const int tok = blockIdx.y, g = blockIdx.x, tid = threadIdx.x, d = tid % D, h0 = tid / D;
  int lo = 0, hi = static_cast<int>(p.num_seqs) - 1;  // sequence of the token: last s with start <= tok
  while (lo < hi) {
    const int mid = (lo + hi + 1) / 2;
    if (p.query_start[mid] <= tok) lo = mid;
    else hi = mid - 1;
  }
  const int s = lo;
  const int slot = p.ring_slots[s];
  if (p.modes[s] != kMacExact || slot < 0) return;
  const int n = p.query_start[s + 1] - p.query_start[s];
  const int pos = p.context_lens[s] - n + (tok - p.query_start[s]);
  const int Hq = static_cast<int>(p.num_q_heads), M = static_cast<int>(p.cfg.window);
  if (pos < p.rows_from[s] || pos < p.context_lens[s] - M) return;  // a later token of the chunk owns the row
  const int E = max(pos + 1 - static_cast<int>(p.cfg.band), 0);
  const int b = min(static_cast<int>(p.cfg.sink), E);
  const float* q = p.q_post + (static_cast<int64_t>(tok) * Hq + g * G) * D;
  for (int i = tid; i < G * D; i += kPartialThreads) sm.q[i / D][i % D] = q[i] * p.scale;
  if (tid < G) sm.hstart[tid] = 0;
  float acc[kHpt];
  attend_range<D, G>(sm, static_cast<const __nv_bfloat16*>(p.k_cache), static_cast<const __nv_bfloat16*>(p.v_cache),
                     p.block_tables + static_cast<int64_t>(s) * p.max_blocks_per_seq, p.layout, g, b, E, acc);
#pragma unroll
  for (int i = 0; i < kHpt; ++i) {
    const int h = h0 + i * kTpd;
    if (h < G) {
      const int hq = g * G + h;
      const float l = sm.l_run[h];
      const int64_t row = (static_cast<int64_t>(slot) * M + pos % M) * Hq + hq;
      ring_set<kBf16>(p.ring.q, row * D + d, p.q_pre[(static_cast<int64_t>(tok) * Hq + hq) * D + d]);
      ring_set<kBf16>(p.ring.o, row * D + d, l > 0.0f ? acc[i] / l : 0.0f);
      if (d == 0) p.ring.lse[row] = l > 0.0f ? sm.m_run[h] + logf(l) : -INFINITY;
    }
  }
}

int num_sms() {
  static int n = [] {
    int dev = 0, v = 0;
    cudaGetDevice(&dev);
    cudaDeviceGetAttribute(&v, cudaDevAttrMultiProcessorCount, dev);
    return v > 0 ? v : 1;
  }();
  return n;
}

template <int D, int G>
void launch_partial(const MacCudaParams& p, const WsLayout& w, cudaStream_t st) {
  // persistent CTAs over the task list; the real count is read on the device
  const int64_t grid = std::min<int64_t>(w.max_tasks, static_cast<int64_t>(num_sms()) * 8);
  partial_kernel<D, G><<<static_cast<unsigned>(std::max<int64_t>(grid, 1)), kPartialThreads, 0, st>>>(p, w);
}

template <int D>
void dispatch_partial(const MacCudaParams& p, const WsLayout& w, int G, cudaStream_t st) {
  switch (G) {
    case 1: return launch_partial<D, 1>(p, w, st);
    case 2: return launch_partial<D, 2>(p, w, st);
    case 3: return launch_partial<D, 3>(p, w, st);
    case 4: return launch_partial<D, 4>(p, w, st);
    case 5: return launch_partial<D, 5>(p, w, st);
    case 6: return launch_partial<D, 6>(p, w, st);
    case 7: return launch_partial<D, 7>(p, w, st);
    default: return launch_partial<D, 8>(p, w, st);
  }
}

template <int D, bool kBf16>
void launch_rows(const MacPrefillRowsParams& p, int G, cudaStream_t st) {
  const dim3 grid(static_cast<unsigned>(p.layout.num_kv_heads), static_cast<unsigned>(p.num_tokens));
  switch (G) {
    case 1: prefill_rows_kernel<D, 1, kBf16><<<grid, kPartialThreads, 0, st>>>(p); break;
    case 2: prefill_rows_kernel<D, 2, kBf16><<<grid, kPartialThreads, 0, st>>>(p); break;
    case 3: prefill_rows_kernel<D, 3, kBf16><<<grid, kPartialThreads, 0, st>>>(p); break;
    case 4: prefill_rows_kernel<D, 4, kBf16><<<grid, kPartialThreads, 0, st>>>(p); break;
    case 5: prefill_rows_kernel<D, 5, kBf16><<<grid, kPartialThreads, 0, st>>>(p); break;
    case 6: prefill_rows_kernel<D, 6, kBf16><<<grid, kPartialThreads, 0, st>>>(p); break;
    case 7: prefill_rows_kernel<D, 7, kBf16><<<grid, kPartialThreads, 0, st>>>(p); break;
    default: prefill_rows_kernel<D, 8, kBf16><<<grid, kPartialThreads, 0, st>>>(p); break;
  }
}

}  // namespace

bool mac_supported(int64_t head_dim, int64_t group, int64_t block_size) {
  return (head_dim == 32 || head_dim == 64 || head_dim == 128) && group >= 1 && group <= 8 && block_size == 16;
}

int64_t mac_workspace_bytes(int64_t num_seqs, int64_t num_q_heads, int64_t num_kv_heads, int64_t head_dim,
                            int64_t max_context_len, int32_t chunk_tokens) {
  return layout_ws(nullptr, num_seqs, num_q_heads, num_kv_heads, head_dim, max_context_len, chunk_tokens).bytes;
}

int32_t mac_pick_chunk_tokens(int64_t num_seqs, int64_t num_kv_heads, int64_t max_context_len, int num_sms) {
  const int64_t target = 2LL * num_sms * 8;  // two waves of the persistent grid
  const int64_t groups = std::max<int64_t>(1, num_seqs * num_kv_heads);
  int64_t c = (groups * max_context_len + target - 1) / target;
  c = std::max<int64_t>(64, (c + 15) / 16 * 16);
  return static_cast<int32_t>(std::min<int64_t>(c, 1 << 20));
}

int mac_decode(const MacCudaParams& p, const MacWorkspace& ws, int64_t max_context_len, Stream stream) {
  if (p.num_seqs == 0) return 0;
  const auto st = detail::as_stream(stream);
  const int64_t Hq = p.num_q_heads, Hkv = p.layout.num_kv_heads, D = p.layout.head_dim;
  const int G = static_cast<int>(Hq / Hkv);
  if (!mac_supported(D, G, p.layout.block_size) || p.chunk_tokens < 16 || p.chunk_tokens % 16 != 0)
    return static_cast<int>(cudaErrorInvalidValue);
  const WsLayout w = layout_ws(ws.base, p.num_seqs, Hq, Hkv, D, max_context_len, p.chunk_tokens);
  if (w.bytes > ws.bytes) return static_cast<int>(cudaErrorInvalidValue);
  const dim3 heads_grid(static_cast<unsigned>(Hq), static_cast<unsigned>(p.num_seqs));
  if (D == 32) {
    if (p.cfg.ring_bf16) match_kernel<true, 32><<<heads_grid, kMatchThreads, 0, st>>>(p, w.head_start);
    else match_kernel<false, 32><<<heads_grid, kMatchThreads, 0, st>>>(p, w.head_start);
  } else if (D == 64) {
    if (p.cfg.ring_bf16) match_kernel<true, 64><<<heads_grid, kMatchThreads, 0, st>>>(p, w.head_start);
    else match_kernel<false, 64><<<heads_grid, kMatchThreads, 0, st>>>(p, w.head_start);
  } else {
    if (p.cfg.ring_bf16) match_kernel<true, 128><<<heads_grid, kMatchThreads, 0, st>>>(p, w.head_start);
    else match_kernel<false, 128><<<heads_grid, kMatchThreads, 0, st>>>(p, w.head_start);
  }
  schedule_kernel<<<1, kScheduleThreads, 0, st>>>(p, w);
  if (D == 32) dispatch_partial<32>(p, w, G, st);
  else if (D == 64) dispatch_partial<64>(p, w, G, st);
  else dispatch_partial<128>(p, w, G, st);
  if (p.cfg.ring_bf16) merge_kernel<true><<<heads_grid, static_cast<unsigned>(D), 0, st>>>(p, w);
  else merge_kernel<false><<<heads_grid, static_cast<unsigned>(D), 0, st>>>(p, w);
  return detail::last_error();
}

int mac_prefill_rows(const MacPrefillRowsParams& p, Stream stream) {
  if (p.num_tokens == 0 || p.num_seqs == 0) return 0;
  const auto st = detail::as_stream(stream);
  const int64_t D = p.layout.head_dim;
  const int G = static_cast<int>(p.num_q_heads / p.layout.num_kv_heads);
  if (!mac_supported(D, G, p.layout.block_size)) return static_cast<int>(cudaErrorInvalidValue);
  if (D == 32) {
    if (p.cfg.ring_bf16) launch_rows<32, true>(p, G, st);
    else launch_rows<32, false>(p, G, st);
  } else if (D == 64) {
    if (p.cfg.ring_bf16) launch_rows<64, true>(p, G, st);
    else launch_rows<64, false>(p, G, st);
  } else {
    if (p.cfg.ring_bf16) launch_rows<128, true>(p, G, st);
    else launch_rows<128, false>(p, G, st);
  }
  return detail::last_error();
}

}  // namespace macserve::kernels::cuda
