// MAC-Attention CUDA internals shared by the kernel files (not a public header): the step's
// workspace layout, the device helpers several kernels use, the one head_dim dispatch, and the
// launchers of the kernels. A file per kernel of a decode step, in launch order:
//   mac_match.cu      1. nearest ring row per head, a share of the window per CTA
//   mac_schedule.cu   2. decisions, chunk size, the task list (one CTA)
//   mac_partial.cuh   3. split-KV partials over the task list (persistent CTAs), and the prefill
//                     rows; instantiated per head_dim in mac_partial_d{32,64,128}.cu so the heavy
//                     kernels compile in parallel
//   mac_merge.cu      4. chunks (+) row summary -> ring row and output
// mac_attention.cu is the host side of mac_attention_cuda.h (workspace, plan, the launches in
// order); mac_audit.cu the device audit. Interface and semantics: mac_attention_cuda.h; the CPU
// oracle is kernels/cpu/mac_attention.cc (decisions agree with it except at near-ties: fp32 sums
// here, double there).
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <type_traits>

#include "macserve/kernels/cuda/mac_attention_cuda.h"
#include "macserve/kernels/cuda/mac_force_hits_cuda.h"

namespace macserve::kernels::cuda::mac_detail {

enum TaskKind : int { kRowPart = 0, kSink = 1, kTail = 2 };

// A group's chunks own partial-output slots [task_begin, task_begin + n_row + n_sink + n_tail) in
// that order. Run order: its long chunks from long_begin; its short ones after every long chunk
// and the short_before short chunks of the groups before it. Its ranges: row part [start, e_m),
// sink [0, fp), tail [e_m, ctx).
struct GroupInfo {
  int32_t task_begin;
  int32_t n_row, n_sink, n_tail;
  int32_t long_begin, short_before;
  int32_t start, e_m, fp, ctx;
};

// Match CTAs per head at most (a small batch splits each head's ring scan over several CTAs).
constexpr int kMaxMatchSplits = 8;

// Workspace layout (every part 256-byte aligned).
struct WsLayout {
  int32_t* task_count;  // [1] tasks of the step (written by the schedule kernel)
  int32_t*
      task_next;  // [1] next task to take (zeroed by the schedule kernel, taken by the partials)
  // [S * Hq * kMaxMatchSplits] each match CTA's best candidate, (distance bits << 32) | position
  // (distances are >= 0, so the integer order is the (distance, position) order); ~0: none
  unsigned long long* match_best;
  int32_t match_splits;  // match CTAs per head this step
  int32_t slots;         // resident partial CTAs (adaptive chunks plan for them)
  GroupInfo* groups;     // [S * Hkv]
  int64_t* group_reads;  // [S * Hkv]
  int32_t* head_start;   // [S * Hq]
  int4* tasks;           // [max_tasks] in run order: {group index, begin, end, slot << 2 | kind}
  float* part_o;         // [max_tasks, G, D]
  float* part_lse;       // [max_tasks, G] natural log
  int64_t max_tasks;
  int64_t bytes;
};

// Token row of decode sequence s (mixed steps: token_index).
__device__ __forceinline__ int64_t token_of(const MacCudaParams& p, int s) {
  return p.token_index != nullptr ? p.token_index[s] : s;
}

__device__ __forceinline__ void ring_store(void* base, bool bf16, int64_t i, float v) {
  if (bf16)
    static_cast<__nv_bfloat16*>(base)[i] = __float2bfloat16(v);
  else
    static_cast<float*>(base)[i] = v;
}

__device__ __forceinline__ float bf16_bits_to_float(uint32_t bits16) {
  return __uint_as_float(bits16 << 16);
}

// Whether sequence s decodes in this launch (context_lens > 0; mixed steps: modes).
__device__ __forceinline__ bool decodes(const MacCudaParams& p, int s) {
  return p.context_lens[s] > 0 && (p.modes == nullptr || p.modes[s] == kMacDecode);
}

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

// f(std::integral_constant<int, D>{}) for a head_dim D of 32, 64 or 128, so a kernel templated on D
// is picked at run time; `otherwise` for any other D. Every launcher templated on D goes through
// it.
template <class R, class F>
R with_head_dim(int64_t D, R otherwise, F&& f) {
  switch (D) {
    case 32:
      return f(std::integral_constant<int, 32>{});
    case 64:
      return f(std::integral_constant<int, 64>{});
    case 128:
      return f(std::integral_constant<int, 128>{});
    default:
      return otherwise;
  }
}

// ---- launchers (each returns a cudaError_t value, 0 = ok) ---------------------------------------
// mac_match.cu: match CTAs per head for this step (small batches split each head's window), and
// the match launch over w.match_splits of them.
int32_t match_splits_for(const MacCudaParams& p);
int launch_match(const MacCudaParams& p, const WsLayout& w, cudaStream_t st);
// mac_schedule.cu; force: the benchmark hook's forced decisions (mac_force_hits_cuda.h), or null.
int launch_schedule(const MacCudaParams& p, const WsLayout& w, const MacForceHits* force,
                    cudaStream_t st);
// mac_partial.cuh, instantiated for D = 32, 64, 128 by mac_partial_d<D>.cu: the partials and the
// prefill rows for any group size G of 1 to 8, and the partial kernel's resident CTAs (its grid).
template <int D>
int launch_partials(const MacCudaParams& p, const WsLayout& w, int G, cudaStream_t st);
template <int D>
int launch_rows(const MacPrefillRowsParams& p, int G, cudaStream_t st);
template <int D>
int partial_slots(int G);
// mac_merge.cu
int launch_merge(const MacCudaParams& p, const WsLayout& w, cudaStream_t st);

}  // namespace macserve::kernels::cuda::mac_detail
