// MAC-Attention on CUDA, the host side of mac_attention_cuda.h: the step's workspace layout, the
// plan of a decode step (chunking mode, match splits) and its four launches in order (mac_match.cu,
// mac_schedule.cu, mac_partial.cuh, mac_merge.cu; see mac_common.cuh), and the prefill rows.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "../cuda_util.cuh"
#include "mac_common.cuh"
#include "macserve/kernels/cuda/attention.cuh"
#include "macserve/kernels/cuda/mac_attention_cuda.h"
#include "macserve/kernels/cuda/mac_force_hits_cuda.h"

namespace macserve::kernels::cuda {
namespace {

using namespace mac_detail;

inline int64_t align256(int64_t x) { return (x + 255) / 256 * 256; }

// Tasks of a step: with a fixed chunk, every group's three ranges in chunks. Adaptive (chunk 0):
// work / C < 2 x rounds x slots <= 16 x slots (C >= longest / pieces and work / longest <
// n_long + 1; C is also raised so that work / C <= 2 x rounds x slots whatever the longest), plus
// at most two partial chunks per range, three ranges per group.
int64_t max_tasks_for(int64_t S, int64_t Hkv, int64_t max_ctx, int32_t chunk, int32_t slots) {
  if (chunk <= 0) return 16LL * slots + 6 * S * Hkv + 1;
  return S * Hkv * ((max_ctx + chunk - 1) / chunk + 3);
}

WsLayout layout_ws(void* base, int64_t S, int64_t Hq, int64_t Hkv, int64_t D, int64_t max_ctx,
                   int32_t chunk, int32_t slots) {
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
  w.match_best = reinterpret_cast<unsigned long long*>(
      take(S * Hq * kMaxMatchSplits * sizeof(unsigned long long)));
  w.groups = reinterpret_cast<GroupInfo*>(take(S * Hkv * sizeof(GroupInfo)));
  w.group_reads = reinterpret_cast<int64_t*>(take(S * Hkv * sizeof(int64_t)));
  w.head_start = reinterpret_cast<int32_t*>(take(S * Hq * sizeof(int32_t)));
  w.tasks = reinterpret_cast<int4*>(take(w.max_tasks * sizeof(int4)));
  w.part_o = reinterpret_cast<float*>(take(w.max_tasks * G * D * sizeof(float)));
  w.part_lse = reinterpret_cast<float*>(take(w.max_tasks * G * sizeof(float)));
  w.bytes = off;
  return w;
}

// CTAs of the persistent partial kernel resident on the current device at once (its grid), for
// this head_dim and group size (the cp.async ring in shared memory bounds it); 1 if unsupported.
int partial_slots_for(int64_t head_dim, int64_t group) {
  const int G = static_cast<int>(group);
  return with_head_dim(head_dim, 1, [&](auto d) { return partial_slots<decltype(d)::value>(G); });
}

// The four launches of a decode step; force: the benchmark hook's forced decisions, or null
// (production).
int decode_step(const MacCudaParams& p, const MacForceHits* force, const MacWorkspace& ws,
                int64_t max_context_len, Stream stream) {
  if (p.num_seqs == 0) return 0;
  const auto st = detail::as_stream(stream);
  const int64_t Hq = p.num_q_heads, Hkv = p.layout.num_kv_heads, D = p.layout.head_dim;
  const int G = static_cast<int>(Hq / Hkv);
  if (!mac_supported(D, G, p.layout.block_size) || p.chunk_tokens < 0 || p.chunk_tokens % 16 != 0)
    return static_cast<int>(cudaErrorInvalidValue);
  const int32_t slots = p.chunk_tokens > 0 ? 0 : partial_slots_for(D, G);
  WsLayout w = layout_ws(ws.base, p.num_seqs, Hq, Hkv, D, max_context_len, p.chunk_tokens, slots);
  if (w.bytes > ws.bytes) return static_cast<int>(cudaErrorInvalidValue);
  w.match_splits = match_splits_for(p);
  if (const int rc = launch_match(p, w, st); rc != 0) return rc;
  if (const int rc = launch_schedule(p, w, force, st); rc != 0) return rc;
  const int rc = with_head_dim(D, static_cast<int>(cudaErrorInvalidValue), [&](auto d) {
    return launch_partials<decltype(d)::value>(p, w, G, st);
  });
  if (rc != 0) return rc;
  return launch_merge(p, w, st);
}

}  // namespace

bool mac_supported(int64_t head_dim, int64_t group, int64_t block_size) {
  return (head_dim == 32 || head_dim == 64 || head_dim == 128) && group >= 1 && group <= 8 &&
         block_size == 16;
}

int64_t mac_workspace_bytes(int64_t num_seqs, int64_t num_q_heads, int64_t num_kv_heads,
                            int64_t head_dim, int64_t max_context_len, int32_t chunk_tokens) {
  const int64_t G = num_q_heads / std::max<int64_t>(num_kv_heads, 1);
  const int32_t slots = chunk_tokens > 0 ? 0 : partial_slots_for(head_dim, G);
  return layout_ws(nullptr, num_seqs, num_q_heads, num_kv_heads, head_dim, max_context_len,
                   chunk_tokens, slots)
      .bytes;
}

int mac_decode(const MacCudaParams& p, const MacWorkspace& ws, int64_t max_context_len,
               Stream stream) {
  return decode_step(p, nullptr, ws, max_context_len, stream);
}

int mac_decode_forced_hits(const MacCudaParams& p, const MacForceHits& force,
                           const MacWorkspace& ws, int64_t max_context_len, Stream stream) {
  return decode_step(p, &force, ws, max_context_len, stream);
}

int mac_prefill_rows(const MacPrefillRowsParams& p, Stream stream) {
  if (p.num_tokens == 0 || p.num_seqs == 0) return 0;
  const auto st = detail::as_stream(stream);
  const int64_t D = p.layout.head_dim;
  const int G = static_cast<int>(p.num_q_heads / p.layout.num_kv_heads);
  if (mac_prefill_rows_wgmma_supported(p)) return mac_prefill_rows_wgmma(p, stream);
  if (!mac_supported(D, G, p.layout.block_size)) return static_cast<int>(cudaErrorInvalidValue);
  return with_head_dim(D, static_cast<int>(cudaErrorInvalidValue),
                       [&](auto d) { return launch_rows<decltype(d)::value>(p, G, st); });
}

}  // namespace macserve::kernels::cuda
