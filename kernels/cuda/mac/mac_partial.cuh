// MAC-Attention decode, launch 3 of 4: the split-KV partials; and the prefill rows, which run the
// same page loop (mac_attention_cuda.h, mac_common.cuh). Included only by mac_partial_d<D>.cu, one
// file per head_dim so the heavy instantiations compile in parallel. Not a public header.
//
// The partials run the full-attention decode kernel's page pipeline (attention/
// paged_decode_impl.cuh, attend_keys): 4 warps per CTA, a 3-stage cp.async ring per warp, the
// group's queries as a tensor-core operand in registers. A group that misses therefore reads its
// keys exactly as paged_decode does; MAC adds only the per-head lower bound of row-part chunks.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "../attention/paged_decode_impl.cuh"
#include "../cuda_util.cuh"
#include "mac_common.cuh"

namespace macserve::kernels::cuda::mac_detail {

using detail::kLn2;
using detail::kLog2e;
constexpr int kPartialThreads = decode_detail::kWarps * 32;

// Split-KV partial attention: each CTA takes tasks {group, begin, end, slot and kind} from the
// list in run order (an atomic counter; long chunks first, so short ones balance the end) and
// writes the group's (o normalised, lse natural log) for the chunk to its slot.
template <int D, int G>
__global__ void __launch_bounds__(kPartialThreads) partial_kernel(MacCudaParams p, WsLayout w) {
  // 128-byte aligned although task_id comes first: a ring 16 bytes off the 128-byte lines made
  // every cp.async instruction two shared-memory wavefronts, each fetching its global sectors again
  // (ncu: twice the L2 sectors of decode_kernel for the same bytes, 15-24% slower)
  extern __shared__ __align__(128) uint4 smem[];
  __shared__ int task_id;
  const int Hkv = static_cast<int>(p.layout.num_kv_heads), Hq = static_cast<int>(p.num_q_heads);
  const int count = *w.task_count;
  for (;;) {
    if (threadIdx.x == 0) task_id = atomicAdd(w.task_next, 1);
    __syncthreads();
    const int t = task_id;
    __syncthreads();  // every thread has read task_id before thread 0 overwrites it
    if (t >= count) return;
    const int4 task = w.tasks[t];
    const int gi = task.x, s = gi / Hkv, g = gi % Hkv, kind = task.w & 3, slot = task.w >> 2;
    decode_detail::QFrag<D> qa;
    decode_detail::load_queries<D, G>(p.q_post + (token_of(p, s) * Hq + g * G) * D,
                                      p.scale * kLog2e, qa);
    int lo[G];
#pragma unroll
    for (int h = 0; h < G; ++h)
      lo[h] = kind == kRowPart ? w.head_start[static_cast<int64_t>(s) * Hq + g * G + h] : 0;
    auto store = [&](int h, int d, float o,
                     float lse2) {  // pointers formed here: fewer live registers
      w.part_o[(static_cast<int64_t>(slot) * G + h) * D + d] = o;
      if (d == 0) w.part_lse[static_cast<int64_t>(slot) * G + h] = lse2 * kLn2;
    };
    const int32_t* table = p.block_tables + static_cast<int64_t>(s) * p.max_blocks_per_seq;
    bool masked = false;  // a head's lower bound inside the chunk (else the mask is a no-op)
#pragma unroll
    for (int h = 0; h < G; ++h) masked = masked || lo[h] > task.y;
    if (masked)
      decode_detail::attend_keys<D, G, true>(smem, qa, table, p.k_cache, p.v_cache, Hkv, g, task.y,
                                             task.z, lo, store);
    else
      decode_detail::attend_keys<D, G, false>(smem, qa, table, p.k_cache, p.v_cache, Hkv, g, task.y,
                                              task.z, lo, store);
  }
}

// Prefill rows: one CTA per (KV group, token) of the step; the token's row for each of the group's
// heads, AS(q_post, [min(F, E), E)) with E = pos + 1 - r, when the token owns a ring row.
template <int D, int G>
__global__ void __launch_bounds__(kPartialThreads) prefill_rows_kernel(MacPrefillRowsParams p) {
  extern __shared__ __align__(128) uint4 smem[];
  const int tok = blockIdx.y, g = blockIdx.x;
  int lo_s = 0,
      hi_s = static_cast<int>(p.num_seqs) - 1;  // sequence of the token: last s with start <= tok
  while (lo_s < hi_s) {
    const int mid = (lo_s + hi_s + 1) / 2;
    if (p.query_start[mid] <= tok)
      lo_s = mid;
    else
      hi_s = mid - 1;
  }
  const int s = lo_s;
  const int slot = p.ring_slots[s];
  if (p.modes[s] != kMacExact || slot < 0) return;
  const int n = p.query_start[s + 1] - p.query_start[s];
  const int pos = p.context_lens[s] - n + (tok - p.query_start[s]);
  const int Hq = static_cast<int>(p.num_q_heads), Hkv = static_cast<int>(p.layout.num_kv_heads);
  const int M = static_cast<int>(p.cfg.window);
  if (pos < p.rows_from[s] || pos < p.context_lens[s] - M)
    return;  // a later token of the chunk owns the row
  const int E = max(pos + 1 - static_cast<int>(p.cfg.band), 0);
  const int b = min(static_cast<int>(p.cfg.sink), E);
  decode_detail::QFrag<D> qa;
  decode_detail::load_queries<D, G>(p.q_post + (static_cast<int64_t>(tok) * Hq + g * G) * D,
                                    p.scale * kLog2e, qa);
  const int lo[G] = {};
  const bool bf16 = p.cfg.ring_bf16;
  decode_detail::attend_keys<D, G, false>(
      smem, qa, p.block_tables + static_cast<int64_t>(s) * p.max_blocks_per_seq, p.k_cache,
      p.v_cache, Hkv, g, b, E, lo, [&](int h, int d, float o, float lse2) {
        const int hq = g * G + h;
        const int64_t row = (static_cast<int64_t>(slot) * M + pos % M) * Hq + hq;
        ring_store(p.ring.q, bf16, row * D + d,
                   p.q_pre[(static_cast<int64_t>(tok) * Hq + hq) * D + d]);
        ring_store(p.ring.o, bf16, row * D + d, o);
        if (d == 0) p.ring.lse[row] = lse2 * kLn2;
      });
}

// CTAs of the persistent partial kernel that fit on the device at once (its grid).
template <int D, int G>
int partial_grid() {
  static const int n = [] {
    const int sms = detail::device_sms();
    int per_sm = 1;
    // 96 KiB of ring at head_dim 128 (48 at 64) plus the task id: above the default limit
    cudaFuncSetAttribute(partial_kernel<D, G>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                         static_cast<int>(decode_detail::smem_bytes<D>()));
    // all of the unified L1 as shared memory, the most rings per SM (2 at D 128: 96 KiB each + 1
    // KiB)
    cudaFuncSetAttribute(partial_kernel<D, G>, cudaFuncAttributePreferredSharedMemoryCarveout,
                         cudaSharedmemCarveoutMaxShared);
    cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, partial_kernel<D, G>, kPartialThreads,
                                                  decode_detail::smem_bytes<D>());
    return sms * std::max(1, per_sm);
  }();
  return n;
}

template <int D, int G>
int launch_partial_kernel(const MacCudaParams& p, const WsLayout& w, cudaStream_t st) {
  static_assert(decode_detail::merge_floats<D, G>() * 4 <= decode_detail::smem_bytes<D>(),
                "merge area fits");
  const int resident = partial_grid<D, G>();  // also opts the kernel in to its shared memory
  const int64_t grid = std::min<int64_t>(w.max_tasks, resident);
  partial_kernel<D, G><<<static_cast<unsigned>(std::max<int64_t>(grid, 1)), kPartialThreads,
                         decode_detail::smem_bytes<D>(), st>>>(p, w);
  return detail::last_error();
}

template <int D, int G>
int launch_rows_kernel(const MacPrefillRowsParams& p, cudaStream_t st) {
  static const cudaError_t opt_in =  // 48 KiB of ring at head_dim 128: refused without opting in
      cudaFuncSetAttribute(prefill_rows_kernel<D, G>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                           static_cast<int>(decode_detail::smem_bytes<D>()));
  if (opt_in != cudaSuccess) return static_cast<int>(opt_in);
  const dim3 grid(static_cast<unsigned>(p.layout.num_kv_heads),
                  static_cast<unsigned>(p.num_tokens));
  prefill_rows_kernel<D, G><<<grid, kPartialThreads, decode_detail::smem_bytes<D>(), st>>>(p);
  return detail::last_error();
}

// The launchers declared in mac_common.cuh: the group size G picks the kernel.
template <int D>
int launch_partials(const MacCudaParams& p, const WsLayout& w, int G, cudaStream_t st) {
  return detail::with_group_size(G, static_cast<int>(cudaErrorInvalidValue), [&](auto g) {
    return launch_partial_kernel<D, decltype(g)::value>(p, w, st);
  });
}

template <int D>
int partial_slots(int G) {
  return detail::with_group_size(G, 1,
                                 [](auto g) { return partial_grid<D, decltype(g)::value>(); });
}

template <int D>
int launch_rows(const MacPrefillRowsParams& p, int G, cudaStream_t st) {
  return detail::with_group_size(G, static_cast<int>(cudaErrorInvalidValue), [&](auto g) {
    return launch_rows_kernel<D, decltype(g)::value>(p, st);
  });
}

}  // namespace macserve::kernels::cuda::mac_detail
