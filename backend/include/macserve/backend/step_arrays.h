// StepArrays and MacStepOutputs: the host side of one model step as the backend layer sees it
// (models::StepInputs hands its arrays over as views; the StepExecutor uploads them and reports the
// MAC telemetry back).
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "macserve/kernels/mac_attention.h"

namespace macserve::backend {

// The host arrays of one step (models::StepInputs as views; the step is flat over tokens, each
// sequence contributing query_start[s + 1] - query_start[s] tokens).
struct StepArrays {
  std::span<const int32_t> token_ids;     // [num_tokens]
  std::span<const int32_t> positions;     // [num_tokens]
  std::span<const int64_t> slot_mapping;  // [num_tokens]: KV slot of each token (< 0: not written)
  std::span<const int32_t> query_start;   // [num_seqs + 1]
  std::span<const int32_t> context_lens;  // [num_seqs]: KV length after this step
  std::span<const int32_t> block_tables;  // [num_seqs, max_blocks_per_seq]
  int64_t max_blocks_per_seq = 0;
  std::span<const int32_t> logits_rows;  // [num_logits]: token rows whose logits are wanted
  // MAC-Attention (kernels/mac_attention.h); off: full attention.
  bool mac = false;
  bool mac_audit = false;  // also exact attention; error sums per layer
  kernels::MacConfig mac_config;
  std::span<const int8_t> mac_modes;             // [num_seqs] kernels::MacSeqMode
  std::span<const int32_t> mac_ring_slots;       // [num_seqs]
  std::span<const int32_t> mac_ring_valid_from;  // [num_seqs]
  std::span<const int32_t> mac_rows_from;        // [num_seqs]

  int64_t num_tokens() const { return static_cast<int64_t>(token_ids.size()); }
  int64_t num_seqs() const { return static_cast<int64_t>(context_lens.size()); }
};

// What a MAC step reports back (StepExecutor::read_mac_outputs after the step). Decisions are those
// of decode sequences (zero for exact ones); kv_tokens_read of an exact sequence is context x Hkv.
struct MacStepOutputs {
  std::vector<kernels::MacHeadDecision> decisions;  // [num_layers, num_seqs, num_q_heads]
  std::vector<int64_t> kv_tokens_read;              // [num_layers, num_seqs]
  std::vector<double> audit_err_sq;  // [num_layers]: sum |mac - exact|^2 (decode rows)
  std::vector<double> audit_ref_sq;  // [num_layers]: sum |exact|^2
};

}  // namespace macserve::backend
