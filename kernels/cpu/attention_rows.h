// Blocked float32 attention over one kv head for a set of query rows, each with its own key range:
// the loop behind the CPU paged attention kernel and MAC (prefill outputs and direct ring rows,
// decode). Keys are cut into segments of kKeySegment aligned at key 0, and segments into blocks of
// kKeyBlock. Within a segment each row updates its online softmax once per block (block max, one
// rescale, then the block's weights in key order) from a fresh state; the segments' states are then
// folded in segment order. A row's operations depend only on its query and its key range, never on
// the rows computed with it or on how segments were spread over threads: prefill chunks of any size
// and decode batches of any size give bit-identical rows. All rows of a call read each key block
// while it sits in L1.
#pragma once

#include <cstdint>
#include <vector>

#include "macserve/kernels/paged_kv.h"

namespace macserve::kernels::cpu::detail {

constexpr int64_t kKeyBlock = 32;
constexpr int64_t kKeySegment = 256;  // a multiple of kKeyBlock
// Query tokens per call in the kernels that use attend_rows (times the q heads of one kv head).
constexpr int64_t kQueryTile = 16;

struct AttentionRow {
  const float* q;  // D floats (post-RoPE)
  float* out;      // D floats: the normalised output, zeros for an empty range
  float* lse;      // natural-log sum of exp of the scores (-inf when empty), or null
  int64_t begin;   // keys [begin, end)
  int64_t end;
  // Optionally also the state over the prefix [begin, prefix_end), prefix_end <= end, taken on the
  // way (bit for bit what a row [begin, prefix_end) of its own gives, at the cost of at most one
  // partial key block): MAC's direct ring row of a prefill token is its output row's prefix.
  float* prefix_out = nullptr;
  float* prefix_lse = nullptr;
  int64_t prefix_end = 0;
};

// block_table maps key j to cache slot block_table[j / block_size] * block_size + j % block_size.
// scratch: the calling thread's (grown as needed).
void attend_rows(const float* k_cache, const float* v_cache, const int32_t* block_table,
                 const PagedKvLayout& layout, int64_t kv_head, float scale,
                 std::vector<AttentionRow>& rows, std::vector<float>& scratch);

// Rows over one kv head of one sequence.
struct RowGroup {
  const int32_t* block_table;
  int64_t kv_head;
  std::vector<AttentionRow> rows;
};

// attend_rows for every group on the OpenMP threads. With fewer groups than 4 per thread (a small
// decode batch), long key ranges are spread over the threads by segments (a group's keys are still
// read once for all its rows); the bits are attend_rows'.
void attend_groups(const float* k_cache, const float* v_cache, const PagedKvLayout& layout,
                   float scale, std::vector<RowGroup>& groups);

}  // namespace macserve::kernels::cpu::detail
