// StepInputs: everything one model step needs, made explicit (no global "current batch"). The
// runner builds it from the scheduler's decision; layers never see a request or a sequence.
#pragma once

#include <cstdint>
#include <vector>

#include "macserve/backend/kv_cache_view.h"
#include "macserve/backend/step_arrays.h"
#include "macserve/core/tensor.h"
#include "macserve/kernels/mac_attention.h"
#include "macserve/kernels/paged_kv.h"

namespace macserve::models {

// MAC-Attention inputs of one step (mac-attention.md Part A). Per sequence: whether it decodes
// through MAC or runs exact attention, its ring slot, ring_valid_from, and from which position an
// exact (prefill) chunk writes ring rows.
struct MacStepInputs {
  bool enabled = false;  // attention goes through mac_attention
  kernels::MacConfig config;
  std::vector<int8_t> modes;             // [num_seqs] kernels::MacSeqMode
  std::vector<int32_t> ring_slots;       // [num_seqs]
  std::vector<int32_t> ring_valid_from;  // [num_seqs]
  std::vector<int32_t> rows_from;        // [num_seqs]
  bool audit = false;                    // also run exact attention; report rel. L2 per layer
};

struct StepInputs {
  std::vector<int32_t>
      token_ids;  // [num_tokens]: each sequence's new tokens, sequence after sequence
  std::vector<int32_t> positions;     // [num_tokens]
  std::vector<int64_t> slot_mapping;  // [num_tokens]: KV slot each token's K/V is written to
  std::vector<int32_t> query_start;   // [num_seqs + 1]
  std::vector<int32_t> context_lens;  // [num_seqs]: KV length after this step
  std::vector<int32_t> block_tables;  // [num_seqs, max_blocks_per_seq], padded with 0
  int64_t max_blocks_per_seq = 0;
  std::vector<int32_t> logits_rows;  // token rows whose logits are wanted (usually each seq's last)
  MacStepInputs mac;

  int64_t num_tokens() const { return static_cast<int64_t>(token_ids.size()); }
  int64_t num_seqs() const { return static_cast<int64_t>(context_lens.size()); }
};

// The KV cache view lives in the backend layer (the KV pool below the models owns it), and so does
// what a MAC step reports back (the StepExecutor unpacks it; Model::read_mac_outputs).
using backend::KvCacheView;
using backend::MacStepOutputs;

}  // namespace macserve::models
