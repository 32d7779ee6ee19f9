// MAC-Attention decode on CUDA (../shared/docs/mac-attention.md Part A; same semantics as the CPU
// oracle kernels/cpu/mac_attention.cc). Every per-sequence input is a device array and every
// decision is taken on the device, so a step is a fixed sequence of launches with no host sync:
// CUDA-graph capturable for a fixed (num_seqs, workspace) bucket.
//
// One decode step (one query token per sequence: token s = sequence s, or token_index[s] in a
// mixed step where modes[] marks the decode sequences and the others are skipped), four launches:
//   1. mac_match      CTAs per (seq, q head), each over a share of the ring (several at small
//                     batch so the scan fills the GPU): nearest valid ring row among
//                     [max(valid_from, m - M), m) by squared L2 of q_pre (fp32 sums of bf16 rows,
//                     16-byte loads, 8 lanes per candidate, early exit once the first 64 dims'
//                     partial sum reaches the threshold: a lower bound, so decisions are
//                     unchanged), ties to the oldest position; each CTA writes its best (distance,
//                     position).
//   2. mac_schedule   one CTA: each head's decision from its match CTAs (hit iff
//                     d^2 < 2 D (1 - t)^2; E_p < F demotes) and its first needed key (E_p on a hit,
//                     min(F, E_m) on a miss); then per (seq, kv group) the key range its heads
//                     need, [min_h start_h, E_m) ("row part"), the sink [0, min(F, E_m)) and the
//                     tail [E_m, m + 1), cut into chunks (chunk_tokens, or adaptive); a task list
//                     sized by the real work (a hit group reads ~r + lag keys, a group with a miss
//                     the whole context), plus device telemetry counters.
//   3. mac_partial    persistent CTAs taking tasks from the list in run order (chunks of at least
//                     half the chunk size first): split-KV attention of the group's G query heads
//                     over one chunk through the full-attention decode kernel's page pipeline
//                     (4 warps, 3-stage cp.async ring per warp, one K/V load for the whole group,
//                     scores and P x V on the tensor cores), per-head mask j >= start_h in
//                     row-part chunks that a head's start falls inside; writes (o normalised, lse
//                     natural log) f32 to the chunk's slot.
//   4. mac_merge      one CTA per (seq, q head), one pass over the head's slots: row p's summary
//                     (hit) (+) row-part chunks -> ring row m (q_pre bf16/f32, o, lse), and that
//                     (+) the sink and tail chunks -> output.
// Inactive (padded) sequences, context_lens[s] <= 0, read and write nothing (output untouched).
// A sequence with ring_slots[s] < 0 gets exact attention and writes no row.
//
// Prefill rows (exact-mode sequences): mac_prefill_rows writes row(i) = AS(q_post(i),
// [min(F, E_i), E_i)) for the chunk's tokens at positions i >= rows_from[s] among its last M
// (masked attention over j <= i - r, no downdate). The chunk's attention output itself comes from
// the plain paged kernel. With sink 0 on shapes the Hopper prefill kernel covers, the rows come
// from that kernel (mac_prefill_rows_wgmma, attention.cuh: 128 rows a CTA, every K/V tile read once
// for them); otherwise one CTA per (KV group, token) walks the row's keys.
#pragma once

#include "macserve/kernels/mac_attention.h"
#include "macserve/kernels/paged_kv.h"

namespace macserve::kernels::cuda {

// Device telemetry, accumulated (atomics) over every launch until the owner zeroes it. Read with an
// async copy at the end of a step; no sync on the hot path.
struct MacCounters {
  unsigned long long heads;           // decode heads processed (active sequences x Hq)
  unsigned long long eligible_heads;  // heads allowed to match
  unsigned long long hit_heads;
  unsigned long long kv_tokens_read;  // K/V tokens read, a KV group's keys counted once
  unsigned long long kv_tokens_full;  // what full attention reads: context x Hkv
};

struct MacCudaParams {
  const float* q_post;  // [num_seqs, Hq, D] f32, post-RoPE (decode: token s = sequence s)
  const float* q_pre;   // [num_seqs, Hq, D] f32, pre-RoPE (after q_norm for Qwen3)
  const void* k_cache;  // bf16 paged layout (paged_kv.h), block size 16
  const void* v_cache;
  void* out;  // [num_seqs, Hq, D] bf16 (out_bf16) or f32
  bool out_bf16;
  const int32_t* context_lens;     // [num_seqs] device; m = context_len - 1; <= 0: inactive row
  const int32_t* block_tables;     // [num_seqs, max_blocks_per_seq] device
  const int32_t* ring_slots;       // [num_seqs] device; request slot, -1: no ring (exact, no row)
  const int32_t* ring_valid_from;  // [num_seqs] device
  int64_t num_seqs;
  int64_t max_blocks_per_seq;
  int64_t num_q_heads;
  float scale;
  PagedKvLayout layout;
  MacConfig cfg;
  MacRing ring;                // device memory, layout as kernels/mac_attention.h
  MacHeadDecision* decisions;  // [num_seqs, Hq] device, required (the merge reads it)
  int64_t* kv_tokens_read;     // [num_seqs] device or nullptr
  MacCounters* counters;       // device or nullptr
  // Split-KV chunk, a multiple of 16; 0: adaptive, chosen on the device each step from the work
  // the decisions left (at least 128 tokens): the ranges as long as the longest row part are cut
  // into equal pieces that fill a whole number of rounds of the resident partial CTAs, and long
  // chunks (>= C / 2) run before short ones. A fixed chunk keeps a sequence's partials independent
  // of its batch-mates (bitwise batch invariance).
  int32_t chunk_tokens = 0;
  // Mixed steps (chunked prefill + decodes in one batch): the token row of sequence s in q_post,
  // q_pre and out, and which sequences decode here (others read and write nothing; their
  // kv_tokens_read entry is context x Hkv, as on the CPU). Null: token s, every sequence decodes.
  const int32_t* token_index = nullptr;  // [num_seqs] device
  const int8_t* modes = nullptr;         // [num_seqs] device MacSeqMode
};

// Workspace of one step: a task list and the partial outputs, sized for the worst case of the
// bucket (every group missing at max_context_len).
struct MacWorkspace {
  void* base = nullptr;
  int64_t bytes = 0;
};
int64_t mac_workspace_bytes(int64_t num_seqs, int64_t num_q_heads, int64_t num_kv_heads,
                            int64_t head_dim, int64_t max_context_len, int32_t chunk_tokens);
// head_dim 32, 64 or 128; 1 to 8 query heads per KV head; KV blocks of 16 tokens.
bool mac_supported(int64_t head_dim, int64_t group, int64_t block_size);

// The four launches of a decode step (returns a cudaError_t value, 0 = ok). max_context_len bounds
// every context_lens[s] (it sizes the workspace).
int mac_decode(const MacCudaParams& p, const MacWorkspace& ws, int64_t max_context_len,
               Stream stream);

struct MacPrefillRowsParams {
  const float* q_post;  // [num_tokens, Hq, D]
  const float* q_pre;
  const void* k_cache;
  const void* v_cache;
  const int32_t* query_start;   // [num_seqs + 1] device
  const int32_t* context_lens;  // [num_seqs] device
  const int32_t* block_tables;
  const int32_t* ring_slots;  // [num_seqs] device (-1: no rows)
  const int32_t* rows_from;   // [num_seqs] device
  const int8_t* modes;        // [num_seqs] device MacSeqMode: rows only for kMacExact
  int64_t num_seqs;
  int64_t num_tokens;
  int64_t max_blocks_per_seq;
  int64_t num_q_heads;
  float scale;
  PagedKvLayout layout;
  MacConfig cfg;
  MacRing ring;
};
int mac_prefill_rows(const MacPrefillRowsParams& p, Stream stream);

// --mac-audit-rate on the device: for the token row query_start[s] of every kMacDecode sequence,
// sums[0] += sum (got - exact)^2 and sums[1] += sum exact^2 (f64 atomics: the sums of a step stay
// on the device until its one telemetry copy).
struct MacAuditParams {
  const float* got;            // [num_tokens, row_elems] MAC output
  const float* exact;          // [num_tokens, row_elems] exact attention
  const int32_t* query_start;  // [num_seqs + 1] device
  const int8_t* modes;         // [num_seqs] device MacSeqMode
  int64_t num_seqs;
  int64_t row_elems;  // Hq x D
  double* sums;       // [2] device
};
int mac_audit_accumulate(const MacAuditParams& p, Stream stream);

}  // namespace macserve::kernels::cuda
