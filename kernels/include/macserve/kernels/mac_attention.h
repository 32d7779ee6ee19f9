// MAC-Attention (Match-Amend-Complete) decode and prefill-row kernels, CPU float32 reference.
// Semantics: ../shared/docs/mac-attention.md Part A (reference HEAD semantics with half-open
// intervals, invalid rows never win, per-request ring_valid_from gating).
//
// Per layer, per request slot s, per query head h, the ring holds for position x at row x mod M:
//   q_pre(x)                   the pre-RoPE query (after q_norm for Qwen3)
//   (o, lse)(x)                attention summary of q_post(x) over keys [min(F, E_x), E_x),
//                              E_x = max(x + 1 - r, 0); o normalised, lse natural log, -inf = empty
// A decode query at position m matches q_pre(m) against rows [max(valid_from, m - M), m) by squared
// L2; hit iff best d^2 < 2 D (1 - t)^2 (ties to the oldest position). On a hit with row p:
//   E_new = row(p) (+) AS([E_p, E_m));  out = E_new (+) AS([0, F)) (+) AS([E_m, m + 1))
// On a miss: E_new = AS([min(F, E_m), E_m)); out = exact attention. Row m := (q_pre(m), E_new).
#pragma once

#include "macserve/kernels/paged_kv.h"

namespace macserve::kernels {

struct MacConfig {
  float threshold = 0.45f;  // t, clamped to [0, 1]
  int64_t window = 512;     // M: ring rows per request and head
  int64_t band = 256;       // r >= 1
  int64_t gen_min = 2048;   // matching only when the context before the current token >= gen_min
  int64_t sink = 0;         // F: keys [0, F) are never stored, always recomputed
  bool ring_bf16 = true;    // ring q and o stored as bf16 (uint16), else float32
};

// One layer's ring: q and o are uint16 (bf16) or float per MacConfig::ring_bf16.
struct MacRing {
  void* q;     // [num_slots, M, Hq, D]
  void* o;     // [num_slots, M, Hq, D]
  float* lse;  // [num_slots, M, Hq]
  int64_t num_slots;
};

// One head's decision at one decode step.
struct MacHeadDecision {
  int8_t eligible;  // matching was allowed (context >= gen_min and a non-empty window)
  int8_t hit;
  int32_t matched;  // p, or -1
  float distance;   // best squared L2 among valid candidates (inf when none)
};

// Per sequence of the batch: 0 = exact attention (prefill chunk) plus ring rows, 1 = MAC decode
// (exactly one query token), 2 = plain: a sequence MAC cannot act on (no ring slot); the MAC
// kernels neither read nor write it, and the backend gives it the plain paged attention (bit for
// bit what
// --attention full computes on the CPU).
enum MacSeqMode : int8_t { kMacExact = 0, kMacDecode = 1, kMacPlain = 2 };

struct MacAttentionParams {
  const float* q_post;   // [num_tokens, Hq, D]
  const float* q_pre;    // [num_tokens, Hq, D]
  const float* k_cache;  // paged layout (paged_kv.h)
  const float* v_cache;
  float* out;                      // [num_tokens, Hq, D]
  const int32_t* query_start;      // [num_seqs + 1]
  const int32_t* context_lens;     // [num_seqs]
  const int32_t* block_tables;     // [num_seqs, max_blocks_per_seq]
  const int8_t* modes;             // [num_seqs] MacSeqMode
  const int32_t* ring_slots;       // [num_seqs] request slot of each sequence (-1: none)
  const int32_t* ring_valid_from;  // [num_seqs] first position whose row belongs to this request
  const int32_t* rows_from;        // [num_seqs] exact-mode tokens at positions >= this write rows
                                   // (and only the chunk's last M: earlier rows would be rewritten)
  int64_t num_seqs;
  int64_t max_blocks_per_seq;
  int64_t num_q_heads;
  float scale;
  PagedKvLayout layout;
  MacConfig cfg;
  MacRing ring;
  MacHeadDecision* decisions;  // [num_seqs, Hq] or nullptr; filled for decode sequences
  int64_t* kv_tokens_read;     // [num_seqs] or nullptr: K/V tokens read, summed over kv heads
};

namespace cpu {

// Exact attention of one query over keys [begin, end) of one kv head of a paged sequence.
// Writes the normalised output and the natural-log LSE; (0, -inf) when the range is empty.
void attn_range(const float* q, const float* k_cache, const float* v_cache,
                const int32_t* block_table, const PagedKvLayout& layout, int64_t kv_head,
                int64_t begin, int64_t end, float scale, float* o, float* lse);
// a := a (+) b  (log-sum-exp merge of two normalised summaries; -inf is the identity).
void merge_state(float* o_a, float* lse_a, const float* o_b, float lse_b, int64_t dim);
// a := full (-) part  (the summary of full's keys minus part's), with the reference's guards.
void downdate_state(float* o_full, float* lse_full, const float* o_part, float lse_part,
                    int64_t dim);

// Exact attention for kMacExact sequences (plus their ring rows at positions >= rows_from), MAC
// decode for kMacDecode sequences (match, amend, complete, ring write); kMacPlain sequences are
// left untouched (their output rows too).
void mac_attention(const MacAttentionParams& p);

}  // namespace cpu
}  // namespace macserve::kernels
