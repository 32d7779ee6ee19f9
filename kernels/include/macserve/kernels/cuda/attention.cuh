// Paged causal attention on CUDA over the bf16 paged KV cache (paged_kv.h); q f32 (post-RoPE), out
// bf16 or f32. Same semantics as kernels/attention.h (cpu::paged_attention).
//
// Three kernels (and --deterministic's variant of the flash kernel):
//  - paged_attention_general: any step (prefill chunks, mixed batches, decode), any block size,
//    head_dim <= 256, any GQA group. One CTA per (token, kv head), K/V tiles through shared memory,
//    online softmax.
//  - paged_decode: one query per sequence (decode steps), block size 16, head_dim 64 or 128, group
//    size 1-8. Split-KV over a plan computed once per step (plan_decode), the group's q heads share
//    every K/V load, 16-byte cp.async loads into a per-warp 3-stage shared-memory pipeline; a
//    combine kernel merges the splits.
#pragma once

#include "macserve/kernels/paged_kv.h"

namespace macserve::kernels::cuda {

struct PagedAttentionCudaParams {
  const float* q;       // [num_tokens, num_q_heads, head_dim] f32
  const void* k_cache;  // paged layout, bf16
  const void* v_cache;
  void* out;                    // [num_tokens, num_q_heads, head_dim] bf16 (out_bf16) or f32
  const int32_t* query_start;   // [num_seqs + 1]
  const int32_t* context_lens;  // [num_seqs]
  const int32_t* block_tables;  // [num_seqs, max_blocks_per_seq]
  int64_t num_seqs;
  int64_t num_tokens;
  int64_t max_blocks_per_seq;
  int64_t num_q_heads;
  float scale;
  PagedKvLayout layout;
  bool out_bf16;
  // paged_prefill_flash, paged_attention_fixed and paged_decode: sequences with skip[s] == 1 are
  // not computed (their output rows are left as they are). MAC steps pass their modes
  // (kMacDecode == 1), so decode sequences go to MAC alone while exact and plain ones are computed
  // here. paged_attention_general ignores it.
  const int8_t* skip = nullptr;  // [num_seqs] device, or null
};

int paged_attention_general(const PagedAttentionCudaParams& p, Stream stream);

// Flash prefill on the tensor cores: any step (prefill chunks with prior context, mixed batches),
// head_dim 64 or 128, group size 1-8, block size a power of two. Tiles of 128 (query, q head) rows,
// bf16 operands with fp32 accumulation and an online softmax: K/V are read once per tile of
// queries. A row's result does not depend on the chunking or the rest of the batch (for a given
// model: which of the two kernels runs follows the shapes alone).
// - paged_prefill_flash_mma (paged_prefill_flash.cu): mma.sync, 32 or 64 keys a tile, any GPU.
// - paged_prefill_wgmma (paged_prefill_wgmma.cu): Hopper's wgmma with TMA page gathers and a
//   producer warpgroup, 128 keys a tile; block size >= 8 on an sm_90 device
//   (prefill_wgmma_supported).
// - paged_prefill_flash: the wgmma kernel where supported, else the mma.sync one.
bool prefill_flash_supported(int64_t head_dim, int64_t group, int64_t block_size);
bool prefill_wgmma_supported(int64_t head_dim, int64_t group, int64_t block_size);
int paged_prefill_flash(const PagedAttentionCudaParams& p, Stream stream);
int paged_prefill_flash_mma(const PagedAttentionCudaParams& p, Stream stream);
int paged_prefill_wgmma(const PagedAttentionCudaParams& p, Stream stream);

// MAC's ring rows of prefill chunks on the wgmma kernel (paged_prefill_wgmma.cu): what
// mac_prefill_rows computes (mac_attention_cuda.h), for sink 0 on the shapes
// prefill_wgmma_supported accepts; mac_prefill_rows dispatches here where this says yes.
struct MacPrefillRowsParams;
bool mac_prefill_rows_wgmma_supported(const MacPrefillRowsParams& p);
int mac_prefill_rows_wgmma(const MacPrefillRowsParams& p, Stream stream);

// --deterministic's attention for any step, on the flash kernel's tiles (same shapes supported):
// keys are cut into fixed segments of kFixedSegmentKeys at absolute positions, each segment's
// softmax state is computed alone and the states are folded in segment order, so a row's bits
// depend on its own query and keys only, whether it is one of a prefill chunk's rows (segments
// folded in the tile's CTA) or a one-query row (segments spread over CTAs, then combined). Every
// row is written, skip[] honoured. Every context_lens entry must fit its block-table row
// (<= max_blocks_per_seq * block_size). max_query_len: the step's longest query run (0: not
// known; 1 only when every sequence has one query, or the others' rows are left unwritten).
// workspace: fixed_attention_workspace_floats(p) floats, which follows num_tokens, num_seqs,
// num_q_heads, head_dim and max_blocks_per_seq only (fixed under a CUDA graph).
constexpr int kFixedSegmentKeys = 1024;
int64_t fixed_attention_workspace_floats(const PagedAttentionCudaParams& p);
int paged_attention_fixed(const PagedAttentionCudaParams& p, int64_t max_query_len,
                          float* workspace, Stream stream);

// Work partition of one decode step, shared by every layer.
struct DecodePlan {
  int num_splits = 1;       // KV splits per (sequence, kv head)
  int pages_per_split = 0;  // pages (blocks of 16 tokens) per split
  // Workspace floats needed when num_splits > 1: partial outputs and their log-sum-exp.
  int64_t workspace_floats = 0;
};

bool decode_supported(int64_t head_dim, int64_t group, int64_t block_size);
// max_context_len: longest context of the step. num_sms: the device's multiprocessor count.
DecodePlan plan_decode(const PagedAttentionCudaParams& p, int64_t max_context_len, int num_sms);
// workspace: >= plan.workspace_floats f32 (may be null when num_splits == 1). One query per
// sequence: token s is sequence s.
int paged_decode(const PagedAttentionCudaParams& p, const DecodePlan& plan, float* workspace,
                 Stream stream);

}  // namespace macserve::kernels::cuda
