// --deterministic's attention on fixed key segments (not a public header): the fold of a segment's
// state into a row's running one, the scratch both prefill kernels keep the states in, and the
// Hopper kernel's entry for the segment passes (paged_prefill_wgmma.cu). paged_attention_fixed
// (paged_prefill_flash.cu) runs the passes on one kernel or the other and folds one-query rows'
// saved segments in its combine kernel; a row's bits depend on which kernel the device runs, never
// on the batch, its place in it, or the chunking.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "macserve/kernels/cuda/attention.cuh"
#include "prefill_tiles.cuh"

namespace macserve::kernels::cuda::detail {

// The fold of a segment's state (m_seg, l_seg, o_seg) into a row's running one: the weights of
// both, the running max and sum updated. Explicit roundings, so that the kernels' fold and the
// combine kernel compile to the same arithmetic.
struct FoldWeights {
  float run, seg;
};
__device__ __forceinline__ FoldWeights fold_weights(float& m_run, float& l_run, float m_seg,
                                                    float l_seg) {
  const float mx = fmaxf(m_run, m_seg);
  const FoldWeights w{fast_exp2(__fsub_rn(m_run, mx)), fast_exp2(__fsub_rn(m_seg, mx))};
  m_run = mx;
  l_run = __fmaf_rn(l_run, w.run, __fmul_rn(l_seg, w.seg));
  return w;
}
__device__ __forceinline__ float fold_value(float run, float seg, FoldWeights w) {
  return __fmaf_rn(run, w.run, __fmul_rn(seg, w.seg));
}

// The scratch: the running output of rows of sequences with more than one query (folded as they
// go), the saved segments of one-query rows (folded by the combine kernel).
struct FixedArgs {
  float* fold_o = nullptr;   // [num_tokens, num_q_heads, head_dim]
  float* fold_ml = nullptr;  // [num_tokens, num_q_heads, 2]: running max, sum
  float* part_o = nullptr;   // [num_seqs, num_q_heads, max_segments, head_dim]
  float* part_ml = nullptr;  // [num_seqs, num_q_heads, max_segments, 2]: max, sum
  int max_segments = 0;
};

// Segment slots of a step's one-query rows: about 2048 CTAs over sequences x kv heads, a slot
// taking every z-th segment. The grid follows only the step's shape (fixed under a CUDA graph).
inline int64_t fixed_segment_slots(const PagedAttentionCudaParams& p, const FixedArgs& f) {
  const int64_t per_slot = p.num_seqs * p.layout.num_kv_heads;
  return std::clamp<int64_t>((2048 + per_slot - 1) / per_slot, 1, f.max_segments);
}

// The segment passes on the Hopper kernel (prefill_wgmma_supported must hold): rows of sequences
// with more than one query folded in their CTA (unless max_query_len is 1), one-query rows' segment
// states saved for the combine kernel.
int fixed_segments_wgmma(const PagedAttentionCudaParams& p, int64_t max_query_len,
                         const FixedArgs& f, cudaStream_t st);

}  // namespace macserve::kernels::cuda::detail
