// What the two prefill attention kernels share (not a public header): a CTA's tile of (query,
// q head) rows and the sequence it belongs to, and the base-2 exponential of the online softmax.
//
// A tile is 128 / G consecutive queries of one sequence times the G query heads of one KV head
// (GQA packing: every K/V tile read serves all G heads). Tiles are numbered sequence after
// sequence and the grid runs them last to first: a sequence's last tiles see the most keys, so the
// longest CTAs start first.
#pragma once

#include "../cuda_util.cuh"
#include "macserve/kernels/cuda/attention.cuh"

namespace macserve::kernels::cuda::detail {

__device__ __forceinline__ float fast_exp2(float x) {  // exp2(-inf) = 0
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

__device__ __forceinline__ int num_queries(const PagedAttentionCudaParams& p, int s) {
  return p.query_start[s + 1] - p.query_start[s];
}

struct TileRef {
  int seq, tile;
};

// The tile of this CTA (blockIdx.x counted from the grid's end), mq queries per tile. False when
// the CTA has none (the grid is an upper bound), when its sequence is skipped, or when the
// sequence has one query and `multi_query_only`.
__device__ __forceinline__ bool find_query_tile(const PagedAttentionCudaParams& p, int mq,
                                                bool multi_query_only, TileRef* ref) {
  int tile = static_cast<int>(gridDim.x) - 1 - static_cast<int>(blockIdx.x), s = 0;
  for (; s < p.num_seqs; ++s) {
    const int nt = (num_queries(p, s) + mq - 1) / mq;
    if (tile < nt) break;
    tile -= nt;
  }
  if (s >= p.num_seqs || (p.skip != nullptr && p.skip[s] == 1)) return false;
  if (multi_query_only && num_queries(p, s) == 1) return false;
  *ref = {s, tile};
  return true;
}

// Where a tile's rows are and which keys they see.
struct TileRows {
  int q0;          // the sequence's first query (token index)
  int t_begin;     // the tile's first query within the sequence
  int rows;        // (query, head) rows in use: (queries in the tile) * G
  int first_keys;  // keys the tile's first query sees (causal: its position + 1)
  int max_keys;    // keys its last query sees
};
__device__ __forceinline__ TileRows tile_rows(const PagedAttentionCudaParams& p, TileRef ref,
                                              int mq, int G) {
  const int q0 = p.query_start[ref.seq], nq = p.query_start[ref.seq + 1] - q0;
  const int t_begin = ref.tile * mq, t_end = min(nq, t_begin + mq);
  const int ctx = p.context_lens[ref.seq];
  return {q0, t_begin, (t_end - t_begin) * G, ctx - nq + t_begin + 1, ctx - nq + t_end};
}

}  // namespace macserve::kernels::cuda::detail
